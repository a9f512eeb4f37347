"""The Open Inference Protocol v2 over HTTP: infer requests and responses as JSON, and with
Triton's binary tensor data extension (raw tensors after a JSON header).

With the extension, the `Inference-Header-Content-Length` header gives the length of the
JSON part; each input with `parameters.binary_data_size` takes its raw bytes, in input
order, from what follows. Outputs asked for with `binary_data` (per output) or
`binary_data_output` (the request's default) are answered the same way. tritonclient uses
it unless told not to, for inputs and outputs both.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mlcycle.dataplane.server.encoding import dumps, load_object
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.oip_codec import (
    SUPPORTED_EXTENSIONS,
    OipTensor,
    counted,
    decode_raw,
    decode_values,
    encode_raw,
    inference_from_tensors,
    model_metadata,
    oip_output_names,
    output_tensors,
    server_metadata,
    text_elements,
)
from mlcycle.dataplane.server.source import ModelIdentity
from mlcycle.dataplane.server.validation import InputValidator, RequestError

# The codec both transports share is used through this module (gRPC included), so the
# protocol has one import whichever transport a caller speaks.
__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "SUPPORTED_EXTENSIONS",
    "OipTensor",
    "decode_raw",
    "decode_values",
    "encode_oip_infer",
    "encode_raw",
    "inference_from_tensors",
    "model_metadata",
    "oip_error",
    "oip_output_names",
    "output_tensors",
    "parse_oip_infer",
    "server_metadata",
]

HEADER_LENGTH = b"inference-header-content-length"
"""The binary extension's header (lower case, as ASGI gives request headers)."""
BINARY_CONTENT_TYPE = b"application/octet-stream"
"""A response with binary outputs is not JSON as a whole."""
_HEADER_FIELD = "Inference-Header-Content-Length"
_UNSHARED = "shared memory is not supported; send the data in the request"


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part (a view: tensors are copied once, when decoded)."""
    if header_length is None:
        return body, memoryview(b"")
    if not (header_length.isascii() and header_length.isdigit()):
        raise RequestError(_HEADER_FIELD, f"expected a byte count, got {header_length!r}")
    length = int(header_length)
    if length > len(body):
        raise RequestError(_HEADER_FIELD, f"{length} is longer than the body ({len(body)} bytes)")
    return body[:length], memoryview(body)[length:]


def _flag(parameters: dict[str, Any], key: str, field: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(f"{field}.{key}", f"expected true or false, got {value!r}")
    return value


def _parameters(item: dict[str, Any], label: str) -> dict[str, Any]:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise RequestError(f"{label}.parameters", "expected an object")
    if "shared_memory_region" in parameters:
        raise RequestError(f"{label}.parameters.shared_memory_region", _UNSHARED)
    return parameters


def _input(
    item: object, field: str, binary: memoryview, offset: int, has_header: bool
) -> tuple[OipTensor, int]:
    """One input tensor, and where the next input's binary data starts."""
    if not isinstance(item, dict):
        raise RequestError(field, "expected an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype"):
        if key not in item:
            raise RequestError(f"{field}.{key}", "missing")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        raise RequestError(f"{field}.name", f"expected a string, got {name!r}")
    label = f"{field}({name})"
    size = _parameters(item, label).get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise RequestError(f"{label}.data", "missing")
        data = decode_values(datatype, shape, item["data"], label)
        return OipTensor(name, datatype, data.shape, data), offset
    size_field = f"{label}.parameters.binary_data_size"
    if "data" in item:
        raise RequestError(label, "has both data and binary_data_size")
    if not has_header:
        raise RequestError(size_field, f"binary data needs the {_HEADER_FIELD} header")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(size_field, f"expected a byte count, got {size!r}")
    end = offset + size
    if end > len(binary):
        raise RequestError(label, f"binary data ends after {len(binary) - offset} of {size} bytes")
    data = decode_raw(datatype, shape, binary[offset:end], label)
    return OipTensor(name, datatype, data.shape, data), end


