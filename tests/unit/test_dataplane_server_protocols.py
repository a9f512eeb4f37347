"""MLflow scoring protocol: parsing and encoding (OIP v2 is in test_dataplane_server_oip.py)."""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from mlcycle.dataplane.server.scoring import (
    UnsupportedContentTypeError,
    encode_invocations,
    media_type,
    parse_invocations,
)
from mlcycle.dataplane.server.signature import parse_signature
from mlcycle.dataplane.server.validation import InputValidator, RequestError
from tests.unit.signatures import COLUMNS, EXPECTED, SIGNATURE, VALIDATOR, columns_signature

pytestmark = pytest.mark.unit

# A table with a string column that looks numeric, as a pipeline with an encoder takes it.
TABLE = InputValidator(
    columns_signature(("zip", "string"), ("rooms", "long"), ("area", "double", False)),
    "dataframe",
    takes_missing=True,
)


def body(document: Any) -> bytes:
    return orjson.dumps(document)


def refusal(raw: bytes, content_type: str = "application/json", validator: Any = None) -> str:
    with pytest.raises(RequestError) as caught:
        parse_invocations(raw, content_type, validator or VALIDATOR)
    return str(caught.value)


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"columns": COLUMNS, "data": EXPECTED}},
        {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]], "index": [7, 8]}},
        {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
        {"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
        {"instances": {"a": [1, 3], "b": [2, 4]}},
        {"inputs": {"a": [1, 3], "b": [2, 4]}},
        {"inputs": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
    ],
)
def test_every_mlflow_format_gives_the_same_model_input(document: dict[str, Any]) -> None:
    inference = parse_invocations(body(document), "application/json", VALIDATOR)
    assert inference.rows == 2
    np.testing.assert_array_equal(inference.model_input, EXPECTED)


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"data": EXPECTED}},
        {"instances": EXPECTED},
        {"inputs": EXPECTED},
        {"inputs": [1.0, 2.0]},
    ],
)
def test_rows_without_column_names_are_refused_as_mlflow_refuses_them(
    document: dict[str, Any],
) -> None:
    assert "the model's signature names its columns (a, b)" in refusal(body(document))


def test_a_one_column_signature_takes_a_plain_list_as_its_column() -> None:
    validator = InputValidator(
        parse_signature({"inputs": json.dumps([{"type": "double", "name": "x"}])}), "ndarray"
    )
    for key in ("inputs", "instances"):
        inference = parse_invocations(body({key: [1, 2, 3]}), "application/json", validator)
        np.testing.assert_array_equal(inference.model_input, [[1.0], [2.0], [3.0]])


def test_csv_and_params() -> None:
    inference = parse_invocations(b"a,b\n1,2\n3,4\n", "text/csv", VALIDATOR)
    np.testing.assert_array_equal(inference.model_input, EXPECTED)
    with_params = parse_invocations(
        body({"inputs": {"a": [1], "b": [2]}, "params": {"k": 1}}), "application/json", VALIDATOR
    )
    assert with_params.params == {"k": 1}


def test_csv_is_read_with_the_signatures_dtypes_keeping_leading_zeros() -> None:
    raw = "\ufeffzip,rooms,area\n02134,3,\n10001,2,55.5\n".encode()
    frame = parse_invocations(raw, "text/csv; charset=utf-8", TABLE).model_input
    assert isinstance(frame, pd.DataFrame)
    assert frame["zip"].tolist() == ["02134", "10001"]
    assert frame["rooms"].tolist() == [3, 2]
    assert np.isnan(frame["area"][0])
    # An empty cell in a long column: no integer holds it, so MLflow refuses it too.
    assert "invalid CSV" in refusal(b"zip,rooms\n1,\n", "text/csv", TABLE)
    assert "invalid CSV" in refusal(b"zip,rooms\n\xff\xfe,1\n", "text/csv", TABLE)


def test_parquet_is_read_like_csv() -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"zip": ["02134"], "rooms": [3], "area": [1.5]}).to_parquet(buffer)
    frame = parse_invocations(buffer.getvalue(), "application/vnd.apache.parquet", TABLE)
    assert isinstance(frame.model_input, pd.DataFrame)
    assert frame.model_input.to_dict(orient="records") == [
        {"zip": "02134", "rooms": 3, "area": 1.5}
    ]
    assert "invalid Parquet" in refusal(b"not parquet", "application/vnd.apache.parquet")


