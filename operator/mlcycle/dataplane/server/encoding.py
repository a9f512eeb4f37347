"""JSON in and out of the server: orjson with numpy and pandas values."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd

from mlcycle.dataplane.server.signature import RequestError


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


def load_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError("", f"invalid JSON: {error}") from None
    if not isinstance(document, dict):
        raise RequestError("", "expected a JSON object")
    return document
