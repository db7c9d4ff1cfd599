"""MLflow, and nothing else imports it: runs by explicit id (`tracker`), the store's experiments, lookups and
dead runs (`store`), logged and registered models (`models`, `generator_model`), datasets as run inputs
(`datasets`)."""
