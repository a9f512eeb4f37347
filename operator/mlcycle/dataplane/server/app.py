"""The model server as a raw ASGI application: no framework between uvicorn and predict.

The server is live as soon as it listens; the model loads in a background thread (retried
with backoff), and until it has loaded, readiness (/v2/health/ready, /ping, /health) and
inference answer 503 with the reason. With several worker processes, a worker is ready
only once every worker has loaded, so no request after readiness meets a loading worker.

Predictions run in worker threads (batching.py); the event loop only parses, routes and
encodes, so probes and /metrics answer within milliseconds during the slowest predict.
What a client gets wrong is a 4xx, never a 500: 400 for input that does not fit, 405
with `Allow`, 413 for a body over `max_request_bytes` (refused unread), 415 for a content
type the protocol does not have; 504 when the prediction outlasts `request_timeout_seconds`.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mlcycle.api.redaction import redact_text
from mlcycle.dataplane.server.batching import (
    MicroBatcher,
    PredictionError,
    PredictionTimeoutError,
    loop_scheduler,
)
from mlcycle.dataplane.server.config import ServerConfig
from mlcycle.dataplane.server.encoding import dumps
from mlcycle.dataplane.server.flavors import PYFUNC, LoadedModel, load_model_dir
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.metrics import ServerMetrics
from mlcycle.dataplane.server.oip import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    encode_oip_infer,
    model_metadata,
    oip_error,
    oip_output_names,
    parse_oip_infer,
    server_metadata,
)
from mlcycle.dataplane.server.predict_cost import PredictCost
from mlcycle.dataplane.server.readiness import WorkerReadiness
from mlcycle.dataplane.server.scoring import encode_invocations, mlflow_error, parse_invocations
from mlcycle.dataplane.server.source import (
    ModelIdentity,
    local_model_dir,
    provisional_identity,
    resolve_source,
)
from mlcycle.dataplane.server.validation import RequestError

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


class RequestTooLargeError(Exception):
    """The body is larger than the server accepts: answered 413."""


JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
MAX_REASON_CHARS = 1000
PROTOCOL_MLFLOW = "mlflow"
PROTOCOL_V2 = "v2"
MODELS_PREFIX = "/v2/models/"


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"request body of {declared} bytes is over the {limit} accepted")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # chunked: no length to check up front
            raise RequestTooLargeError(f"request body is over the {limit} bytes accepted")
        chunks.append(chunk)
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
        self.workers = WorkerReadiness.from_environment()
        self._executor = ThreadPoolExecutor(config.predict_threads, thread_name_prefix="predict")
        self._output_names: tuple[str, ...] = ()
        self.oip_output_names: tuple[str, ...] = ()
        """Output names as OIP metadata announces them, so infer answers with the same."""
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
                response = await route(scope, receive)
            elif path.startswith(MODELS_PREFIX):
                response = await self._models_route(scope, receive)
            else:
                response = Response(404, oip_error(f"no route {path}"), JSON)
        except RequestTooLargeError as error:
            response = _error(protocol, 413, str(error), "RESOURCE_EXHAUSTED")
        except Exception as error:  # e.g. an output that cannot be encoded: answered and counted
            response = Response(500, oip_error(server_error(path, error)), JSON)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(response.body)).encode()),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        if protocol:  # inference only: probes and scrapes would drown the request figures
            self.metrics.observe_request(protocol, response.status, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        stop_grpc: Callable[[], Awaitable[None]] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                if self.config.grpc_port is not None:
                    from mlcycle.dataplane.server.grpc_servicer import start_grpc

                    stop_grpc = await start_grpc(self)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._stopping.set()
                self.workers.forget()
                if stop_grpc is not None:  # its calls in flight finish, as HTTP's just did
                    await stop_grpc()
                # Requests in flight have been answered by now (uvicorn drains them first).
                self._executor.shutdown(wait=False, cancel_futures=True)
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
            self.workers.loaded()
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

        loop = asyncio.get_running_loop()

        def run(job: Callable[[], Any]) -> Awaitable[Any]:
            return loop.run_in_executor(self._executor, job)

        merge = self.config.row_independent
        self.batcher = MicroBatcher(
            model.predict,
            loop_scheduler(loop),
            run,
            merge=model.row_independent if merge is None else merge,
            max_batch_size=self.config.max_batch_size,
            max_wait_seconds=self.config.max_batch_wait_ms / 1000,
            concurrency=self.config.predict_threads,
            observe=observe,
            # User code may block for any time: only the native flavors may run inline.
            inline=None
            if model.flavor == PYFUNC
            else PredictCost(self.config.inline_predict_ms / 1000),
        )
        self._output_names = output_names
        self.oip_output_names = oip_output_names(model.signature)
        self.model = model

    # --- inference -----------------------------------------------------------------------

    async def infer(self, model: LoadedModel, inference: Inference) -> Any:
        """The model's output for one request, whichever protocol carried it.

        Raises RequestError (the caller's mistake: 4xx) or PredictionError (the model's: 500).
        """
        if inference.rows == 0:
            raise RequestError("", "no rows to predict")
        params = inference.params if inference.params and model.accepts_params else None
        assert self.batcher is not None
        return await self.batcher.predict(
            inference.model_input, inference.rows, params, self.config.request_timeout_seconds
        )

    async def _invocations(self, scope: Scope, receive: Receive) -> Response:
        if scope["method"] != "POST":
            return _method_not_allowed(PROTOCOL_MLFLOW)
        body = await _read_body(scope, receive, self.config.max_request_bytes)
        model = self.model
        if model is None:
            return _error(PROTOCOL_MLFLOW, 503, self.not_ready_reason, "TEMPORARILY_UNAVAILABLE")
        try:
            inference = parse_invocations(body, _header(scope, b"content-type"), model.validator)
            output = await self.infer(model, inference)
            return Response(200, encode_invocations(output), JSON)
        except Exception as error:
            return self._failure(PROTOCOL_MLFLOW, scope["path"], error)

    def _failure(self, protocol: str, path: str, error: Exception) -> Response:
        """The answer to a request that raised: 4xx for the caller's mistakes, 5xx for ours."""
        if isinstance(error, RequestError):  # 400, or 415 for a content type
            return _error(protocol, error.status, str(error), "BAD_REQUEST")
        if isinstance(error, PredictionTimeoutError):
            return _error(protocol, 504, str(error), "DEADLINE_EXCEEDED")
        if isinstance(error, PredictionError):
            return _error(protocol, 500, server_error(path, error), "INTERNAL_ERROR")
        raise error

    async def _models_route(self, scope: Scope, receive: Receive) -> Response:
        parts = scope["path"][len(MODELS_PREFIX) :].rstrip("/").split("/")
        name, rest = parts[0], parts[1:]
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        if action not in ("", "ready", "infer"):
            return Response(404, oip_error(f"no route {scope['path']}"), JSON)
        if refused := self.identity.refuses(name, version):
            return Response(404, oip_error(refused), JSON)
        if action == "infer":
            return await self._oip_infer(scope, receive)
        if action == "ready":
            ready = self.is_ready()
            document: dict[str, Any] = {"name": name, "ready": ready}
            if not ready:
                document["reason"] = self.not_ready_explanation()
            return Response(200 if ready else 503, dumps(document), JSON)
        return self._model_metadata()

    async def _oip_infer(self, scope: Scope, receive: Receive) -> Response:
        if scope["method"] != "POST":
            return _method_not_allowed(PROTOCOL_V2)
        body = await _read_body(scope, receive, self.config.max_request_bytes)
        model = self.model
        if model is None:
            return Response(503, oip_error(self.not_ready_reason), JSON)
        try:
            header_length = _header(scope, HEADER_LENGTH) or None
            inference = parse_oip_infer(body, header_length, model.validator)
            output = await self.infer(model, inference)
            encoded, json_length = encode_oip_infer(
                output, self.identity, inference, self.oip_output_names
            )
            if json_length is None:
                return Response(200, encoded, JSON)
            headers = ((HEADER_LENGTH, str(json_length).encode()),)
            return Response(200, encoded, BINARY_CONTENT_TYPE, headers)
        except Exception as error:
            return self._failure(PROTOCOL_V2, scope["path"], error)

    # --- health and metadata -------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.model is not None and self.workers.all_loaded()

    def not_ready_explanation(self) -> str:
        if self.model is None:
            return self.not_ready_reason
        return self.workers.waiting_reason()

    def _not_ready(self) -> Response:
        return Response(503, dumps({"ready": False, "reason": self.not_ready_explanation()}), JSON)

    async def _ping(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, b"\n", TEXT) if self.is_ready() else self._not_ready()

    async def _live(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, b'{"live":true}', JSON)

    async def _ready(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, b'{"ready":true}', JSON) if self.is_ready() else self._not_ready()

    async def _server_metadata(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, dumps(server_metadata()), JSON)

    def _model_metadata(self) -> Response:
        model = self.model
        if model is None:
            return self._not_ready()
        return Response(200, dumps(model_metadata(self.identity, model)), JSON)

    async def _metrics(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, self.metrics.exposition(), self.metrics.content_type.encode())


def _error(protocol: str, status: int, message: str, mlflow_code: str) -> Response:
    """An error in the body shape of the request's protocol."""
    if protocol == PROTOCOL_MLFLOW:
        return Response(status, mlflow_error(message, mlflow_code), JSON)
    return Response(status, oip_error(message), JSON)


def _method_not_allowed(protocol: str) -> Response:
    response = _error(protocol, 405, "use POST", "BAD_REQUEST")
    return Response(response.status, response.body, JSON, ((b"allow", b"POST"),))
