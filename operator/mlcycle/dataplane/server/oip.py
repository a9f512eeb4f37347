"""The Open Inference Protocol v2 over HTTP: infer requests and responses as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlcycle.dataplane.server.encoding import dumps, load_object
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.signature import (
    InputValidator,
    RequestError,
    oip_datatype,
    row_count,
)
from mlcycle.dataplane.server.source import ModelIdentity

DEFAULT_OUTPUT_NAME = "predict"


_NUMPY_BY_OIP = {
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
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "fiu", "O": "USO"}


def _decode_tensor(item: object, field: str) -> tuple[str, np.ndarray[Any, Any]]:
    if not isinstance(item, dict):
        raise RequestError(field, "expected an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in item:
            raise RequestError(f"{field}.{key}", "missing")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    label = f"{field}({name})"
    dtype = _NUMPY_BY_OIP.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise RequestError(f"{label}.datatype", f"unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise RequestError(f"{label}.shape", f"expected a list of sizes, got {shape!r}")
    try:
        array = np.asarray(item["data"])
    except ValueError as error:
        raise RequestError(f"{label}.data", f"not a rectangular array: {error}") from None
    if array.size and array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise RequestError(f"{label}.data", f"values do not match datatype {datatype}")
    expected = int(np.prod(shape))
    if array.size != expected:
        raise RequestError(
            f"{label}.shape", f"shape {shape} needs {expected} values, data has {array.size}"
        )
    return str(name), array.astype(dtype, copy=False).reshape(shape)


def parse_oip_infer(body: bytes, validator: InputValidator) -> Inference:
    document = load_object(body)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs", "expected a non-empty list of tensors")
    tensors = dict(_decode_tensor(item, f"inputs[{i}]") for i, item in enumerate(inputs))
    requested = document.get("outputs") or []
    requested_outputs = tuple(
        str(out.get("name")) for out in requested if isinstance(out, dict) and out.get("name")
    )
    request_id = document.get("id")
    params = document.get("parameters")
    signature = validator.signature
    if signature.columns:
        column_names = {spec.name for spec in signature.columns}
        if len(tensors) == 1 and next(iter(tensors)) not in column_names:
            # One 2-D tensor holding every column, in signature order (KServe-style clients).
            only = next(iter(tensors.values()))
            if only.ndim != 2:
                name = next(iter(tensors))
                raise RequestError(
                    f"inputs[0]({name})",
                    f"expected a column named one of {sorted(column_names)} "
                    f"or a [rows, {len(column_names)}] tensor",
                )
            model_input = validator.rows(only, None, f"inputs[0]({next(iter(tensors))})")
        else:
            columns = {}
            for index, (name, array) in enumerate(tensors.items()):
                if array.ndim == 2 and array.shape[1] == 1:
                    array = array[:, 0]
                if array.ndim != 1:
                    raise RequestError(
                        f"inputs[{index}]({name}).shape",
                        "a column input has shape [rows] or [rows, 1]",
                    )
                columns[name] = array
            model_input = validator.columns_by_name(columns, "inputs")
    else:
        model_input = validator.tensors(dict(tensors), "inputs")
    return Inference(
        model_input,
        row_count(model_input),
        params if isinstance(params, dict) else None,
        str(request_id) if request_id is not None else None,
        requested_outputs,
    )


def _tensor(name: str, values: Any) -> dict[str, Any]:
    array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    datatype = oip_datatype(array.dtype)
    data: Any = array.reshape(-1)
    if datatype == "BYTES":
        data = [value if isinstance(value, str) else str(value) for value in data.tolist()]
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def oip_outputs(output: Any, output_names: tuple[str, ...]) -> list[dict[str, Any]]:
    if isinstance(output, pd.DataFrame):
        return [_tensor(str(column), output[column]) for column in output.columns]
    if isinstance(output, dict):
        return [_tensor(str(key), value) for key, value in output.items()]
    name = output_names[0] if len(output_names) == 1 else DEFAULT_OUTPUT_NAME
    return [_tensor(name, output)]


def encode_oip_infer(
    output: Any, identity: ModelIdentity, inference: Inference, output_names: tuple[str, ...]
) -> bytes:
    outputs = oip_outputs(output, output_names)
    if inference.requested_outputs:
        outputs = [tensor for tensor in outputs if tensor["name"] in inference.requested_outputs]
    document: dict[str, Any] = {
        "model_name": identity.name,
        "model_version": identity.version,
        "outputs": outputs,
    }
    if inference.request_id is not None:
        document["id"] = inference.request_id
    return dumps(document)


def oip_error(message: str) -> bytes:
    return dumps({"error": message})
