"""MLflow's scoring protocol (/invocations): JSON in its four formats, CSV and Parquet, read
as `mlflow models serve` (mlflow.pyfunc.scoring_server) reads them, and predictions written
as it writes them.

Requests: the content type is one of MLflow's three, with no parameter but a UTF-8
charset, or the answer is a 415. A JSON body is read by Python's rules (NaN literals, a
byte-order mark); CSV is read with the signature's column dtypes, as MLflow does, so a zip
code column keeps its leading zeros. Columns are taken by name whenever the signature names
them: rows without column names, as MLflow refuses them, are a 400. Params are checked
against the model's params schema before predict. Values are coerced as validation.py says.

Responses: `{"predictions": ...}` with the output as MLflow's `_get_jsonable_obj(output,
pandas_orient="records")` gives it — a DataFrame as records, a Series as records of its one
column, an array as nested lists, dicts and lists as they are — and every number the same
double as MLflow's, NaN and infinities included (see encoding.dumps_as_python).

Deliberate differences from `mlflow models serve` (MLflow 3.17):

- a request without a Content-Type is read as JSON, as mlcycle always has (MLflow fails on
  it with a 500);
- "params" that is not an object is a 400 (MLflow ignores it when the model has no params
  schema);
- the unified LLM payloads (a top-level "messages", "prompt" or "input") are not read as
  such: without one of the four formats they are a 400;
- an error raised by the model's own predict is a 500, where MLflow answers 400 ("unexpected
  error while evaluating the model"): it is the model's failure, which canary analysis must
  count, and everything that is the caller's mistake is refused before predict.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.dataplane.server.encoding import dumps, dumps_as_python, load_object_as_python
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.signature import Signature
from mlcycle.dataplane.server.validation import InputValidator, ModelInput, RequestError, row_count

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV, CONTENT_TYPE_PARQUET)
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
# The dtypes MLflow's parse_csv_input gives read_csv (Schema.pandas_types()); datetime is
# left to the validator, since read_csv refuses a datetime dtype outright.
_CSV_DTYPES: dict[str, Any] = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "string": object,
    "binary": object,
}


class UnsupportedContentTypeError(RequestError):
    """A content type, charset or content-type parameter the protocol does not take."""

    status = 415


def media_type(content_type: str) -> str:
    """The request's media type, checked as MLflow's scoring server checks the header:
    exact (case-sensitive) types, a charset that is UTF-8 (any case), no other parameter.
    No header at all is taken for JSON."""
    if not content_type:
        return CONTENT_TYPE_JSON
    mime, *pairs = (part.strip() for part in content_type.split(";"))
    parameters = dict(pair.partition("=")[::2] for pair in pairs)
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedContentTypeError("Content-Type", "the scoring server only supports UTF-8")
    unexpected = sorted(set(parameters) - {"charset"})
    if unexpected:
        raise UnsupportedContentTypeError(
            "Content-Type", f"unrecognized content type parameters: {', '.join(unexpected)}"
        )
    if mime not in CONTENT_TYPES:
        raise UnsupportedContentTypeError(
            "Content-Type", f"expected one of {', '.join(CONTENT_TYPES)}; got {content_type!r}"
        )
    return mime


def parse_invocations(body: bytes, content_type: str, validator: InputValidator) -> Inference:
    mime = media_type(content_type)
    if mime == CONTENT_TYPE_CSV:
        return _inference(_frame_input(_read_csv(body, validator.signature), validator, "csv"))
    if mime == CONTENT_TYPE_PARQUET:
        return _inference(_frame_input(_read_parquet(body), validator, "parquet"))
    document = load_object_as_python(body)
    present = [key for key in MLFLOW_FORMATS if key in document]
    if len(present) != 1:
        raise RequestError(
            "",
            f"expected exactly one of {', '.join(MLFLOW_FORMATS)}; got {sorted(document)}",
        )
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        raise RequestError("params", "expected an object")
    validator.check_params(params)
    key = present[0]
    payload = document[key]
    if key == "dataframe_split":
        model_input = _split_input(payload, validator, key)
    elif key == "dataframe_records":
        model_input = validator.records(payload, key)
    else:
        model_input = _tensor_serving_input(payload, validator, key)
    return _inference(model_input, params)


def _inference(model_input: ModelInput, params: dict[str, Any] | None = None) -> Inference:
    return Inference(model_input, row_count(model_input), params)


def _read_csv(body: bytes, signature: Signature) -> pd.DataFrame:
    dtypes = {
        spec.name: _CSV_DTYPES[spec.type]
        for spec in signature.columns
        if signature.columns_named and spec.type in _CSV_DTYPES
    }
    try:
        return pd.read_csv(io.BytesIO(body), dtype=dtypes or None)
    except (ValueError, TypeError, OverflowError) as error:  # ParserError, UnicodeDecodeError
        raise RequestError("", f"invalid CSV: {error}") from None


def _read_parquet(body: bytes) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(body))
    except (ValueError, TypeError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise RequestError("", f"invalid Parquet: {error}") from None


def _frame_input(frame: pd.DataFrame, validator: InputValidator, field: str) -> ModelInput:
    columns = {str(column): frame[column].to_numpy() for column in frame.columns}
    return validator.columns_by_name(columns, field)


def _split_input(payload: object, validator: InputValidator, field: str) -> ModelInput:
    if not isinstance(payload, dict) or "data" not in payload or set(payload) - _SPLIT_KEYS:
        raise RequestError(
            field, 'expected {"columns": [...], "data": [[...], ...]} and optionally "index"'
        )
    columns = payload.get("columns")
    if columns is None:
        _refuse_positional(validator, f"{field}.columns")
    elif not isinstance(columns, list):
        raise RequestError(f"{field}.columns", "expected a list of column names")
    data = payload["data"]
    index = payload.get("index")
    if index is not None and (
        not isinstance(index, list) or not isinstance(data, list) or len(index) != len(data)
    ):
        raise RequestError(f"{field}.index", "expected a list with one label per row of data")
    return validator.rows(data, columns, f"{field}.data")


def _tensor_serving_input(payload: object, validator: InputValidator, field: str) -> ModelInput:
    """instances and inputs (TF Serving's formats): columns by name, records or rows."""
    if isinstance(payload, Mapping):
        return validator.columns_by_name(payload, field)
    if isinstance(payload, list) and payload and all(isinstance(row, dict) for row in payload):
        return validator.records(payload, field)
    columns = validator.signature.columns
    if len(columns) == 1 and isinstance(payload, list):
        # A one-column signature takes a plain list as that column, as MLflow does.
        return validator.columns_by_name({columns[0].name: payload}, field)
    _refuse_positional(validator, field)
    return validator.rows(payload, None, field)


def _refuse_positional(validator: InputValidator, field: str) -> None:
    """Rows of bare values: MLflow matches a named signature's columns by name only."""
    signature = validator.signature
    if signature.columns and signature.columns_named:
        names = ", ".join(spec.name for spec in signature.columns)
        raise RequestError(
            field,
            f"the model's signature names its columns ({names}): send them by name "
            '(dataframe_split with "columns", records, or {"column": [values]})',
        )


def _jsonable(output: Any) -> Any:
    """MLflow's `_get_jsonable_obj(output, pandas_orient="records")`."""
    if isinstance(output, np.ndarray):
        return output.tolist()
    if isinstance(output, pd.DataFrame):
        return output.to_dict(orient="records")
    if isinstance(output, pd.Series):
        return pd.DataFrame(output).to_dict(orient="records")
    return output


def encode_invocations(output: Any) -> bytes:
    if isinstance(output, np.ndarray) and output.dtype.kind in "fiub":
        # The common output, written from the array: floats as the doubles tolist() gives.
        dtype = np.float64 if output.dtype.kind == "f" else None
        array = np.ascontiguousarray(output, dtype=dtype)
        return dumps_as_python({"predictions": array}, numpy_native=True)
    return dumps_as_python({"predictions": _jsonable(output)})


def mlflow_error(message: str, code: str) -> bytes:
    return dumps({"error_code": code, "message": message})
