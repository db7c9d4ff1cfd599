"""The `evaluate` and `compare` commands: a run's test metrics, and the report across runs."""
