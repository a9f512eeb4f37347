"""`mlcycle serve`: a model server for MLflow models speaking MLflow's scoring protocol and
the Open Inference Protocol v2, with signature validation, micro-batching and metrics."""
