"""Stage 5, answering an applicant: the checked request, the loaded predictor, the compiled fast
path, explanations and the application-list planner."""
