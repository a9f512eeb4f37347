"""The Open Inference Protocol over gRPC: the generated modules, and the servicer in process.

The servicer runs on a real grpc.aio server (one event loop thread for the module) in front
of ModelServers holding small Python models, and is called through the generated stub:
typed and raw contents, statuses and the metrics they are counted under.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from mlcycle.dataplane.grpc import generate
from mlcycle.dataplane.grpc import grpc_predict_v2_pb2 as pb
from mlcycle.dataplane.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from mlcycle.dataplane.server.app import ModelServer
from mlcycle.dataplane.server.config import ServerConfig
from mlcycle.dataplane.server.flavors import LoadedModel
from mlcycle.dataplane.server.grpc_servicer import start_grpc
from mlcycle.dataplane.server.source import ModelIdentity
from mlcycle.dataplane.server.validation import InputValidator
from mlcycle.dev.processes import free_port
from tests.unit.signatures import columns_signature

pytestmark = pytest.mark.unit

SIGNATURE = columns_signature(
    ("x", "double"), ("y", "double"), ("color", "string"), output_dtype="float64"
)
ROWS = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.5, 0.25, 0.0], "color": ["red", "blue", "é"]})
EXPECTED = [11.5, 20.25, 30.0]


def score(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    return (frame["x"] * 10 + frame["y"] + (frame["color"] == "red")).to_numpy()


def shout(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    return frame["color"].str.upper().to_numpy()


def fail(frame: pd.DataFrame) -> Any:
    raise RuntimeError("secret-token-4b1d in the model's message")


def loaded(predict: Callable[[pd.DataFrame], Any]) -> LoadedModel:
    return LoadedModel(
        flavor="python_function",
        predict=predict,
        signature=SIGNATURE,
        validator=InputValidator(SIGNATURE, "dataframe"),
    )


class Loop:
    """An event loop in a thread of its own, where the servers run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)


@dataclass
class Served:
    server: ModelServer
    stub: Any
    channel: grpc.Channel
    loop: Loop
    stop_grpc: Callable[[], Awaitable[None]]
    stopped: bool = False

    def requests(self, code: int) -> float:
        labels = {"model": "m", "version": "1", "protocol": "grpc", "code": str(code)}
        value = self.server.metrics.registry.get_sample_value(
            "mlcycle_model_requests_total", labels
        )
        return value or 0.0

    def stop(self) -> None:
        """What the lifespan's shutdown does (the first time only)."""
        if not self.stopped:
            self.stopped = True
            self.loop.run(self.stop_grpc())


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[LoadedModel | None], Served]]:
    """Starts a ModelServer with gRPC serving `model` (None: never loaded); all stop at the end."""
    loop = Loop()
    started: list[Served] = []

    def serve(model: LoadedModel | None) -> Served:
        port = free_port()
        config = ServerConfig(
            model_uri="models:/m/1", model_name="m", model_version="1", grpc_port=port
        )
        server = ModelServer(config)

        async def start() -> Callable[[], Awaitable[None]]:
            if model is not None:
                server.serve_model(model)
            return await start_grpc(server)

        stop = loop.run(start())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        served = Served(server, pb_grpc.GRPCInferenceServiceStub(channel), channel, loop, stop)
        started.append(served)
        return served

    yield serve
    for served in started:
        served.channel.close()
        served.stop()
    loop.loop.call_soon_threadsafe(loop.loop.stop)


@pytest.fixture(scope="module")
def scoring(servers: Callable[[LoadedModel | None], Served]) -> Served:
    return servers(loaded(score))


def typed_request(**fields: Any) -> pb.ModelInferRequest:
    """ROWS in typed contents, one tensor per column (y as [rows, 1])."""
    request = pb.ModelInferRequest(model_name="m", **fields)
    x = request.inputs.add(name="x", datatype="FP64", shape=[3])
    x.contents.fp64_contents.extend(ROWS["x"])
    y = request.inputs.add(name="y", datatype="FP64", shape=[3, 1])
    y.contents.fp64_contents.extend(ROWS["y"])
    color = request.inputs.add(name="color", datatype="BYTES", shape=[3])
    color.contents.bytes_contents.extend(value.encode() for value in ROWS["color"])
    return request


