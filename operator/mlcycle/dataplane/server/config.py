"""How a model server is configured: CLI flags become one typed object (and, for worker
processes, one JSON environment variable)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlcycle.dataplane.server.metrics import DEFAULT_PREDICTION_BUCKETS

CONFIG_ENV = "MLCYCLE_SERVE_CONFIG"


class ServerConfig(BaseModel):
    model_uri: str = Field(
        description="models:/name/version, models:/name@alias, runs:/, s3://, "
        "mlflow-artifacts:/ or a local directory holding an MLmodel file."
    )
    model_name: str | None = Field(
        default=None, description="Name served and used in metrics labels (default: from URI)."
    )
    model_version: str | None = Field(
        default=None, description="Version label (default: the registry version, if any)."
    )
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int | None = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol over gRPC, on the same host (8081 as "
        "in KServe and MLServer); None serves HTTP only.",
    )
    workers: int = Field(default=1, ge=1, description="Processes sharing the port.")
    max_batch_size: int = Field(default=64, ge=1, description="Rows per predict call at most.")
    max_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="How long a partial batch may wait for more requests; 0 batches only what "
        "arrived in the same event-loop turn, adding no latency.",
    )
    row_independent: bool | None = Field(
        default=None,
        description="Whether each output row depends on its input row alone, so concurrent "
        "requests may be merged into one predict call. Unset: known for the scikit-learn, "
        "xgboost, lightgbm and onnx flavors; any other model gets one predict per request.",
    )
    predict_threads: int = Field(
        default=1,
        ge=1,
        description="Predicts running at once, each in a worker thread off the event loop; "
        "more only for thread-safe models that release the GIL.",
    )
    inline_predict_ms: float = Field(
        default=1.0,
        ge=0,
        description="A native flavor's predict measured to take less than this runs on the "
        "event loop (a thread hop would cost more); 0 runs every predict in the thread. "
        "pyfunc models always run in the thread.",
    )
    request_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a request may wait for its prediction before a 504 (MLflow's "
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, 60 s by default, is the model for this).",
    )
    max_request_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1,
        description="Largest request body accepted; a larger one is answered 413 unread.",
    )
    force_pyfunc: bool = Field(default=False, description="Skip native flavors; load as pyfunc.")
    graceful_shutdown_seconds: float = Field(
        default=30.0, gt=0, description="On SIGTERM, how long in-flight requests may finish."
    )
    load_retry_max_seconds: float = Field(
        default=60.0, gt=0, description="Ceiling of the backoff between model load attempts."
    )
    keep_alive_seconds: float = Field(
        default=75.0,
        gt=0,
        description="Idle keep-alive; above a pooling proxy's own idle timeout, so the proxy "
        "never reuses a connection the server is closing.",
    )
    prediction_buckets: tuple[float, ...] = DEFAULT_PREDICTION_BUCKETS
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
