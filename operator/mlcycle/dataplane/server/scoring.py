"""MLflow's scoring protocol (/invocations): JSON in its four formats, and CSV."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from mlcycle.dataplane.server.encoding import dumps, load_object
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.signature import InputValidator, RequestError, row_count

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse_invocations(body: bytes, content_type: str, validator: InputValidator) -> Inference:
    if content_type.startswith("text/csv"):
        try:
            frame = pd.read_csv(io.BytesIO(body))
        except (ValueError, pd.errors.ParserError) as error:
            raise RequestError("", f"invalid CSV: {error}") from None
        model_input = validator.columns_by_name(
            {str(column): frame[column].tolist() for column in frame.columns}, "csv"
        )
        return Inference(model_input, row_count(model_input))
    document = load_object(body)
    present = [key for key in MLFLOW_FORMATS if key in document]
    if len(present) != 1:
        raise RequestError(
            "",
            f"expected exactly one of {', '.join(MLFLOW_FORMATS)}; got {sorted(document)}",
        )
    key = present[0]
    payload = document[key]
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        raise RequestError("params", "expected an object")
    if key == "dataframe_split":
        if not isinstance(payload, dict) or "data" not in payload:
            raise RequestError(key, 'expected {"columns": [...], "data": [[...], ...]}')
        columns = payload.get("columns")
        if columns is not None and not isinstance(columns, list):
            raise RequestError(f"{key}.columns", "expected a list of column names")
        model_input = validator.rows(payload["data"], columns, f"{key}.data")
    elif key == "dataframe_records":
        model_input = validator.records(payload, key)
    elif isinstance(payload, dict):
        model_input = validator.columns_by_name(payload, key)
    elif isinstance(payload, list) and payload and all(isinstance(row, dict) for row in payload):
        model_input = validator.records(payload, key)
    else:
        model_input = validator.rows(payload, None, key)
    return Inference(model_input, row_count(model_input), params)


def encode_invocations(output: Any) -> bytes:
    return dumps({"predictions": output})


def mlflow_error(message: str, code: str) -> bytes:
    return dumps({"error_code": code, "message": message})
