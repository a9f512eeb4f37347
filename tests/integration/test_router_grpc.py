"""The router's gRPC port as a real process in front of gRPC backends: exact weighted split,
header pinning, statuses and metadata passed through and counted as canary analysis reads
them, no backend, and draining on SIGTERM. File configuration, no cluster.

The backends are OIP v2 gRPC servers in this process (`inference.GRPCInferenceService`,
tritonclient's messages) that answer ModelInfer as one model version, so the client sees
in every response which backend the router chose. The client is tritonclient's own, or a
plain grpc channel where a test reads statuses and metadata.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from mlcycle.dev.processes import free_port
from tests.router_processes import Router, start_router, stopped_at_exit, wait_for

pytestmark = pytest.mark.integration

INFER = "/inference.GRPCInferenceService/ModelInfer"
REJECTION = "input x: expected shape [-1, 4], got [4]"


@dataclass
class GrpcBackend:
    """Answers ModelInfer as model version `version`; or rejects every request (`reject`),
    or answers after `delay` seconds. Trailing metadata says what arrived."""

    version: str
    reject: bool = False
    delay: float = 0.0
    port: int = 0
    received: threading.Event = field(default_factory=threading.Event)
    _server: grpc.Server | None = None

    def start(self) -> GrpcBackend:
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {
                "ModelInfer": grpc.unary_unary_rpc_method_handler(
                    self._infer,
                    request_deserializer=service_pb2.ModelInferRequest.FromString,
                    response_serializer=service_pb2.ModelInferResponse.SerializeToString,
                )
            },
        )
        self._server = grpc.server(
            ThreadPoolExecutor(8), handlers=[handler], options=[("grpc.so_reuseport", 0)]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _infer(
        self, request: service_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        self.received.set()
        seen = dict(context.invocation_metadata())
        remaining = context.time_remaining()
        context.set_trailing_metadata(
            (
                ("x-seen-forwarded-for", str(seen.get("x-forwarded-for", ""))),
                ("x-seen-pin", str(seen.get("x-mlcycle-version", ""))),
                ("x-seen-deadline", "none" if remaining is None else f"{remaining:.3f}"),
            )
        )
        if self.delay:
            time.sleep(self.delay)
        if self.reject:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, REJECTION)
        output = service_pb2.ModelInferResponse.InferOutputTensor(
            name="predict", datatype="INT64", shape=[1]
        )
        output.contents.int64_contents.append(int(self.version))
        return service_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version=self.version,
            id=request.id,
            outputs=[output],
        )


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, GrpcBackend]]:
    started = {
        "stable": GrpcBackend("1").start(),
        "canary": GrpcBackend("2").start(),
        "rejecting": GrpcBackend("3", reject=True).start(),
    }
    yield started
    for backend in started.values():
        backend.stop()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("router-grpc-logs")


def _config(
    backends: dict[str, GrpcBackend], weights: dict[str, int], **rest: Any
) -> dict[str, Any]:
    return {
        "service": "iris",
        "backends": {
            name: {"grpcEndpoints": [backend.endpoint], "version": f"v-{name}"}
            for name, backend in backends.items()
        },
        "weights": weights,
        **rest,
    }


@pytest.fixture(scope="module")
def router(backends: dict[str, GrpcBackend], logs: Path) -> Iterator[Router]:
    """Stable and canary at 75/25; `x-mlcycle-version: canary` pins to the canary,
    `x-reject` to the backend that rejects every request."""
    config = _config(
        backends,
        {"stable": 75, "canary": 25},
        headerRoutes=[
            {"header": "X-Mlcycle-Version", "value": "canary", "backend": "canary"},
            {"header": "x-reject", "backend": "rejecting"},
        ],
    )
    started = start_router(logs, config=config)
    with stopped_at_exit(started.process):
        yield started


def _infer(client: triton.InferenceServerClient, **options: Any) -> str:
    """One ModelInfer through tritonclient; the model version that answered."""
    x = triton.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    result = client.infer("iris", inputs=[x], **options)
    version: str = result.get_response().model_version
    return version


def _raw_call(
    target: str, metadata: tuple[tuple[str, str], ...] = (), timeout: float = 5
) -> tuple[service_pb2.ModelInferResponse, grpc.Call]:
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary(
            INFER,
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        response, call = infer.with_call(
            service_pb2.ModelInferRequest(model_name="iris", id="r-1"),
            metadata=metadata,
            timeout=timeout,
        )
        return response, call


def test_weights_split_grpc_calls_exactly(router: Router) -> None:
    before = {
        name: router.metric("mlcycle_router_requests_total", backend=name, code="200")
        for name in ("stable", "canary")
    }
    client = triton.InferenceServerClient(router.grpc_target)
    try:
        counts = Counter(_infer(client) for _ in range(400))
    finally:
        client.close()
    assert counts == {"1": 300, "2": 100}
    for name, count in (("stable", 300), ("canary", 100)):
        assert (
            router.metric("mlcycle_router_requests_total", backend=name, code="200")
            == before[name] + count
        )
        assert router.metric(
            "mlcycle_router_request_duration_seconds_count", backend=name, version=f"v-{name}"
        ) >= (before[name] + count)


def test_a_metadata_header_pins_every_call(router: Router) -> None:
    client = triton.InferenceServerClient(router.grpc_target)
    try:
        pinned = Counter(
            _infer(client, headers={"x-mlcycle-version": "canary"}) for _ in range(100)
        )
        other = Counter(_infer(client, headers={"x-mlcycle-version": "other"}) for _ in range(4))
    finally:
        client.close()
    assert pinned == {"2": 100}
    assert other == {"1": 3, "2": 1}
    # The response comes back whole, with the backend named and the backend's metadata;
    # the client's metadata, address and deadline went on to the backend.
    response, call = _raw_call(router.grpc_target, (("x-mlcycle-version", "canary"),), timeout=5)
    assert (response.model_name, response.model_version, response.id) == ("iris", "2", "r-1")
    assert list(response.outputs[0].contents.int64_contents) == [2]
    assert ("x-mlcycle-backend", "canary") in tuple(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    assert trailing["x-seen-pin"] == "canary"
    assert trailing["x-seen-forwarded-for"] == "127.0.0.1"
    # The client's 5 s, not the router's 30 s (grpc rounds a timeout up as it sends it).
    assert 0 < float(trailing["x-seen-deadline"]) < 5.5


def test_a_backend_s_status_is_passed_through_and_counted_as_its_http_equivalent(
    router: Router,
) -> None:
    answered = router.metric("mlcycle_router_requests_total", code="200")
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as raised:
            _raw_call(router.grpc_target, (("x-reject", "1"),))
        error: Any = raised.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == REJECTION
        assert ("x-mlcycle-backend", "rejecting") in tuple(error.initial_metadata())
        assert dict(error.trailing_metadata())["x-seen-forwarded-for"] == "127.0.0.1"
    assert router.metric("mlcycle_router_requests_total", backend="rejecting", code="400") == 5
    assert router.metric("mlcycle_router_requests_total", backend="rejecting") == 5
    assert router.metric("mlcycle_router_requests_total", code="200") == answered


def test_without_a_reachable_backend_calls_are_unavailable(
    backends: dict[str, GrpcBackend], logs: Path
) -> None:
    # Backend `http-only` has no gRPC endpoint; `gone` has one that nothing listens on.
    config = {
        "service": "iris",
        "backends": {
            "http-only": {"endpoints": ["127.0.0.1:9"]},
            "gone": {"grpcEndpoints": [f"127.0.0.1:{free_port()}"]},
        },
        "weights": {"http-only": 1},
        "headerRoutes": [{"header": "x-pin", "backend": "gone"}],
        "timeouts": {"connectSeconds": 0.2},
    }
    router = start_router(logs, config=config)
    with stopped_at_exit(router.process):
        client = triton.InferenceServerClient(router.grpc_target)
        try:
            with pytest.raises(InferenceServerException) as unrouted:
                _infer(client)
            with pytest.raises(InferenceServerException) as unreachable:
                _infer(client, headers={"x-pin": "1"})
        finally:
            client.close()
        assert unrouted.value.status() == "StatusCode.UNAVAILABLE"
        assert "no backend is available" in str(unrouted.value.message())
        assert unreachable.value.status() == "StatusCode.UNAVAILABLE"
        assert router.metric("mlcycle_router_requests_total", backend="none", code="503") == 1
        assert router.metric("mlcycle_router_requests_total", backend="gone", code="503") == 1


def test_sigterm_drains_grpc_calls_in_flight(logs: Path) -> None:
    slow = GrpcBackend("1", delay=1.5).start()
    try:
        router = start_router(logs, config=_config({"slow": slow}, {"slow": 1}))
        with stopped_at_exit(router.process):
            outcome: list[str] = []

            def call() -> None:
                response, _ = _raw_call(router.grpc_target, timeout=10)
                outcome.append(response.model_version)

            in_flight = threading.Thread(target=call)
            in_flight.start()
            wait_for("the call to reach the backend", slow.received.is_set, timeout=10)
            router.process.popen.send_signal(signal.SIGTERM)
            # New calls are refused while the one in flight (1.5 s at the backend) goes on.
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as refused:
                _raw_call(router.grpc_target, timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            in_flight.join(10)
            assert outcome == ["1"]
            assert router.process.popen.wait(10) == 0
    finally:
        slow.stop()