def test_json_is_read_as_pythons_json_reads_it() -> None:
    document = '{"dataframe_records": [{"zip": 2134, "rooms": 3.0, "area": NaN}]}'
    for raw in (document.encode(), b"\xef\xbb\xbf" + document.encode(), document.encode("utf-16")):
        frame = parse_invocations(raw, "application/json", TABLE).model_input
        assert isinstance(frame, pd.DataFrame)
        assert frame["zip"].tolist() == ["2134"]
        assert frame["rooms"].tolist() == [3]
        assert np.isnan(frame["area"][0])


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", "application/json"),
        ("application/json; charset=UTF-8", "application/json"),
        ("text/csv;charset=utf-8", "text/csv"),
        ("application/vnd.apache.parquet", "application/vnd.apache.parquet"),
        ("", "application/json"),  # no header: MLflow fails with a 500, mlcycle reads JSON
        ("application/json; charset=latin-1", None),
        ("application/json; format=pandas-split", None),
        ("application/json;", None),  # an empty parameter is still a parameter to MLflow
        ("Application/JSON", None),
        ("text/plain", None),
        ("application/x-www-form-urlencoded", None),
    ],
)
def test_content_types_follow_mlflows_rules(content_type: str, accepted: str | None) -> None:
    if accepted is not None:
        assert media_type(content_type) == accepted
        return
    with pytest.raises(UnsupportedContentTypeError) as caught:
        parse_invocations(body({"inputs": {"a": [1], "b": [2]}}), content_type, VALIDATOR)
    assert caught.value.status == 415


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (body({"instances": [[1, 2]], "inputs": [[1, 2]]}), "expected exactly one of"),
        (body({"rows": [[1, 2]]}), "expected exactly one of"),
        (body({"dataframe_split": [[1, 2]]}), "dataframe_split: expected"),
        (body({"dataframe_split": {"columns": ["a"], "data": [[1]]}}), "missing column 'b'"),
        (body({"dataframe_split": {"data": [[1, 2]], "cols": COLUMNS}}), "optionally"),
        (
            body({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2]], "index": [1, 2]}}),
            "dataframe_split.index: expected a list with one label per row",
        ),
        (
            body({"dataframe_split": {"columns": ["a", "b", "a"], "data": [[1, 2, 3]]}}),
            "column 'a' appears more than once",
        ),
        (body({"dataframe_records": [{"a": 1}]}), "dataframe_records[0].b: missing column"),
        (body({"inputs": {"a": [1], "b": ["two"]}}), "inputs.b: expected double, got a string"),
        (
            body({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2], [3]]}}),
            "dataframe_split.data[1]: expected a row of 2 values",
        ),
        (body({"inputs": {"a": [1], "b": [2]}, "params": [1]}), "params: expected an object"),
    ],
)
def test_invalid_mlflow_requests_say_what_is_wrong(raw: bytes, says: str) -> None:
    assert says in refusal(raw)


def test_params_are_checked_before_predict() -> None:
    def check(params: Any) -> None:
        if not isinstance(params.get("scale", 1.0), float):
            raise RequestError("params.scale", "expected double")

    validator = InputValidator(SIGNATURE, "dataframe", check_params=check)
    document = {"inputs": {"a": [1], "b": [2]}, "params": {"scale": "big"}}
    assert "params.scale: expected double" in refusal(body(document), validator=validator)
    document["params"] = {"scale": 2.0}
    assert parse_invocations(body(document), "application/json", validator).params == {"scale": 2.0}


def as_mlflow_writes(output: Any) -> str:
    from mlflow.pyfunc.scoring_server import predictions_to_json

    written = io.StringIO()
    predictions_to_json(output, written)
    return written.getvalue()


def read_back(text: str | bytes) -> Any:
    # NaN and Infinity read back as their names, so documents holding them compare equal.
    return json.loads(text, parse_constant=str)


@pytest.mark.parametrize(
    "output",
    [
        np.array([0, 2]),
        np.arange(6)[::2],
        np.array([0.25626945, 1e-7, 3e38], dtype=np.float32),
        np.array([[0.1, 0.9], [0.5, 0.5]]),
        np.array([1.5, np.nan, np.inf, -np.inf]),
        np.array([True, False]),
        np.array(["x", "y"]),
        np.array([b"\x00\xff"]),
        np.array([2**64 - 1], dtype=np.uint64),
        pd.DataFrame({"label": ["x", "y"], "score": np.array([0.1, np.nan], dtype=np.float32)}),
        pd.DataFrame({"when": [pd.Timestamp("2026-01-02 03:04:05.000000007")]}),
        pd.Series([1.5, 2.5]),
        pd.Series(np.array([0.1], dtype=np.float32), name="ratio"),
        {"score": np.array([0.1], dtype=np.float32), "label": np.array(["a"])},
        [np.float32(0.1), 1, "x", None],
        [datetime.date(2026, 1, 2), 10**30],
        "text",
    ],
    ids=lambda output: type(output).__name__,
)
def test_mlflow_responses_match_mlflow_models_serve(output: Any) -> None:
    encoded = encode_invocations(output)
    assert read_back(encoded) == read_back(as_mlflow_writes(output))


def test_non_finite_numbers_are_written_as_pythons_json_writes_them() -> None:
    encoded = encode_invocations(np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32))
    assert encoded == b'{"predictions": [NaN, Infinity, -Infinity, 0.5]}'
    # Without them the response is orjson's, compact.
    assert encode_invocations(np.array([0.25626945], dtype=np.float32)) == (
        b'{"predictions":[0.2562694549560547]}'
    )
