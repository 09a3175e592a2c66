"""Stage 3, the model of q(applicant, program): labels, features, the gradient-boosted model and
its calibration, the list-level P(match) correction, baselines, and saving a model."""
