"""The model server as a raw ASGI application: no framework between uvicorn and predict.

The server is live as soon as it listens; the model loads in a background thread (retried
with backoff), and until it has loaded, readiness (/v2/health/ready, /ping, /health) and
inference answer 503 with the reason.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from mlcycle.api.redaction import redact_text
from mlcycle.dataplane.server.batching import MicroBatcher, PredictionError, loop_scheduler
from mlcycle.dataplane.server.config import ServerConfig
from mlcycle.dataplane.server.encoding import dumps
from mlcycle.dataplane.server.flavors import LoadedModel, load_model_dir
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.metrics import ServerMetrics
from mlcycle.dataplane.server.oip import encode_oip_infer, oip_error, parse_oip_infer
from mlcycle.dataplane.server.scoring import encode_invocations, mlflow_error, parse_invocations
from mlcycle.dataplane.server.signature import RequestError, signature_as_json
from mlcycle.dataplane.server.source import (
    ModelIdentity,
    local_model_dir,
    provisional_identity,
    resolve_source,
)

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Response = tuple[int, bytes, bytes]  # status, body, content type

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
MAX_REASON_CHARS = 1000
PROTOCOL_MLFLOW = "mlflow"
PROTOCOL_V2 = "v2"
MODELS_PREFIX = "/v2/models/"


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def server_error(path: str, error: BaseException) -> str:
    """What a 500 tells the client: the error's class and an id to find it in the log.

    The exception's text (a model's, MLflow's, an artifact store's) may quote a URL with
    credentials or a key: it is logged, redacted, under the id, and never answered.
    """
    error_id = uuid.uuid4().hex[:16]
    cause = error.cause if isinstance(error, PredictionError) else error
    logged = "".join(traceback.format_exception(cause))
    logger.error(
        "request to %s failed (error id %s): %s", path, error_id, redact_text(logged, None)
    )
    what = "prediction failed" if isinstance(error, PredictionError) else "internal error"
    return f"{what} ({type(cause).__name__}); error id {error_id} in the server log"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


class ModelServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.identity: ModelIdentity = provisional_identity(
            config.model_uri, config.model_name, config.model_version
        )
        self.metrics = ServerMetrics(self.identity, config.prediction_buckets)
        self.model: LoadedModel | None = None
        self.batcher: MicroBatcher | None = None
        self.not_ready_reason = "model is loading"
        self._output_names: tuple[str, ...] = ()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exact_routes: dict[str, Callable[[Scope, Receive], Awaitable[Response]]] = {
            "/invocations": self._invocations,
            "/ping": self._ping,
            "/health": self._ping,
            "/v2/health/live": self._live,
            "/v2/health/ready": self._ready,
            "/v2": self._server_metadata,
            "/metrics": self._metrics,
        }

    # --- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        route = self._exact_routes.get(path)
        protocol = PROTOCOL_MLFLOW if path == "/invocations" else ""
        if path.startswith(MODELS_PREFIX) and path.endswith("/infer"):
            protocol = PROTOCOL_V2
        try:
            if route is not None:
                status, body, content_type = await route(scope, receive)
            elif path.startswith(MODELS_PREFIX):
                status, body, content_type = await self._models_route(scope, receive)
            else:
                status, body, content_type = 404, oip_error(f"no route {path}"), JSON
        except Exception as error:  # e.g. an output that cannot be encoded: answered and counted
            status, body, content_type = 500, oip_error(server_error(path, error)), JSON
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if protocol:  # inference only: probes and scrapes would drown the request figures
            self.metrics.observe_request(protocol, status, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._stopping.set()
                if self.metrics.multiprocess_dir is not None:
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                        os.getpid(), self.metrics.multiprocess_dir
                    )
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- model loading -------------------------------------------------------------------

    def start_loading(self) -> None:
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._load_until_loaded, name="model-loader", daemon=True).start()

    def _load_until_loaded(self) -> None:
        delay = 1.0
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            started = time.perf_counter()
            try:
                source = resolve_source(
                    self.config.model_uri, self.config.model_name, self.config.model_version
                )
                if source.identity != self.identity:
                    self.identity = source.identity
                    self.metrics.identify(source.identity)
                model = load_model_dir(local_model_dir(source), self.config.force_pyfunc)
            except Exception as error:
                # Readiness answers carry the reason: MLflow's and the artifact stores'
                # messages quote the URL they called, userinfo and signatures included.
                detail = f"{type(error).__name__}: {error}"
                self.not_ready_reason = redact_text(
                    f"model {self.config.model_uri!r} could not be loaded "
                    f"(attempt {attempt}, retrying in {delay:.0f}s): {detail}",
                    MAX_REASON_CHARS,
                )
                logger.warning("%s", self.not_ready_reason)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.config.load_retry_max_seconds)
                continue
            self.metrics.load_seconds.set(time.perf_counter() - started)
            # The model and the libraries it pulled in (mlflow, pandas, sklearn: ~250k
            # objects) live as long as the process. Frozen, they are skipped by the
            # collector's full passes, which otherwise pause serving for 100+ ms.
            gc.collect()
            gc.freeze()
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self.serve_model, model)
            logger.info(
                "model %s version %s loaded (%s flavor) in %.2fs",
                self.identity.name,
                self.identity.version or "-",
                model.flavor,
                time.perf_counter() - started,
            )
            return

    def serve_model(self, model: LoadedModel) -> None:
        """Make a loaded model the one served (on the event loop's thread)."""
        output_names = model.signature.output_names()

        def observe(rows: int, output: Any) -> None:
            self.metrics.observe_batch(rows, output, model.is_classifier, output_names)

        self.batcher = MicroBatcher(
            model.predict,
            loop_scheduler(asyncio.get_running_loop()),
            max_batch_size=self.config.max_batch_size,
            max_wait_seconds=self.config.max_batch_wait_ms / 1000,
            observe=observe,
        )
        self._output_names = output_names
        self.model = model

    # --- inference -----------------------------------------------------------------------

    async def infer(self, model: LoadedModel, inference: Inference) -> Any:
        """The model's output for one request, whichever protocol carried it.

        Raises RequestError (the caller's mistake: 4xx) or PredictionError (the model's: 500).
        """
        if inference.rows == 0:
            raise RequestError("", "no rows to predict")
        if inference.params and model.accepts_params:
            # Requests with their own params cannot share a predict call with others.
            try:
                output = model.predict(inference.model_input, params=inference.params)
            except Exception as error:
                raise PredictionError(error) from error
            self.metrics.observe_batch(
                inference.rows, output, model.is_classifier, self._output_names
            )
            return output
        assert self.batcher is not None
        return await self.batcher.predict(inference.model_input, inference.rows)

    async def _invocations(self, scope: Scope, receive: Receive) -> Response:
        if scope["method"] != "POST":
            return 405, mlflow_error("use POST", "BAD_REQUEST"), JSON
        body = await _read_body(receive)
        model = self.model
        if model is None:
            return 503, mlflow_error(self.not_ready_reason, "TEMPORARILY_UNAVAILABLE"), JSON
        try:
            inference = parse_invocations(body, _header(scope, b"content-type"), model.validator)
            output = await self.infer(model, inference)
            return 200, encode_invocations(output), JSON
        except RequestError as error:
            return 400, mlflow_error(str(error), "BAD_REQUEST"), JSON
        except PredictionError as error:
            return 500, mlflow_error(server_error(scope["path"], error), "INTERNAL_ERROR"), JSON

    async def _models_route(self, scope: Scope, receive: Receive) -> Response:
        parts = scope["path"][len(MODELS_PREFIX) :].rstrip("/").split("/")
        name, rest = parts[0], parts[1:]
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        if action not in ("", "ready", "infer"):
            return 404, oip_error(f"no route {scope['path']}"), JSON
        if name != self.identity.name or (version and version != self.identity.version):
            served = self.identity.name + (
                f" version {self.identity.version}" if self.identity.version else ""
            )
            missing = name + (f" version {version}" if version else "")
            return 404, oip_error(f"model {missing} not found; this server serves {served}"), JSON
        if action == "infer":
            return await self._oip_infer(scope, receive)
        if action == "ready":
            ready = self.model is not None
            document: dict[str, Any] = {"name": name, "ready": ready}
            if not ready:
                document["reason"] = self.not_ready_reason
            return (200 if ready else 503), dumps(document), JSON
        return self._model_metadata()

    async def _oip_infer(self, scope: Scope, receive: Receive) -> Response:
        if scope["method"] != "POST":
            return 405, oip_error("use POST"), JSON
        body = await _read_body(receive)
        model = self.model
        if model is None:
            return 503, oip_error(self.not_ready_reason), JSON
        try:
            inference = parse_oip_infer(body, model.validator)
            output = await self.infer(model, inference)
            return 200, encode_oip_infer(output, self.identity, inference, self._output_names), JSON
        except RequestError as error:
            return 400, oip_error(str(error)), JSON
        except PredictionError as error:
            return 500, oip_error(server_error(scope["path"], error)), JSON

    # --- health and metadata -------------------------------------------------------------

    def _not_ready(self) -> Response:
        return 503, dumps({"ready": False, "reason": self.not_ready_reason}), JSON

    async def _ping(self, scope: Scope, receive: Receive) -> Response:
        return (200, b"\n", TEXT) if self.model is not None else self._not_ready()

    async def _live(self, scope: Scope, receive: Receive) -> Response:
        return 200, b'{"live":true}', JSON

    async def _ready(self, scope: Scope, receive: Receive) -> Response:
        return (200, b'{"ready":true}', JSON) if self.model is not None else self._not_ready()

    async def _server_metadata(self, scope: Scope, receive: Receive) -> Response:
        document = {"name": "mlcycle", "version": metadata.version("mlcycle"), "extensions": []}
        return 200, dumps(document), JSON

    def _model_metadata(self) -> Response:
        model = self.model
        if model is None:
            return self._not_ready()
        document = {
            "name": self.identity.name,
            "versions": [self.identity.version] if self.identity.version else [],
            "platform": f"mlflow_{model.flavor}",
            **signature_as_json(model.signature),
        }
        return 200, dumps(document), JSON

    async def _metrics(self, scope: Scope, receive: Receive) -> Response:
        return 200, self.metrics.exposition(), self.metrics.content_type.encode()
