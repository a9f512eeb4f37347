"""The Open Inference Protocol v2 over gRPC (KServe's GRPCInferenceService), beside HTTP.

A grpc.aio server on the ASGI app's event loop, started and stopped by its lifespan, answers
from the same ModelServer: inference goes through the same decoding and validation
(oip_codec.py, as HTTP's), the same micro-batcher and the same metrics, counted under
protocol "grpc" with the HTTP status code the gRPC status stands for, so canary analysis
counts gRPC errors as it counts HTTP ones. This module only maps protobuf messages to and
from the codec's tensors. A message over `max_request_bytes` is refused by grpcio itself
(RESOURCE_EXHAUSTED) before it reaches the servicer, so it is not counted.

With --workers N each worker process binds the gRPC port itself: grpcio sets SO_REUSEPORT
and the kernel spreads new connections over the workers (uvicorn shares one HTTP socket
instead). A single process turns SO_REUSEPORT off, so a port held by another server fails
the startup rather than silently splitting that server's traffic with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc.aio import ServicerContext

from mlcycle.dataplane.grpc import grpc_predict_v2_pb2 as pb
from mlcycle.dataplane.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from mlcycle.dataplane.grpc.status import HTTP_STATUS_OF_GRPC
from mlcycle.dataplane.server.app import server_error
from mlcycle.dataplane.server.batching import PredictionTimeoutError
from mlcycle.dataplane.server.oip_codec import (
    OipTensor,
    bytes_elements,
    decode_raw,
    decode_values,
    encode_raw,
    inference_from_tensors,
    model_metadata,
    output_tensors,
    server_metadata,
)
from mlcycle.dataplane.server.validation import RequestError

if TYPE_CHECKING:
    from mlcycle.dataplane.server.app import ModelServer

logger = logging.getLogger(__name__)

PROTOCOL_GRPC = "grpc"
SERVICE = "inference.GRPCInferenceService"
INFER_PATH = f"/{SERVICE}/ModelInfer"
UNSHARED = "shared memory is not supported; send the data in the request"

# The field of InferTensorContents holding each datatype; FP16 has none (raw contents only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class RpcError(Exception):
    """A call answered with a non-OK status."""

    code: grpc.StatusCode
    message: str

    def set_on(self, context: ServicerContext[Any, Any]) -> None:
        # grpc.aio discards the returned message once a non-OK code is set.
        context.set_code(self.code)
        context.set_details(self.message)


def _parameters(parameters: Any) -> dict[str, Any]:
    """map<string, InferParameter> as plain values; unset parameters are left out."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def request_tensors(request: pb.ModelInferRequest) -> list[OipTensor]:
    """The input tensors, from raw_input_contents (tritonclient's choice) or typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            "raw_input_contents", f"{len(raw)} entries for {len(request.inputs)} inputs"
        )
    tensors = []
    for index, item in enumerate(request.inputs):
        field = f"inputs[{index}]({item.name})"
        if "shared_memory_region" in item.parameters:
            raise RequestError(f"{field}.parameters.shared_memory_region", UNSHARED)
        shape = list(item.shape)
        if raw:
            if item.HasField("contents"):
                raise RequestError(f"{field}.contents", "not allowed beside raw_input_contents")
            data = decode_raw(item.datatype, shape, raw[index], field)
        else:
            contents_field = CONTENTS_FIELD.get(item.datatype)
            if contents_field is None:
                raise RequestError(
                    f"{field}.contents",
                    f"datatype {item.datatype!r} has no typed contents; send raw_input_contents",
                )
            values = getattr(item.contents, contents_field)
            data = decode_values(item.datatype, shape, values, field)
        tensors.append(OipTensor(item.name, item.datatype, data.shape, data))
    return tensors


def requested_outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    """The outputs asked for, by name; the extensions HTTP refuses are refused here too."""
    for index, output in enumerate(request.outputs):
        if "classification" in output.parameters:
            field = f"outputs[{index}]({output.name}).parameters.classification"
            raise RequestError(field, "the classification extension is not supported")
        if "shared_memory_region" in output.parameters:
            field = f"outputs[{index}]({output.name}).parameters.shared_memory_region"
            raise RequestError(field, UNSHARED)
    return tuple(output.name for output in request.outputs)


def infer_response(
    tensors: Sequence[OipTensor], request: pb.ModelInferRequest, name: str, version: str
) -> pb.ModelInferResponse:
    """Raw output contents to a request that sent raw inputs (as Triton answers), typed
    contents otherwise; raw for all outputs when one has no typed field (FP16)."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id)
    raw = bool(request.raw_input_contents) or any(
        tensor.datatype not in CONTENTS_FIELD for tensor in tensors
    )
    for tensor in tensors:
        output = response.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
        )
        if raw:
            response.raw_output_contents.append(encode_raw(tensor.data, tensor.datatype))
            continue
        contents = getattr(output.contents, CONTENTS_FIELD[tensor.datatype])
        if tensor.datatype == "BYTES":
            contents.extend(bytes_elements(tensor.data))
        else:
            contents.extend(tensor.data.reshape(-1).tolist())
    return response


