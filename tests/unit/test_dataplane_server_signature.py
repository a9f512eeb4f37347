"""Signature validation: requests become the model's input or a RequestError naming the field."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlcycle.dataplane.server.signature import (
    InputValidator,
    RequestError,
    parse_signature,
    row_count,
    signature_as_json,
)

pytestmark = pytest.mark.unit

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def column_signature(*columns: tuple[str, str, bool]) -> dict[str, str]:
    inputs = [
        {"type": kind, "name": name, "required": required} for name, kind, required in columns
    ]
    outputs = [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]
    return {"inputs": json.dumps(inputs), "outputs": json.dumps(outputs)}


IRIS = parse_signature(column_signature(*[(name, "double", True) for name in IRIS_COLUMNS]))
MIXED = parse_signature(
    column_signature(("age", "long", True), ("city", "string", True), ("score", "double", False))
)
TENSOR = parse_signature(
    {
        "inputs": json.dumps(
            [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2, 2]}}]
        )
    }
)


def error_of(call: object, *args: object) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_numeric_rows_become_one_float_array_in_the_models_column_order() -> None:
    fitted_order = list(reversed(IRIS_COLUMNS))
    validator = InputValidator(IRIS, "ndarray", fitted_order)
    result = validator.rows([[1, 2.5, 3, 4], [5, 6, 7, 8]], IRIS_COLUMNS, "dataframe_split.data")
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, [[4, 3, 2.5, 1], [8, 7, 6, 5]])


def test_extra_columns_are_ignored_and_order_follows_names() -> None:
    validator = InputValidator(IRIS, "ndarray")
    columns = ["extra", *reversed(IRIS_COLUMNS)]
    result = validator.rows([[99, 4, 3, 2, 1]], columns, "dataframe_split.data")
    np.testing.assert_array_equal(result, [[1, 2, 3, 4]])


@pytest.mark.parametrize(
    ("data", "columns", "field", "says"),
    [
        ([[1, 2, 3]], IRIS_COLUMNS[:3], "dataframe_split.columns", "missing column 'petal width"),
        ([[1, 2, 3, 4], [1, 2, 3]], None, "dataframe_split.data[1]", "expected a row of 4 values"),
        ([[1, "x", 3, 4]], None, "dataframe_split.data.sepal width (cm)", "got a string 'x'"),
        ([[1, 2, None, 4]], None, "dataframe_split.data.petal length (cm)", "missing value"),
        (
            [[1, 2, 3, [4]]],
            None,
            "dataframe_split.data.petal width (cm)",
            "one double value per row",
        ),
        ("rows", None, "dataframe_split.data", "expected a list of rows"),
    ],
)
def test_wrong_rows_name_the_field(
    data: object, columns: list[str] | None, field: str, says: str
) -> None:
    error = error_of(InputValidator(IRIS, "ndarray").rows, data, columns, "dataframe_split.data")
    assert error.field == field
    assert says in str(error)


def test_records_name_the_row_and_column_that_is_missing() -> None:
    validator = InputValidator(IRIS, "ndarray")
    complete = dict.fromkeys(IRIS_COLUMNS, 1.0)
    partial = {k: v for k, v in complete.items() if k != "sepal width (cm)"}
    error = error_of(validator.records, [complete, partial], "dataframe_records")
    assert error.field == "dataframe_records[1].sepal width (cm)"
    assert "missing column" in str(error)
    np.testing.assert_array_equal(validator.records([complete], "x"), [[1.0, 1.0, 1.0, 1.0]])


def test_mixed_types_become_a_typed_dataframe_and_optional_columns_fill_with_nan() -> None:
    validator = InputValidator(MIXED, "ndarray")
    frame = validator.records([{"age": 3, "city": "Oslo"}], "dataframe_records")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["age", "city", "score"]
    assert frame["age"].dtype == np.int64
    assert np.isnan(frame["score"][0])


@pytest.mark.parametrize(
    ("records", "field", "says"),
    [
        ([{"age": 3.5, "city": "Oslo"}], "dataframe_records.age", "expected long, got a float 3.5"),
        ([{"age": 3, "city": 7}], "dataframe_records.city", "expected string, got an integer 7"),
        ([{"age": True, "city": "a"}], "dataframe_records.age", "expected long, got a boolean"),
    ],
)
def test_type_mismatches_are_refused_with_the_column_name(
    records: list[dict[str, object]], field: str, says: str
) -> None:
    error = error_of(InputValidator(MIXED, "dataframe").records, records, "dataframe_records")
    assert error.field == field
    assert says in str(error)


def test_columns_by_name_checks_lengths() -> None:
    validator = InputValidator(IRIS, "ndarray")
    columns = {name: [1.0, 2.0] for name in IRIS_COLUMNS}
    assert validator.columns_by_name(columns, "inputs").shape == (2, 4)
    columns["petal width (cm)"] = [1.0]
    error = error_of(validator.columns_by_name, columns, "inputs")
    assert error.field == "inputs.petal width (cm)"


def test_tensor_signatures_check_dtype_and_shape() -> None:
    validator = InputValidator(TENSOR, "ndarray")
    result = validator.rows([[[1, 2], [3, 4]]], None, "instances")
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    assert result.shape == (1, 2, 2)
    shape_error = error_of(validator.rows, [[1, 2, 3]], None, "instances")
    assert "expected shape [-1, 2, 2], got [1, 3]" in str(shape_error)
    type_error = error_of(validator.tensors, {None: [[["a", "b"], ["c", "d"]]]}, "inputs")
    assert "expected float32 values, got a string" in str(type_error)


def test_no_signature_passes_rows_through() -> None:
    unsigned = parse_signature(None)
    assert not unsigned.known
    array = InputValidator(unsigned, "ndarray").rows([[1, 2]], None, "instances")
    assert isinstance(array, np.ndarray)
    frame = InputValidator(unsigned, "dataframe").rows([[1, 2]], ["a", "b"], "x")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["a", "b"]


def test_row_count_and_metadata() -> None:
    assert row_count(np.zeros((3, 4))) == 3
    assert row_count({"a": np.zeros(5)}) == 5
    metadata = signature_as_json(IRIS)
    assert metadata["inputs"][0] == {"name": IRIS_COLUMNS[0], "datatype": "FP64", "shape": [-1]}
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