def length_prefixed(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def raw_request() -> pb.ModelInferRequest:
    """ROWS in raw contents, as tritonclient sends them (x as FP32)."""
    request = pb.ModelInferRequest(model_name="m", model_version="1")
    request.inputs.add(name="x", datatype="FP32", shape=[3])
    request.inputs.add(name="y", datatype="FP64", shape=[3])
    request.inputs.add(name="color", datatype="BYTES", shape=[3])
    request.raw_input_contents.extend(
        [
            ROWS["x"].to_numpy("<f4").tobytes(),
            ROWS["y"].to_numpy("<f8").tobytes(),
            length_prefixed(ROWS["color"].tolist()),
        ]
    )
    return request


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# --- generated modules ----------------------------------------------------------------


def test_the_generated_modules_are_those_the_proto_gives() -> None:
    """Fails when grpc_predict_v2.proto, grpcio-tools or generate.py changed without a
    `python -m mlcycle.dataplane.grpc.generate`."""
    for name, text in generate.generate().items():
        assert (generate.PACKAGE_DIR / name).read_text() == text, f"{name} is stale"


def test_the_messages_are_tritonclients_on_the_wire_and_load_beside_them() -> None:
    from tritonclient.grpc import service_pb2 as triton

    request = typed_request(id="r-1")
    request.parameters["temperature"].int64_param = 3
    request.outputs.add(name="output-0")
    request.raw_input_contents.append(b"\x00\x01")
    theirs = triton.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.id == "r-1"
    assert [tensor.name for tensor in theirs.inputs] == ["x", "y", "color"]
    assert list(theirs.inputs[2].contents.bytes_contents) == [b"red", b"blue", "é".encode()]
    assert theirs.parameters["temperature"].int64_param == 3
    assert pb.ModelInferRequest.FromString(theirs.SerializeToString()) == request
    assert pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == (
        "inference.GRPCInferenceService"
    )


# --- health and metadata --------------------------------------------------------------


def test_health_and_metadata_answer_like_http(
    servers: Callable[[LoadedModel | None], Served], scoring: Served
) -> None:
    stub = scoring.stub
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="m")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="m", version="1")).ready
    server_metadata = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server_metadata.name == "mlcycle"
    assert "binary_tensor_data" in server_metadata.extensions

    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
    assert (metadata.name, list(metadata.versions)) == ("m", ["1"])
    assert metadata.platform == "mlflow_python_function"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP64", [-1]),
        ("y", "FP64", [-1]),
        ("color", "BYTES", [-1]),
    ]
    answered = stub.ModelInfer(typed_request())
    assert [t.name for t in metadata.outputs] == [t.name for t in answered.outputs]

    unloaded = servers(None).stub
    assert unloaded.ServerLive(pb.ServerLiveRequest()).live
    assert not unloaded.ServerReady(pb.ServerReadyRequest()).ready
    assert not unloaded.ModelReady(pb.ModelReadyRequest(name="m")).ready
    error = rpc_error(lambda: unloaded.ModelMetadata(pb.ModelMetadataRequest(name="m")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "model is loading"


@pytest.mark.parametrize(
    "call",
    [
        lambda stub: stub.ModelReady(pb.ModelReadyRequest(name="other")),
        lambda stub: stub.ModelMetadata(pb.ModelMetadataRequest(name="m", version="2")),
        lambda stub: stub.ModelInfer(pb.ModelInferRequest(model_name="other")),
    ],
)
def test_another_model_is_not_found(scoring: Served, call: Callable[[Any], Any]) -> None:
    error = rpc_error(lambda: call(scoring.stub))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "this server serves m version 1" in str(error.details())


def test_missing_model_says_what_was_asked_and_what_is_served() -> None:
    identity = ModelIdentity(name="m", version="1")
    assert identity.refuses("m", "") is None
    assert identity.refuses("m", "1") is None
    assert identity.refuses("m", "2") == (
        "model m version 2 not found; this server serves m version 1"
    )
    assert identity.refuses("", "") == "model  not found; this server serves m version 1"


# --- inference --------------------------------------------------------------------------


def test_typed_contents_are_answered_with_typed_contents(scoring: Served) -> None:
    before = scoring.requests(200)
    response = scoring.stub.ModelInfer(typed_request(id="r-7"))
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "r-7")
    assert not response.raw_output_contents
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output-0", "FP64", [3])
    assert list(output.contents.fp64_contents) == EXPECTED
    assert scoring.requests(200) == before + 1


def test_raw_contents_as_tritonclient_sends_them_are_answered_raw(scoring: Served) -> None:
    response = scoring.stub.ModelInfer(raw_request())
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output-0", "FP64", [3])
    assert not output.HasField("contents")
    assert np.frombuffer(response.raw_output_contents[0], "<f8").tolist() == EXPECTED


def test_bytes_outputs_typed_and_raw(servers: Callable[[LoadedModel | None], Served]) -> None:
    stub = servers(loaded(shout)).stub
    [typed] = stub.ModelInfer(typed_request()).outputs
    assert typed.datatype == "BYTES"
    assert list(typed.contents.bytes_contents) == [b"RED", b"BLUE", "É".encode()]
    raw = stub.ModelInfer(raw_request()).raw_output_contents
    assert raw == [length_prefixed(["RED", "BLUE", "É"])]


def test_requested_outputs_and_parameters_reach_the_codec(scoring: Served) -> None:
    request = typed_request()
    request.outputs.add(name="output-0")
    request.parameters["binary_data_output"].bool_param = True  # the protocol's own: dropped
    assert [t.name for t in scoring.stub.ModelInfer(request).outputs] == ["output-0"]

    request.outputs.add(name="probabilities")
    error = rpc_error(lambda: scoring.stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outputs(probabilities): unknown output" in str(error.details())


def _without_color(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    del request.inputs[2]
    return request


def _raw_beside_contents(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.inputs[0].contents.fp32_contents.append(1.0)
    return request


def _short_raw(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    return request


def _shared_memory(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.inputs[1].parameters["shared_memory_region"].string_param = "input_y"
    return request


def _classification(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.outputs.add(name="output-0").parameters["classification"].int64_param = 2
    return request


def _datatype(datatype: str) -> Callable[[pb.ModelInferRequest], pb.ModelInferRequest]:
    def change(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
        request.inputs[0].datatype = datatype
        return request

    return change


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (_without_color(typed_request()), "inputs.color: missing column"),
        # Typed contents are read from the datatype's field: x's values are not in int64's.
        (_datatype("INT64")(typed_request()), "inputs[0](x).shape: shape [3] needs 3 values"),
        (_datatype("FP8")(raw_request()), "inputs[0](x).datatype: unknown datatype 'FP8'"),
        (_raw_beside_contents(raw_request()), "contents: not allowed beside raw_input_contents"),
        (_short_raw(raw_request()), "inputs[0](x): shape [3] needs 12 bytes of FP32, got 11"),
        (_datatype("FP16")(typed_request()), "datatype 'FP16' has no typed contents"),
        (
            pb.ModelInferRequest(model_name="m", raw_input_contents=[b""]),
            "raw_input_contents: 1 entries for 0 inputs",
        ),
        (pb.ModelInferRequest(model_name="m"), "inputs: expected a non-empty list of tensors"),
        (
            _shared_memory(raw_request()),
            "inputs[1](y).parameters.shared_memory_region: shared memory is not supported",
        ),
        (
            _classification(typed_request()),
            "outputs[0](output-0).parameters.classification: the classification extension",
        ),
    ],
)
def test_a_bad_request_is_invalid_argument_counted_as_a_400(
    scoring: Served, request_: pb.ModelInferRequest, says: str
) -> None:
    before = scoring.requests(400)
    error = rpc_error(lambda: scoring.stub.ModelInfer(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in str(error.details())
    assert scoring.requests(400) == before + 1


def test_inference_before_the_model_loaded_is_unavailable_counted_as_a_503(
    servers: Callable[[LoadedModel | None], Served],
) -> None:
    unloaded = servers(None)
    unloaded.server.not_ready_reason = "model 'models:/m/1' could not be loaded (attempt 2)"
    error = rpc_error(lambda: unloaded.stub.ModelInfer(typed_request()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "model 'models:/m/1' could not be loaded (attempt 2)"
    assert unloaded.requests(503) == 1


def test_a_failing_model_is_internal_with_an_error_id_never_its_message(
    servers: Callable[[LoadedModel | None], Served],
) -> None:
    failing = servers(loaded(fail))
    error = rpc_error(lambda: failing.stub.ModelInfer(typed_request()))
    assert error.code() == grpc.StatusCode.INTERNAL
    details = str(error.details())
    assert details.startswith("prediction failed (RuntimeError); error id ")
    assert "secret-token" not in details
    assert failing.requests(500) == 1


def test_calls_in_flight_finish_when_the_server_stops(
    servers: Callable[[LoadedModel | None], Served],
) -> None:
    predicting = threading.Event()

    def slow(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        predicting.set()
        time.sleep(0.5)
        return score(frame)

    stopping = servers(loaded(slow))
    in_flight = stopping.stub.ModelInfer.future(typed_request())
    assert predicting.wait(10)
    stopping.stop()
    assert list(in_flight.result(timeout=10).outputs[0].contents.fp64_contents) == EXPECTED
    error = rpc_error(lambda: stopping.stub.ServerLive(pb.ServerLiveRequest(), timeout=2))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("flags", "grpc_port"),
    [([], 8081), (["--grpc-port", "9001"], 9001), (["--no-grpc"], None)],
)
def test_serve_flags_set_the_grpc_port(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], grpc_port: int | None
) -> None:
    from mlcycle import cli
    from mlcycle.dataplane.server import main

    configs: list[ServerConfig] = []
    monkeypatch.setattr(main, "serve", configs.append)
    assert cli.main(["serve", "--model-uri", "models:/m/1", *flags]) == 0
    assert configs[0].grpc_port == grpc_port