class InferenceServicer:
    """GRPCInferenceService answered by one ModelServer (method names are the service's)."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    async def ServerLive(  # noqa: N802
        self,
        request: pb.ServerLiveRequest,
        context: ServicerContext[pb.ServerLiveRequest, pb.ServerLiveResponse],
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self,
        request: pb.ServerReadyRequest,
        context: ServicerContext[pb.ServerReadyRequest, pb.ServerReadyResponse],
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.server.is_ready())

    async def ModelReady(  # noqa: N802
        self,
        request: pb.ModelReadyRequest,
        context: ServicerContext[pb.ModelReadyRequest, pb.ModelReadyResponse],
    ) -> pb.ModelReadyResponse:
        try:
            self._check_served(request.name, request.version)
        except RpcError as error:
            error.set_on(context)
            return pb.ModelReadyResponse()
        return pb.ModelReadyResponse(ready=self.server.is_ready())

    async def ServerMetadata(  # noqa: N802
        self,
        request: pb.ServerMetadataRequest,
        context: ServicerContext[pb.ServerMetadataRequest, pb.ServerMetadataResponse],
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata())

    async def ModelMetadata(  # noqa: N802
        self,
        request: pb.ModelMetadataRequest,
        context: ServicerContext[pb.ModelMetadataRequest, pb.ModelMetadataResponse],
    ) -> pb.ModelMetadataResponse:
        try:
            return self._model_metadata(request)
        except RpcError as error:
            error.set_on(context)
            return pb.ModelMetadataResponse()

    async def ModelInfer(  # noqa: N802
        self,
        request: pb.ModelInferRequest,
        context: ServicerContext[pb.ModelInferRequest, pb.ModelInferResponse],
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await self._infer(request)
        except RpcError as error:
            code = error.code
            error.set_on(context)
            return pb.ModelInferResponse()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.server.metrics.observe_request(
                PROTOCOL_GRPC, HTTP_STATUS_OF_GRPC[code], time.perf_counter() - started
            )

    def _check_served(self, name: str, version: str) -> None:
        missing = self.server.identity.refuses(name, version)
        if missing is not None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, missing)

    def _model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        self._check_served(request.name, request.version)
        model = self.server.model
        if model is None:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, self.server.not_ready_reason)
        document = model_metadata(self.server.identity, model)
        response = pb.ModelMetadataResponse(
            name=document["name"], versions=document["versions"], platform=document["platform"]
        )
        for specs, tensors in (
            (document["inputs"], response.inputs),
            (document["outputs"], response.outputs),
        ):
            for spec in specs:
                tensors.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        return response

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        server = self.server
        self._check_served(request.model_name, request.model_version)
        model = server.model
        if model is None:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, server.not_ready_reason)
        try:
            requested = requested_outputs(request)
            inference = inference_from_tensors(
                request_tensors(request),
                requested,
                request.id or None,
                _parameters(request.parameters) or None,
                model.validator,
            )
            output = await server.infer(model, inference)
            tensors = output_tensors(output, server.oip_output_names, requested)
            return infer_response(tensors, request, server.identity.name, server.identity.version)
        except RequestError as error:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        except PredictionTimeoutError as error:
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, str(error)) from None
        except Exception as error:  # the model's failure, or an output that cannot be encoded
            raise RpcError(grpc.StatusCode.INTERNAL, server_error(INFER_PATH, error)) from None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(server: ModelServer) -> Callable[[], Awaitable[None]]:
    """Serve GRPCInferenceService on the configured port; returns the coroutine function that
    stops it, letting RPCs in flight finish within the graceful-shutdown seconds."""
    config = server.config
    assert config.grpc_port is not None
    grpc_server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
            # The same bound as an HTTP body; grpcio's default of 4 MiB is a few images.
            ("grpc.max_receive_message_length", config.max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(server), grpc_server)
    port = grpc_server.add_insecure_port(_address(config.host, config.grpc_port))
    await grpc_server.start()
    logger.info("Open Inference Protocol over gRPC on %s", _address(config.host, port))

    async def stop() -> None:
        await grpc_server.stop(config.graceful_shutdown_seconds)

    return stop
