"""Stage 4, a training run: named steps from the run's data to a registered model, its evaluation
against baselines and the oracle, the run report, and MLflow tracking."""
