"""The Open Inference Protocol v2 whatever transport carries it: tensors decoded and checked,
inputs made model input through the signature, output made named tensors, and metadata.

HTTP (oip.py: JSON and the binary tensor data extension) and gRPC (typed and raw contents)
both go through these functions, so a request is accepted or refused the same way on either
and the metadata names the outputs infer answers with. A decoded BYTES tensor is an object
array of `str` (JSON) or `bytes` (raw and gRPC contents); the signature decides which one
the model gets.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.dataplane.server.flavors import LoadedModel
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.signature import (
    Signature,
    TensorSpec,
    oip_datatype,
    signature_as_json,
)
from mlcycle.dataplane.server.source import ModelIdentity
from mlcycle.dataplane.server.validation import InputValidator, ModelInput, RequestError, row_count

SUPPORTED_EXTENSIONS = ("binary_tensor_data",)
"""The protocol extensions this server implements (server metadata, HTTP and gRPC)."""

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# Which numpy kinds of decoded values each datatype's kind takes: integers never come from
# floats (no silent truncation), floats take integers (JSON writes 1.0 as 1).
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "fiu"}
# Request parameters the protocol itself uses (Triton's reserved list, tritonclient sends
# them): scheduling hints and response formatting, never arguments of the model's predict.
_PROTOCOL_PARAMETERS = frozenset(
    {
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        "headers",
        "binary_data_output",
    }
)
_PROTOCOL_PARAMETER_PREFIX = "triton_"
# The name signature_as_json gives an output the signature does not name, so that a model
# without an output signature answers with the same name as one with an unnamed tensor.
DEFAULT_OUTPUT_NAME = "output-0"
_LENGTH_PREFIX = struct.Struct("<I")


@dataclass(frozen=True, eq=False)
class OipTensor:
    """One named input or output tensor; `data` already has the tensor's `shape`."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: np.ndarray[Any, Any]


def counted(number: int, noun: str) -> str:
    """A count and its noun for messages: 1 byte, 2 bytes."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _dtype(datatype: object, field: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise RequestError(f"{field}.datatype", f"unknown datatype {datatype!r}")
    return dtype


def _dims(shape: object, field: str) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
    ):
        raise RequestError(f"{field}.shape", f"expected a list of sizes, got {shape!r}")
    return tuple(shape)


def _object_array(elements: Sequence[Any]) -> np.ndarray[Any, Any]:
    # np.array would turn equal-length strings into a fixed-width (or nested) array.
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


# --- decoding ---------------------------------------------------------------------------


def decode_values(
    datatype: str, shape: Sequence[int], values: object, field: str
) -> np.ndarray[Any, Any]:
    """A tensor from a list of values (JSON `data`, gRPC typed `contents`), nested or flat.

    Raises RequestError, naming `field` (e.g. "inputs[0](x)"), for an unknown datatype, a
    shape the values do not fill, values of another kind and numbers out of the datatype's
    range (refused, never wrapped or made infinite).
    """
    dtype = _dtype(datatype, field)
    dims = _dims(shape, field)
    if datatype == "BYTES":
        array = _text_or_bytes(values, f"{field}.data")
    else:
        try:
            array = np.asarray(values)
        except ValueError as error:
            raise RequestError(f"{field}.data", f"not a rectangular array: {error}") from None
        if array.size and array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
            raise RequestError(f"{field}.data", f"values do not match datatype {datatype}")
        array = _in_range(array, dtype, datatype, f"{field}.data")
    expected = math.prod(dims)
    if array.size != expected:
        raise RequestError(
            f"{field}.shape", f"shape {list(dims)} needs {expected} values, data has {array.size}"
        )
    return array.reshape(dims)


def _text_or_bytes(values: object, field: str) -> np.ndarray[Any, Any]:
    try:
        array = np.asarray(values, dtype=object)
    except ValueError as error:
        raise RequestError(field, f"not a rectangular array: {error}") from None
    flat = array.reshape(-1)
    if not all(isinstance(element, str | bytes) for element in flat):
        index = next(i for i, e in enumerate(flat) if not isinstance(e, str | bytes))
        found = type(flat[index]).__name__
        raise RequestError(field, f"expected strings, got {found} at element {index}")
    return array


def _in_range(
    array: np.ndarray[Any, Any], dtype: np.dtype[Any], datatype: str, field: str
) -> np.ndarray[Any, Any]:
    """`array` as `dtype`, refusing what numpy would wrap (integers) or make infinite."""
    if not array.size or np.can_cast(array.dtype, dtype, "safe"):
        return array.astype(dtype, copy=False)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < limits.min or high > limits.max:
            worst = low if low < limits.min else high
            raise RequestError(field, f"{worst.item()} is out of range for {datatype}")
    with np.errstate(over="ignore"):  # overflow is refused below, by value, not warned
        converted = array.astype(dtype)
    if dtype.kind == "f":
        overflow = np.isinf(converted) & ~np.isinf(array)
        if overflow.any():
            worst = array[overflow].reshape(-1)[0]
            raise RequestError(field, f"{worst.item()} is out of range for {datatype}")
    return converted


def decode_raw(
    datatype: str, shape: Sequence[int], raw: bytes | memoryview, field: str
) -> np.ndarray[Any, Any]:
    """A tensor from raw little-endian contents: the binary tensor data extension's bytes
    and gRPC's raw_input_contents. BYTES elements are each a 4-byte little-endian length
    and that many bytes. The array is the caller's own (writable, native byte order)."""
    dtype = _dtype(datatype, field)
    dims = _dims(shape, field)
    count = math.prod(dims)
    if datatype == "BYTES":
        return _length_prefixed(raw, count, dims, field).reshape(dims)
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise RequestError(
            field, f"shape {list(dims)} needs {needed} bytes of {datatype}, got {len(raw)}"
        )
    if datatype == "BOOL":
        flags: np.ndarray[Any, Any] = np.frombuffer(raw, np.uint8) != 0
        return flags.reshape(dims)
    return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(dims)


