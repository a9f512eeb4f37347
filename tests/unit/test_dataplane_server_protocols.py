"""MLflow scoring protocol and Open Inference Protocol v2: parsing and encoding."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.oip import encode_oip_infer, parse_oip_infer
from mlcycle.dataplane.server.scoring import encode_invocations, parse_invocations
from mlcycle.dataplane.server.signature import InputValidator, RequestError, parse_signature
from mlcycle.dataplane.server.source import ModelIdentity

pytestmark = pytest.mark.unit

COLUMNS = ["a", "b"]
SIGNATURE = parse_signature(
    {
        "inputs": json.dumps([{"type": "double", "name": n, "required": True} for n in COLUMNS]),
        "outputs": json.dumps(
            [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]
        ),
    }
)
VALIDATOR = InputValidator(SIGNATURE, "ndarray")
EXPECTED = [[1.0, 2.0], [3.0, 4.0]]


def body(document: Any) -> bytes:
    return orjson.dumps(document)


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"columns": COLUMNS, "data": EXPECTED}},
        {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]]}},
        {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
        {"instances": [[1, 2], [3, 4]]},
        {"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
        {"inputs": {"a": [1, 3], "b": [2, 4]}},
        {"inputs": [[1, 2], [3, 4]]},
    ],
)
def test_every_mlflow_format_gives_the_same_model_input(document: dict[str, Any]) -> None:
    inference = parse_invocations(body(document), "application/json", VALIDATOR)
    assert inference.rows == 2
    np.testing.assert_array_equal(inference.model_input, EXPECTED)


def test_csv_and_params() -> None:
    inference = parse_invocations(b"a,b\n1,2\n3,4\n", "text/csv", VALIDATOR)
    np.testing.assert_array_equal(inference.model_input, EXPECTED)
    with_params = parse_invocations(
        body({"instances": [[1, 2]], "params": {"k": 1}}), "application/json", VALIDATOR
    )
    assert with_params.params == {"k": 1}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (body({"instances": [[1, 2]], "inputs": [[1, 2]]}), "expected exactly one of"),
        (body({"rows": [[1, 2]]}), "expected exactly one of"),
        (body({"dataframe_split": [[1, 2]]}), "dataframe_split: expected"),
        (body({"dataframe_split": {"columns": ["a"], "data": [[1]]}}), "missing column 'b'"),
        (body({"dataframe_records": [{"a": 1}]}), "dataframe_records[0].b: missing column"),
        (body({"instances": [[1, "two"]]}), "instances.b: expected double, got a string"),
        (body({"instances": [[1, 2], [3]]}), "instances[1]: expected a row of 2 values"),
        (body({"instances": [[1, 2]], "params": [1]}), "params: expected an object"),
    ],
)
def test_invalid_mlflow_requests_say_what_is_wrong(raw: bytes, says: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_invocations(raw, "application/json", VALIDATOR)
    assert says in str(caught.value)


def oip(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return body({"inputs": list(inputs), **extra})


def test_oip_accepts_one_2d_tensor_or_one_tensor_per_column() -> None:
    whole = parse_oip_infer(
        oip(
            {"name": "input-0", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}, id="r1"
        ),
        VALIDATOR,
    )
    np.testing.assert_array_equal(whole.model_input, EXPECTED)
    assert whole.request_id == "r1"
    per_column = parse_oip_infer(
        oip(
            {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [[2], [4]]},
            {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 3]},
        ),
        VALIDATOR,
    )
    np.testing.assert_array_equal(per_column.model_input, EXPECTED)


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        ({"name": "x", "shape": [2, 2], "datatype": "FP128", "data": [1, 2, 3, 4]}, "datatype"),
        ({"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3]}, "needs 4 values"),
        ({"name": "x", "shape": [1, 2], "datatype": "FP64", "data": ["p", "q"]}, "do not match"),
        ({"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}, "or a [rows, 2] tensor"),
        ({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}, "row of 2 values"),
        ({"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]}, "inputs.b: missing"),
        ({"shape": [2], "datatype": "FP64", "data": [1, 2]}, "inputs[0].name: missing"),
    ],
)
def test_invalid_oip_requests_name_the_input(tensor: dict[str, Any], says: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_oip_infer(oip(tensor), VALIDATOR)
    assert says in str(caught.value)


def test_oip_response_carries_identity_shape_and_datatype() -> None:
    inference = Inference(np.zeros((2, 2)), 2, request_id="r1")
    encoded = encode_oip_infer(np.array([0, 2]), ModelIdentity("iris", "3"), inference, ())
    assert orjson.loads(encoded) == {
        "model_name": "iris",
        "model_version": "3",
        "id": "r1",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}],
    }
    frame = pd.DataFrame({"label": ["x", "y"], "score": [0.5, 0.25]})
    outputs = orjson.loads(encode_oip_infer(frame, ModelIdentity("m", ""), inference, ()))[
        "outputs"
    ]
    assert outputs[0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}
    assert outputs[1]["datatype"] == "FP64"


def test_mlflow_responses_match_mlflow_models_serve() -> None:
    assert orjson.loads(encode_invocations(np.array([0, 2]))) == {"predictions": [0, 2]}
    frame = pd.DataFrame({"label": ["x"], "score": [0.5]})
    assert orjson.loads(encode_invocations(frame)) == {
        "predictions": [{"label": "x", "score": 0.5}]
    }
    assert orjson.loads(encode_invocations(pd.Series([1.5]))) == {"predictions": [1.5]}
    assert orjson.loads(encode_invocations(np.arange(6)[::2])) == {"predictions": [0, 2, 4]}
