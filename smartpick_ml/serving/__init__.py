"""Stage 6, the served model: the MLflow pyfunc behind ``mlflow models serve`` and the set-up of
a server worker."""