def _requested_outputs(outputs: object, binary_default: bool) -> list[tuple[str, bool]]:
    """Each requested output's name and whether it is wanted as binary data."""
    if outputs is None:
        return []
    if not isinstance(outputs, list):
        raise RequestError("outputs", "expected a list of objects with a name")
    requested = []
    for index, item in enumerate(outputs):
        field = f"outputs[{index}]"
        if not isinstance(item, dict):
            raise RequestError(field, "expected an object with a name")
        if "name" not in item:
            raise RequestError(f"{field}.name", "missing")
        name = item["name"]
        if not isinstance(name, str):
            raise RequestError(f"{field}.name", f"expected a string, got {name!r}")
        label = f"{field}({name})"
        parameters = _parameters(item, label)
        if "classification" in parameters:
            raise RequestError(
                f"{label}.parameters.classification",
                "the classification extension is not supported",
            )
        binary = _flag(parameters, "binary_data", f"{label}.parameters", binary_default)
        requested.append((name, binary))
    return requested


def parse_oip_infer(body: bytes, header_length: str | None, validator: InputValidator) -> Inference:
    """An infer request; `header_length` is the Inference-Header-Content-Length header's
    value, None when the request has none (then the body is all JSON)."""
    header, binary = _split_body(body, header_length)
    document = load_object(header)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs", "expected a non-empty list of tensors")
    tensors = []
    offset = 0
    for index, item in enumerate(inputs):
        tensor, offset = _input(item, f"inputs[{index}]", binary, offset, header_length is not None)
        tensors.append(tensor)
    if offset != len(binary):
        left = counted(len(binary) - offset, "byte")
        raise RequestError("", f"{left} of binary data after the last input")
    parameters = document.get("parameters")
    binary_default = isinstance(parameters, dict) and _flag(
        parameters, "binary_data_output", "parameters", False
    )
    requested = _requested_outputs(document.get("outputs"), binary_default)
    request_id = document.get("id")
    inference = inference_from_tensors(
        tensors,
        tuple(name for name, _ in requested),
        str(request_id) if request_id is not None else None,
        parameters,
        validator,
    )
    return replace(
        inference,
        binary_outputs=frozenset(name for name, binary in requested if binary),
        all_outputs_binary=binary_default and not requested,
    )


def _json_output(tensor: OipTensor) -> dict[str, Any]:
    data: Any = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        field = f"outputs({tensor.name})"
        data = text_elements(tensor.data, field, "; request it as binary data")
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "data": data,
    }


def encode_oip_infer(
    output: Any, identity: ModelIdentity, inference: Inference, output_names: tuple[str, ...]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary outputs, the length of its JSON part
    (the Inference-Header-Content-Length to answer with; the content type is then
    BINARY_CONTENT_TYPE). `output_names` come from oip_output_names(signature)."""
    outputs: list[dict[str, Any]] = []
    raw_outputs: list[bytes] = []
    for tensor in output_tensors(output, output_names, inference.requested_outputs):
        if inference.all_outputs_binary or tensor.name in inference.binary_outputs:
            raw = encode_raw(tensor.data, tensor.datatype)
            raw_outputs.append(raw)
            outputs.append(
                {
                    "name": tensor.name,
                    "datatype": tensor.datatype,
                    "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
        else:
            outputs.append(_json_output(tensor))
    document: dict[str, Any] = {"model_name": identity.name}
    if identity.version:  # the protocol's model_version is optional, never ""
        document["model_version"] = identity.version
    if inference.request_id is not None:
        document["id"] = inference.request_id
    document["outputs"] = outputs
    header = dumps(document)
    if not raw_outputs:
        return header, None
    return b"".join([header, *raw_outputs]), len(header)


def oip_error(message: str) -> bytes:
    return dumps({"error": message})
