"""JSON in and out of the server: orjson with numpy and pandas values, and, for MLflow's
scoring protocol, JSON read and written as Python's json module does in MLflow's server."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pydantic

from mlcycle.dataplane.server.validation import RequestError


def _json_default(value: Any) -> Any:
    # orjson serializes contiguous numeric arrays natively; everything else comes here.
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return value.to_dict(orient="records")
    if isinstance(value, pd.Series):
        return value.tolist()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(document: Any) -> bytes:
    return orjson.dumps(
        document, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC
    )


def _as_object(document: object) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise RequestError("", "expected a JSON object")
    return document


def load_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError("", f"invalid JSON: {error}") from None
    return _as_object(document)


def load_object_as_python(body: bytes) -> dict[str, Any]:
    """A JSON object as Python's json.loads reads it, which MLflow's scoring server uses.

    That also takes NaN and ±Infinity literals (how Python and pandas clients write missing
    and infinite values), a UTF-8 byte-order mark, and UTF-16 or UTF-32 text. orjson reads
    the rest, which is nearly every request, several times faster.
    """
    try:
        return _as_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        pass
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError("", f"invalid JSON: {error}") from None
    return _as_object(document)


def _numpy_encoder_default(value: Any) -> Any:
    """What MLflow's NumpyEncoder (mlflow.utils.proto_json_utils) makes of values JSON has no
    type for, in its order: arrays as lists, numpy scalars as Python's, bytes in base64."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_converted_or_same(item) for item in value.tolist()]
        if value.dtype.kind == "S":
            return [_base64(item) for item in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes | bytearray):
        return _base64(value)
    if isinstance(value, pd.Timestamp | datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _converted_or_same(value: Any) -> Any:
    try:
        return _numpy_encoder_default(value)
    except TypeError:
        return value


def _base64(value: bytes | bytearray) -> str:
    return base64.encodebytes(value).decode("ascii")


def dumps_as_python(document: Any, *, numpy_native: bool = False) -> bytes:
    """The document as MLflow's scoring server writes it: json.dumps with its NumpyEncoder.

    orjson writes it when that reads back the same: numbers are the same doubles (float32
    values become the doubles Python's float gives them, as `tolist` does in MLflow, never
    float32's shorter text). Python writes NaN and ±Infinity as the literals NaN and
    Infinity, which MLflow's clients read back (Python's json and pandas do) and orjson
    would write as null: a document with null in it, and one orjson cannot write (integers
    past 64 bits), is written by json itself.

    `numpy_native` lets orjson write numpy arrays itself, several times faster than through
    lists; only for documents whose numpy values are all float64, integer or boolean,
    since orjson writes float32 with float32's shorter text.
    """
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_SERIALIZE_NUMPY if numpy_native else 0)
    try:
        encoded = orjson.dumps(document, default=_numpy_encoder_default, option=option)
    except orjson.JSONEncodeError:
        encoded = None
    if encoded is not None and b"null" not in encoded:
        return encoded
    return json.dumps(document, default=_numpy_encoder_default).encode()
