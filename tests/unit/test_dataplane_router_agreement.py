"""Prediction agreement between the stable and the shadow response, for both protocols."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mlcycle.dataplane.router.agreement import (
    Protocol,
    predictions_agree,
    predictions_of,
    protocol_of,
)

pytestmark = pytest.mark.unit


def _body(document: Any) -> bytes:
    return orjson.dumps(document)


def _oip(*outputs: tuple[str, list[Any]]) -> bytes:
    return _body(
        {
            "model_name": "iris",
            "outputs": [
                {"name": name, "shape": [len(data)], "datatype": "FP64", "data": data}
                for name, data in outputs
            ],
        }
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/invocations", Protocol.MLFLOW),
        ("/v2/models/iris/infer", Protocol.OPEN_INFERENCE),
        ("/v2/models/iris/versions/3/infer", Protocol.OPEN_INFERENCE),
        ("/v2/models/iris", None),
        ("/v2/health/ready", None),
        ("/ping", None),
    ],
)
def test_protocol_from_path(path: str, expected: Protocol | None) -> None:
    assert protocol_of(path) is expected


@pytest.mark.parametrize(
    ("primary", "shadow", "agree"),
    [
        pytest.param({"predictions": [0, 1, 2]}, {"predictions": [0, 1, 2]}, True, id="same"),
        pytest.param({"predictions": [0, 1, 2]}, {"predictions": [0, 2, 2]}, False, id="differ"),
        pytest.param({"predictions": [0, 1]}, {"predictions": [0, 1, 2]}, False, id="length"),
        pytest.param(
            {"predictions": [0.1, 0.2]},
            {"predictions": [0.1 + 1e-9, 0.2]},
            True,
            id="float rounding",
        ),
        pytest.param({"predictions": [0.1]}, {"predictions": [0.11]}, False, id="float differs"),
        pytest.param({"predictions": [1]}, {"predictions": [1.0]}, True, id="int and float"),
        pytest.param({"predictions": ["setosa"]}, {"predictions": ["setosa"]}, True, id="labels"),
        pytest.param(
            {"predictions": {"label": [0], "score": [0.9]}},
            {"predictions": {"score": [0.9], "label": [0]}},
            True,
            id="columns in any order",
        ),
        pytest.param(
            {"predictions": [{"label": 0}]}, {"predictions": [{"label": 1}]}, False, id="records"
        ),
        pytest.param([0, 1], {"predictions": [0, 1]}, True, id="bare list (older servers)"),
        pytest.param({"predictions": [True]}, {"predictions": [1]}, False, id="bool is not 1"),
    ],
)
def test_mlflow_agreement(primary: Any, shadow: Any, agree: bool) -> None:
    assert predictions_agree(Protocol.MLFLOW, _body(primary), _body(shadow)) is agree


@pytest.mark.parametrize(
    ("primary", "shadow", "agree"),
    [
        pytest.param(_oip(("predict", [0, 1])), _oip(("predict", [0, 1])), True, id="same"),
        pytest.param(_oip(("predict", [0, 1])), _oip(("predict", [1, 1])), False, id="differ"),
        pytest.param(
            _oip(("label", [0]), ("proba", [0.9])),
            _oip(("proba", [0.9]), ("label", [0])),
            True,
            id="outputs in any order",
        ),
        pytest.param(_oip(("predict", [0])), _oip(("other", [0])), False, id="names differ"),
        pytest.param(
            _oip(("predict", [0])),
            _oip(("predict", [0]), ("extra", [1])),
            False,
            id="extra output",
        ),
    ],
)
def test_open_inference_agreement(primary: bytes, shadow: bytes, agree: bool) -> None:
    assert predictions_agree(Protocol.OPEN_INFERENCE, primary, shadow) is agree


def test_shape_matters_for_open_inference() -> None:
    flat = _body({"outputs": [{"name": "p", "shape": [4], "data": [1, 2, 3, 4]}]})
    square = _body({"outputs": [{"name": "p", "shape": [2, 2], "data": [1, 2, 3, 4]}]})
    assert not predictions_agree(Protocol.OPEN_INFERENCE, flat, square)


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        (Protocol.MLFLOW, b"not json"),
        (Protocol.MLFLOW, b'{"error_code": "BAD_REQUEST"}'),
        (Protocol.OPEN_INFERENCE, b'{"predictions": [1]}'),
        (Protocol.OPEN_INFERENCE, b"[1, 2]"),
    ],
)
def test_bodies_without_predictions_are_refused(protocol: Protocol, body: bytes) -> None:
    with pytest.raises(ValueError, match=r"not JSON|no predictions|no outputs"):
        predictions_of(protocol, body)
