"""Signature validation: requests become the model's input or a RequestError naming the field."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlcycle.dataplane.server.flavors import sklearn_takes_missing
from mlcycle.dataplane.server.signature import parse_signature, signature_as_json
from mlcycle.dataplane.server.validation import InputValidator, RequestError, row_count

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
    validator = InputValidator(MIXED, "ndarray", takes_missing=True)
    frame = validator.records([{"age": 3, "city": "Oslo"}], "dataframe_records")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["age", "city", "score"]
    assert frame["age"].dtype == np.int64
    assert np.isnan(frame["score"][0])


@pytest.mark.parametrize(
    ("records", "field", "says"),
    [
        ([{"age": 3.5, "city": "Oslo"}], "dataframe_records.age", "expected long, got a float 3.5"),
        (
            [{"age": 3, "city": {"name": "Oslo"}}],
            "dataframe_records.city",
            "expected string, got a mixed or null value {'name': 'Oslo'}",
        ),
        ([{"age": None, "city": "a"}], "dataframe_records.age", "a long column cannot hold one"),
        ([{"age": "3.0", "city": "a"}], "dataframe_records.age", "expected long, got a string"),
        ([{"age": True, "city": "a"}], "dataframe_records.age", "expected long, got a boolean"),
    ],
)
def test_type_mismatches_are_refused_with_the_column_name(
    records: list[dict[str, object]], field: str, says: str
) -> None:
    error = error_of(InputValidator(MIXED, "dataframe").records, records, "dataframe_records")
    assert error.field == field
    assert says in str(error)


@pytest.mark.parametrize(
    ("column_type", "sent", "received"),
    [
        ("double", ["5.1", 2, None, "nan"], [5.1, 2.0, np.nan, np.nan]),
        ("float", ["0.5", 1], np.array([0.5, 1], dtype=np.float32)),
        ("long", [3.0, "4", -2], [3, 4, -2]),
        ("integer", [np.float64(7.0)], np.array([7], dtype=np.int32)),
        # Zip codes and ids sent as numbers reach a string column as their text.
        ("string", [2134, "0150", True, 1.5, None], ["2134", "0150", "True", "1.5", None]),
    ],
)
def test_values_are_coerced_as_mlflows_schema_enforcement_does(
    column_type: str, sent: list[object], received: object
) -> None:
    signature = parse_signature(column_signature(("x", column_type, True), ("y", "long", True)))
    validator = InputValidator(signature, "dataframe", takes_missing=True)
    frame = validator.columns_by_name({"x": sent, "y": [0] * len(sent)}, "inputs")
    assert isinstance(frame, pd.DataFrame)
    if column_type == "string":
        assert list(frame["x"].astype(object).where(frame["x"].notna(), None)) == received
    else:
        np.testing.assert_array_equal(frame["x"].to_numpy(), np.asarray(received))
        assert frame["x"].dtype == np.asarray(received).dtype


@pytest.mark.parametrize(
    ("column_type", "value", "says"),
    [
        # MLflow would truncate 3.5 to 3 and make True 1: values changed, so refused here.
        ("long", 3.5, "expected long, got a float 3.5 at row 0"),
        ("long", True, "expected long, got a boolean True"),
        ("double", True, "expected double, got a boolean True"),
        ("double", "abc", "expected double, got a string 'abc'"),
        ("double", [1.0], "expected one double value per row, got nested values at row 0"),
        ("integer", None, "missing value at row 0: a integer column cannot hold one"),
        ("boolean", "false", "expected boolean, got a string 'false'"),
    ],
)
def test_values_mlflow_would_change_are_refused(column_type: str, value: object, says: str) -> None:
    signature = parse_signature(column_signature(("x", column_type, True)))
    validator = InputValidator(signature, "dataframe", takes_missing=True)
    error = error_of(validator.records, [{"x": value}], "dataframe_records")
    assert error.field == "dataframe_records.x"
    assert says in str(error)


def test_missing_values_reach_only_the_columns_a_model_takes_them_in() -> None:
    validator = InputValidator(MIXED, "ndarray", takes_missing=frozenset({"city", "score"}))
    frame = validator.records(
        [{"age": 3, "city": None, "score": None}, {"age": 4, "city": "Oslo", "score": 1}], "r"
    )
    assert isinstance(frame, pd.DataFrame)
    assert frame["city"].isna().tolist() == [True, False]
    assert np.isnan(frame["score"][0])
    refusing = InputValidator(MIXED, "ndarray", takes_missing=frozenset({"city"}))
    error = error_of(refusing.records, [{"age": 3, "city": "a", "score": float("nan")}], "r")
    assert error.field == "r.score"
    assert "missing value at row 0: this model cannot take missing values" in str(error)
    # An optional column left out is all missing: filled only for a model that takes that.
    absent = error_of(refusing.records, [{"age": 3, "city": "a"}], "r")
    assert absent.field == "r.score"
    assert "optional in the signature, but this model cannot take missing values" in str(absent)


def test_pyfunc_layout_leaves_an_absent_optional_column_out_as_mlflow_does() -> None:
    validator = InputValidator(MIXED, "dataframe", takes_missing=True)
    frame = validator.records([{"age": 3, "city": "Oslo"}], "dataframe_records")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["age", "city"]
    columns = validator.columns_by_name({"age": [3], "city": ["Oslo"]}, "inputs")
    assert isinstance(columns, pd.DataFrame)
    assert list(columns.columns) == ["age", "city"]


def test_a_record_without_a_required_column_is_refused_but_an_optional_one_is_missing() -> None:
    validator = InputValidator(MIXED, "dataframe", takes_missing=True)
    frame = validator.records([{"age": 1, "city": "a", "score": 2}, {"age": 2, "city": "b"}], "r")
    assert isinstance(frame, pd.DataFrame)
    assert np.isnan(frame["score"][1])
    error = error_of(validator.records, [{"age": 1, "city": "a"}, {"city": "b"}], "r")
    assert error.field == "r[1].age"


@pytest.mark.parametrize(
    ("rows", "field", "says"),
    [
        ([[1, 2, 3, 4], [5, float("nan"), 7, 8]], "x.sepal width (cm)", "missing value at row 1"),
        ([[1, 2, float("inf"), 4]], "x.petal length (cm)", "infinite value at row 0"),
        ([[1, 2, 3, None]], "x.petal width (cm)", "missing value at row 0"),
    ],
)
def test_the_array_fast_path_refuses_nan_and_infinity_naming_row_and_column(
    rows: list[list[float]], field: str, says: str
) -> None:
    validator = InputValidator(IRIS, "ndarray", takes_infinite=False)
    error = error_of(validator.rows, rows, IRIS_COLUMNS, "x")
    assert error.field == field
    assert says in str(error)


def test_a_model_that_takes_nan_but_not_infinity_gets_nan() -> None:
    validator = InputValidator(IRIS, "ndarray", takes_missing=True, takes_infinite=False)
    array = validator.rows([[1, float("nan"), 3, 4]], IRIS_COLUMNS, "x")
    assert isinstance(array, np.ndarray)
    assert np.isnan(array[0, 1])
    error = error_of(validator.rows, [[1, float("-inf"), 3, 4]], IRIS_COLUMNS, "x")
    assert "infinite value at row 0" in str(error)


def test_tensors_and_unsigned_input_refuse_nan_for_a_model_that_cannot_take_it() -> None:
    refusing = InputValidator(TENSOR, "ndarray")
    error = error_of(refusing.rows, [[[1, float("nan")], [3, 4]]], None, "instances")
    assert "missing value at row 0" in str(error)
    taking = InputValidator(TENSOR, "ndarray", takes_missing=True)
    assert np.isnan(taking.rows([[[1, float("nan")], [3, 4]]], None, "instances")).any()
    unsigned = InputValidator(parse_signature(None), "ndarray")
    assert "missing value" in str(error_of(unsigned.rows, [[1.0, float("nan")]], None, "x"))
    frame_error = error_of(unsigned.records, [{"a": 1.0}, {"a": None}], "r")
    assert frame_error.field == "r.a"


def test_a_signature_column_sent_twice_is_refused() -> None:
    validator = InputValidator(IRIS, "ndarray")
    columns = [*IRIS_COLUMNS, IRIS_COLUMNS[0]]
    error = error_of(validator.rows, [[1, 2, 3, 4, 5]], columns, "dataframe_split.data")
    assert error.field == "dataframe_split.columns"
    assert "appears more than once" in str(error)
    # A column the signature does not have is ignored, twice or not, as MLflow does.
    extra = validator.rows([[1, 2, 3, 4, 9, 9]], [*IRIS_COLUMNS, "x", "x"], "x")
    np.testing.assert_array_equal(extra, [[1, 2, 3, 4]])


def test_params_are_checked_only_when_sent() -> None:
    checked: list[dict[str, object]] = []

    def check(params: object) -> None:
        checked.append(dict(params))  # type: ignore[call-overload]
        raise RequestError("params.k", "expected double")

    validator = InputValidator(IRIS, "ndarray", check_params=check)
    validator.check_params(None)
    validator.check_params({})
    assert "params.k" in str(error_of(validator.check_params, {"k": "x"}))
    assert checked == [{"k": "x"}]
    InputValidator(IRIS, "ndarray").check_params({"k": "x"})  # no params schema: ignored


def test_sklearn_models_take_missing_values_where_their_steps_do() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame(
        {
            "city": ["a", "b", "a", "b"],
            "zip": ["1", "2", "1", "2"],
            "rooms": [1.0, 2.0, 3.0, 4.0],
            "area": [5.0, 6.0, 7.0, 8.0],
            "age": [1.0, np.nan, 3.0, 4.0],
        }
    )
    target = [1.0, 2.0, 3.0, 4.0]
    signature = parse_signature(column_signature(*((name, "any", True) for name in frame)))
    steps = ColumnTransformer(
        [
            ("ignoring", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ("strict", OneHotEncoder(), ["zip"]),
            ("imputed", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), [4]),
            # A scaler allows NaN and passes it on, to a regressor that refuses it.
            ("scaled", StandardScaler(), ["rooms"]),
            ("dropped", "drop", ["area"]),
        ]
    )
    linear = Pipeline([("pre", steps), ("model", LinearRegression())]).fit(frame, target)
    assert sklearn_takes_missing(linear, signature) == frozenset({"city", "age", "area"})
    # The same columns before a model that takes NaN: only the strict encoder refuses it.
    trees = Pipeline([("pre", steps), ("model", HistGradientBoostingRegressor())])
    trees.fit(frame, target)
    assert sklearn_takes_missing(trees, signature) == frozenset({"city", "age", "area", "rooms"})
    numbers = frame[["rooms", "area"]].to_numpy()
    tensor = parse_signature(None)
    assert sklearn_takes_missing(LinearRegression().fit(numbers, target), tensor) is False
    fitted = HistGradientBoostingRegressor().fit(numbers, target)
    assert sklearn_takes_missing(fitted, tensor) is True


def test_signatures_say_whether_their_columns_are_named() -> None:
    assert IRIS.columns_named
    unnamed = parse_signature({"inputs": json.dumps([{"type": "double"}, {"type": "double"}])})
    assert not unnamed.columns_named
    assert [spec.name for spec in unnamed.columns] == ["0", "1"]


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