def _length_prefixed(
    raw: bytes | memoryview, count: int, dims: tuple[int, ...], field: str
) -> np.ndarray[Any, Any]:
    elements: list[bytes] = []
    offset, size = 0, len(raw)
    for index in range(count):
        if offset == size:
            raise RequestError(field, f"shape {list(dims)} needs {count} elements, got {index}")
        if offset + _LENGTH_PREFIX.size > size:
            raise RequestError(field, f"element {index} has no complete length prefix")
        (length,) = _LENGTH_PREFIX.unpack_from(raw, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > size:
            raise RequestError(
                field, f"element {index} needs {length} bytes, {size - offset} are left"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    if offset != size:
        raise RequestError(
            field, f"{counted(size - offset, 'byte')} after its {counted(count, 'element')}"
        )
    return _object_array(elements)


# --- inputs to model input ----------------------------------------------------------------


def _model_parameters(parameters: object) -> dict[str, Any] | None:
    """The request's parameters meant for the model's predict(params=...), or None."""
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        raise RequestError("parameters", "expected an object")
    kept = {
        str(key): value
        for key, value in parameters.items()
        if key not in _PROTOCOL_PARAMETERS and not str(key).startswith(_PROTOCOL_PARAMETER_PREFIX)
    }
    # None, not {}: a request without parameters of its own can share a batched predict.
    return kept or None


def inference_from_tensors(
    tensors: Sequence[OipTensor],
    requested_outputs: Sequence[str],
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
    validator: InputValidator,
) -> Inference:
    """The model input for decoded input tensors, checked against the model's signature.

    A column signature takes one tensor per column ([rows] or [rows, 1]) or one
    [rows, columns] tensor in signature order; a tensor signature takes its tensors by name.
    """
    if not tensors:
        raise RequestError("inputs", "expected a non-empty list of tensors")
    labels: dict[str, str] = {}
    for index, tensor in enumerate(tensors):
        label = f"inputs[{index}]({tensor.name})"
        if tensor.name in labels:
            raise RequestError(label, "duplicate input name")
        labels[tensor.name] = label
    if validator.signature.columns:
        model_input = _from_column_tensors(tensors, labels, validator)
    else:
        model_input = validator.tensors(
            {
                tensor.name: _tensor_values(tensor, validator.signature, len(tensors), labels)
                for tensor in tensors
            },
            "inputs",
        )
    params = _model_parameters(parameters)
    validator.check_params(params)  # a param of the wrong type is the caller's 400
    return Inference(
        model_input, row_count(model_input), params, request_id, tuple(requested_outputs)
    )


def _from_column_tensors(
    tensors: Sequence[OipTensor], labels: Mapping[str, str], validator: InputValidator
) -> ModelInput:
    column_types = {spec.name: spec.type for spec in validator.signature.columns}
    if len(tensors) == 1 and tensors[0].name not in column_types:
        # One 2-D tensor holding every column, in signature order (KServe-style clients).
        only = tensors[0]
        label = labels[only.name]
        if only.data.ndim != 2:
            raise RequestError(
                label,
                f"expected a column named one of {sorted(column_types)} "
                f"or a [rows, {len(column_types)}] tensor",
            )
        rows = only.data
        if only.datatype == "BYTES":
            rows = _object_array(text_elements(rows, label)).reshape(rows.shape)
        return validator.rows(rows, None, label)
    columns: dict[str, Any] = {}
    for tensor in tensors:
        label = labels[tensor.name]
        array = tensor.data
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise RequestError(f"{label}.shape", "a column input has shape [rows] or [rows, 1]")
        if tensor.datatype != "BYTES":
            columns[tensor.name] = array
        elif column_types.get(tensor.name) == "binary":
            columns[tensor.name] = _object_array(bytes_elements(array))
        else:
            # As a list, which the validator turns into the numpy string array a string
            # column takes (it refuses an object array, even one holding only str).
            columns[tensor.name] = text_elements(array, label)
    return validator.columns_by_name(columns, "inputs")


def _tensor_values(
    tensor: OipTensor, signature: Signature, count: int, labels: Mapping[str, str]
) -> np.ndarray[Any, Any]:
    """A BYTES tensor as the numpy kind its tensor spec has: bytes, str or objects (text)."""
    if tensor.datatype != "BYTES":
        return tensor.data
    spec: TensorSpec | None = next(
        (spec for spec in signature.tensors if spec.name == tensor.name), None
    )
    if spec is None and len(signature.tensors) == 1 and count == 1:
        spec = signature.tensors[0]
    kind = spec.dtype.kind if spec is not None else "O"
    shape = tensor.data.shape
    if kind == "S":
        return np.array(bytes_elements(tensor.data), dtype=bytes).reshape(shape)
    texts = text_elements(tensor.data, labels[tensor.name])
    if kind == "U":
        return np.array(texts, dtype=str).reshape(shape)
    return _object_array(texts).reshape(shape)


def text_elements(array: np.ndarray[Any, Any], field: str, hint: str = "") -> list[str]:
    """A BYTES tensor's elements as text, flat; bytes must be UTF-8, anything else str()."""
    if array.dtype.kind in "Mm":
        array = array.astype(str)
    texts: list[str] = []
    for index, element in enumerate(array.reshape(-1).tolist()):
        if isinstance(element, bytes):
            try:
                element = element.decode()
            except UnicodeDecodeError:
                raise RequestError(field, f"element {index} is not UTF-8 text{hint}") from None
        texts.append(element if isinstance(element, str) else str(element))
    return texts


def bytes_elements(array: np.ndarray[Any, Any]) -> list[bytes]:
    """A BYTES tensor's elements as bytes, flat: text as UTF-8, anything else str()."""
    if array.dtype.kind in "Mm":
        array = array.astype(str)
    return [
        element
        if isinstance(element, bytes)
        else (element if isinstance(element, str) else str(element)).encode()
        for element in array.reshape(-1).tolist()
    ]


# --- output ------------------------------------------------------------------------------


def oip_output_names(signature: Signature) -> tuple[str, ...]:
    """The output names the model metadata announces; infer answers with the same ones."""
    return tuple(str(output["name"]) for output in signature_as_json(signature)["outputs"])


def output_tensors(
    output: Any, output_names: Sequence[str], requested_outputs: Sequence[str]
) -> list[OipTensor]:
    """The model's output as named tensors: a DataFrame's columns and a dict's entries by
    their names, an array by `output_names` (from `oip_output_names`; one per column of a
    2-D array when the signature names that many). Only the requested outputs, in the
    order asked, if any are; an unknown one is a RequestError, as in Triton."""
    named: list[tuple[str, Any]]
    if isinstance(output, pd.DataFrame):
        named = [(str(column), output[column]) for column in output.columns]
    elif isinstance(output, dict):
        named = [(str(key), value) for key, value in output.items()]
    else:
        array = output.to_numpy() if isinstance(output, pd.Series) else np.asarray(output)
        if len(output_names) > 1 and array.ndim == 2 and array.shape[1] == len(output_names):
            named = [(name, array[:, index]) for index, name in enumerate(output_names)]
        else:
            named = [(output_names[0] if output_names else DEFAULT_OUTPUT_NAME, array)]
    tensors: dict[str, OipTensor] = {}
    for name, values in named:
        array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        tensors[name] = OipTensor(name, oip_datatype(array.dtype), array.shape, array)
    if not requested_outputs:
        return list(tensors.values())
    for name in requested_outputs:
        if name not in tensors:
            raise RequestError(
                f"outputs({name})", f"unknown output; the model has {', '.join(tensors)}"
            )
    return [tensors[name] for name in requested_outputs]


def encode_raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    """A tensor's raw little-endian contents, as decode_raw reads them."""
    if datatype == "BYTES":
        return b"".join(
            _LENGTH_PREFIX.pack(len(element)) + element for element in bytes_elements(array)
        )
    return array.astype(DATATYPES[datatype].newbyteorder("<"), copy=False).tobytes()


# --- metadata ----------------------------------------------------------------------------


def server_metadata() -> dict[str, Any]:
    """What `/v2` (and gRPC's ServerMetadata) answers."""
    return {
        "name": "mlcycle",
        "version": metadata.version("mlcycle"),
        "extensions": list(SUPPORTED_EXTENSIONS),
    }


def model_metadata(identity: ModelIdentity, model: LoadedModel) -> dict[str, Any]:
    """What `/v2/models/{name}` (and gRPC's ModelMetadata) answers: the signature's inputs
    and outputs, the outputs named as output_tensors names them."""
    return {
        "name": identity.name,
        "versions": [identity.version] if identity.version else [],
        "platform": f"mlflow_{model.flavor}",
        **signature_as_json(model.signature),
    }
