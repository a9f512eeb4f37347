"""The local stack used by tests and the demo: a real control plane, a node agent, MLflow, S3."""
