"""The team stack: a PostgreSQL database and an MLflow tracking server that many machines share."""
