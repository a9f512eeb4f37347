"""The only modules that talk to the outside world: Kubernetes, MLflow, S3, Prometheus."""
