"""Do the stable and the shadow backend predict the same? Read from their response bodies.

Both protocols the model server speaks are understood: MLflow scoring
(`/invocations` → `{"predictions": ...}`, or a bare list from older servers) and the Open
Inference Protocol v2 (`/v2/models/{m}[/versions/{v}]/infer` → `{"outputs": [{"name",
"shape", "data"}]}`, compared output by output, whatever order they come in).
Numbers agree within a relative 1e-6, so float32/float64 round trips are not disagreements.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import orjson

RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE = 1e-9


class Protocol(enum.Enum):
    MLFLOW = "mlflow"
    OPEN_INFERENCE = "oip"


def protocol_of(path: str) -> Protocol | None:
    if path == "/invocations":
        return Protocol.MLFLOW
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return Protocol.OPEN_INFERENCE
    return None


def predictions_of(protocol: Protocol, body: bytes) -> Any:
    """The comparable part of a response body; raises ValueError when there is none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if protocol is Protocol.MLFLOW:
        if isinstance(document, dict) and "predictions" in document:
            return document["predictions"]
        if isinstance(document, list):
            return document
        raise ValueError("no predictions in an MLflow response")
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list):
        raise ValueError("no outputs in an Open Inference Protocol response")
    return {
        str(output.get("name")): (output.get("shape"), output.get("data"))
        for output in outputs
        if isinstance(output, dict)
    }


def same_predictions(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return math.isclose(left, right, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(same_predictions, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            same_predictions(left[key], right[key]) for key in left
        )
    return bool(left == right)


def predictions_agree(protocol: Protocol, primary_body: bytes, shadow_body: bytes) -> bool:
    """Whether both responses carry the same predictions; ValueError if either has none."""
    return same_predictions(
        predictions_of(protocol, primary_body), predictions_of(protocol, shadow_body)
    )
