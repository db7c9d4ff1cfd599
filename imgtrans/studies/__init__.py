"""The `study` command: Optuna studies over any run kind, tracked in MLflow."""
