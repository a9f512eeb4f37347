"""Request payloads turned into model input, checked against the model's signature.

With the signature parsed once (`signature.parse_signature`), each request is turned into
exactly what the model is called with — a 2-D numpy array when every column is numeric and
the model takes arrays (no DataFrame on the hot path), a DataFrame otherwise, or named
tensors — and anything that does not fit the signature becomes a `RequestError` naming the
field, which the server answers with a 400.

Values are coerced as MLflow's schema enforcement does (`mlflow.models.utils._enforce_schema`
after the casts of `mlflow.utils.proto_json_utils`), so a request `mlflow models serve`
accepts is accepted here and reaches the model with the same values:

- double and float columns take integers, numeric strings ("5.1") and null or NaN, which
  become NaN;
- long and integer columns take integral floats (3.0) and integer strings ("3");
- string columns take numbers and booleans as their text (a zip code sent as 2134 is
  "2134"); null and NaN stay as sent, as missing values.

A missing value (null, NaN, an empty CSV cell, an optional column left out) reaches the
model only where the model takes one, which its flavor says (`takes_missing`), and so does
an infinite value (`takes_infinite`); elsewhere it is a 400 before predict, where MLflow
lets the model raise (and answers 400 too).

Deliberate differences from MLflow, each where MLflow would hand the model something other
than what the caller sent:

- a non-integral float (3.5) for a long or integer column is refused; MLflow truncates it
  to 3, the silent change its own enforcement means to refuse;
- booleans for numeric columns are refused (MLflow makes them 1.0 and 0.0), as are
  non-booleans and null for boolean columns (MLflow makes "false" True and null False);
- a record without a required column is refused (MLflow fills NaN from the other records),
  and so is a row with fewer values than columns (pandas, so MLflow, pads it at the end);
- an optional column left out is filled with missing values for the native flavors, which
  need every column they were fitted on (MLflow passes the frame without it and the model
  raises); pyfunc models get the frame without it, as from MLflow;
- numbers in a string column reach the model as text in every format (MLflow passes the
  number itself for dataframe_split and dataframe_records, text for inputs and instances).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from mlcycle.dataplane.server.signature import COLUMN_TYPES, ColumnSpec, Signature, TensorSpec

ModelInput: TypeAlias = np.ndarray[Any, Any] | pd.DataFrame | dict[str, np.ndarray[Any, Any]]
InputLayout: TypeAlias = Literal["ndarray", "dataframe"]
TakesMissing: TypeAlias = bool | frozenset[str]
"""Where a model takes missing values: everywhere, nowhere, or in the columns named."""
ParamsCheck: TypeAlias = Callable[[Mapping[str, Any]], None]


class RequestError(Exception):
    """A request that does not fit the protocol or the signature: answered with `status`."""

    status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field


_NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
# Types with a missing value of their own (NaN, or None in an object column).
_FLOATING_TYPES = frozenset({"double", "float"})
_NULLABLE_TYPES = _FLOATING_TYPES | {"string", "binary", "datetime", "any"}
_KIND_NAMES = {
    "f": "a float",
    "i": "an integer",
    "u": "an integer",
    "b": "a boolean",
    "U": "a string",
    "S": "bytes",
    "O": "a mixed or null value",
}


class _UnconvertibleError(Exception):
    """One value a column type cannot take; the caller names the field and the row."""


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def _as_float(value: object) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool | np.bool_):
        raise _UnconvertibleError
    if isinstance(value, int | float | str | np.integer | np.floating):
        try:
            return float(value)
        except ValueError:
            raise _UnconvertibleError from None
    raise _UnconvertibleError


def _as_int(value: object) -> int:
    if isinstance(value, bool | np.bool_) or _is_missing(value):
        raise _UnconvertibleError
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise _UnconvertibleError from None
    raise _UnconvertibleError


def _as_text(value: object) -> object:
    if isinstance(value, str) or _is_missing(value):
        return value
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        return str(value)
    raise _UnconvertibleError


_COERCIONS: dict[str, Callable[[object], object]] = {
    "double": _as_float,
    "float": _as_float,
    "long": _as_int,
    "integer": _as_int,
    "string": _as_text,
}


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refusal(spec: ColumnSpec, value: object, row: int) -> str:
    if _is_missing(value):
        return f"missing value at row {row}: a {spec.type} column cannot hold one"
    element = np.asarray(value)
    if element.ndim != 0:
        return f"expected one {spec.type} value per row, got nested values at row {row}"
    found = _KIND_NAMES.get(element.dtype.kind, str(element.dtype))
    return f"expected {spec.type}, got {found} {_describe(value)} at row {row}"


def _coerce_column(spec: ColumnSpec, values: Sequence[Any], field: str) -> np.ndarray[Any, Any]:
    """Values the column's dtype does not take as they are, converted one by one."""
    coerce = _COERCIONS.get(spec.type)
    converted: list[object] = []
    for row, value in enumerate(values):
        try:
            if coerce is None:
                raise _UnconvertibleError
            converted.append(coerce(value))
        except _UnconvertibleError:
            raise RequestError(field, _refusal(spec, value, row)) from None
    if spec.type == "string":
        column = np.empty(len(converted), dtype=object)
        column[:] = converted
        return column
    return np.asarray(converted)


def _convert_column(spec: ColumnSpec, values: Any, field: str) -> np.ndarray[Any, Any]:
    """One column's values as the array its type asks for, or a RequestError naming it."""
    if spec.type == "any":
        column = np.empty(len(values), dtype=object)
        column[:] = list(values)
        return column
    kinds, target = COLUMN_TYPES[spec.type]
    try:
        array = np.asarray(values)
    except ValueError:
        array = np.empty(0, dtype=object)  # ragged: the value-by-value path says where
    if array.ndim != 1 or array.dtype.kind not in kinds:
        array = _coerce_column(spec, values, field)
    if target is not None and array.dtype != target:
        try:
            array = array.astype(target)
        except (ValueError, OverflowError) as error:
            raise RequestError(field, f"not convertible to {spec.type}: {error}") from None
    return array


def _missing_rows(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    """Which values of an array are missing; None for kinds that cannot hold one."""
    if array.dtype.kind not in "fMO":
        return None
    return np.asarray(pd.isna(array), dtype=bool)


def _refuse_where(found: np.ndarray[Any, Any] | None, field: str, what: str) -> None:
    if found is not None and found.any():
        row = int(np.argwhere(found)[0][0]) if found.ndim else 0
        raise RequestError(
            field, f"{what} value at row {row}: this model cannot take {what} values"
        )


class InputValidator:
    """Turns decoded request payloads into model input, checked against the signature.

    `layout` is what the loaded model is called with: "ndarray" for native flavors, which
    take every column they were fitted on (as arrays where the columns are numeric),
    "dataframe" for pyfunc, which gets the columns sent, as from MLflow. `column_order` is
    the order the model's features were fitted in (sklearn's feature_names_in_) when it
    differs from the signature's. `takes_missing` says where the model takes missing values
    (NaN, None), `takes_infinite` whether it takes ±inf. `check_params` raises a
    RequestError for params the model's params schema refuses.
    """

    def __init__(
        self,
        signature: Signature,
        layout: InputLayout,
        column_order: Sequence[str] | None = None,
        *,
        takes_missing: TakesMissing = False,
        takes_infinite: bool = True,
        check_params: ParamsCheck | None = None,
    ) -> None:
        self.signature = signature
        self.layout = layout
        self.takes_missing = takes_missing
        self.takes_infinite = takes_infinite
        self._check_params = check_params
        by_name = {spec.name: spec for spec in signature.columns}
        ordered = [by_name[name] for name in column_order] if column_order else []
        self.columns: tuple[ColumnSpec, ...] = tuple(ordered) or signature.columns
        self.column_names = tuple(spec.name for spec in self.columns)
        self._column_index = {name: i for i, name in enumerate(self.column_names)}
        column_types = {spec.type for spec in self.columns}
        # The fast path: one numeric type for every column and a model that takes arrays.
        self.array_dtype: np.dtype[Any] | None = None
        if layout == "ndarray" and len(column_types) == 1 and column_types <= _NUMERIC_TYPES:
            self.array_dtype = COLUMN_TYPES[column_types.pop()][1]
            self._array_kinds = COLUMN_TYPES[self.columns[0].type][0]
        # Positions (in model order) of the columns where some non-finite values are refused.
        self._refusing = [
            index
            for index, spec in enumerate(self.columns)
            if not (takes_infinite and self._takes_missing(spec.name))
        ]

    def _takes_missing(self, column: str | None) -> bool:
        if isinstance(self.takes_missing, bool):
            return self.takes_missing
        return column is not None and column in self.takes_missing

    def _refuse_unsupported(
        self, array: np.ndarray[Any, Any], field: str, column: str | None = None
    ) -> None:
        """Missing and infinite values the model cannot take, refused before predict."""
        if not self._takes_missing(column):
            _refuse_where(_missing_rows(array), field, "missing")
        if not self.takes_infinite and array.dtype.kind == "f":
            _refuse_where(np.isinf(array), field, "infinite")

    def check_params(self, params: Mapping[str, Any] | None) -> None:
        """Refuses params of the wrong type or shape for the model's params schema."""
        if params and self._check_params is not None:
            self._check_params(params)

    # --- column signatures ---------------------------------------------------------------

    def rows(self, data: object, columns: Sequence[str] | None, field: str) -> ModelInput:
        """Row-major data (dataframe_split, instances as lists, a 2-D OIP tensor)."""
        if not isinstance(data, list | np.ndarray):
            raise RequestError(field, "expected a list of rows")
        if not self.signature.known:
            return self._unsigned_rows(data, columns, field)
        if not self.signature.columns:
            return self.tensors({None: data}, field)
        names = list(columns) if columns is not None else list(self.column_names)
        if columns is not None:
            self._check_columns(names, field.rsplit(".", 1)[0] + ".columns")
        if self.array_dtype is not None:
            fast = self._numeric_rows(data, names, field)
            if fast is not None:
                return fast
        rows: list[Any] = data.tolist() if isinstance(data, np.ndarray) else data
        width = len(names)
        for row_index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else _describe(row)
                raise RequestError(
                    f"{field}[{row_index}]", f"expected a row of {width} values, got {got}"
                )
        transposed = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return self._from_columns(dict(zip(names, transposed, strict=True)), field)

    def _numeric_rows(self, data: object, names: list[str], field: str) -> ModelInput | None:
        """Whole-array conversion when it clearly fits; None sends it to the precise path."""
        try:
            array = np.asarray(data)
        except ValueError:
            return None
        if array.ndim != 2 or array.shape[1] != len(names):
            return None
        if array.dtype.kind not in self._array_kinds:
            return None
        if names != list(self.column_names):
            if not set(self.column_names) <= set(names):
                return None  # optional columns left out: filled in on the precise path
            array = array[:, [names.index(name) for name in self.column_names]]
        assert self.array_dtype is not None
        array = array.astype(self.array_dtype, copy=False)
        # One pass over the checked columns; which value is refused is found only if any is.
        if self._refusing and not np.isfinite(array[:, self._refusing]).all():
            for position in self._refusing:
                name = self.column_names[position]
                self._refuse_unsupported(array[:, position], f"{field}.{name}", name)
        return array

    def records(self, records: object, field: str) -> ModelInput:
        """dataframe_records and instances as objects: one mapping per row."""
        if not isinstance(records, list):
            raise RequestError(field, "expected a list of records")
        for row_index, record in enumerate(records):
            if not isinstance(record, dict):
                raise RequestError(f"{field}[{row_index}]", f"expected an object, got {record!r}")
        if not self.signature.known:
            return self._checked_unsigned(pd.DataFrame.from_records(records), field)
        if not self.signature.columns:
            return self.tensors(
                {key: [record.get(key) for record in records] for key in records[0]}
                if records
                else {},
                field,
            )
        columns: dict[str, list[Any]] = {}
        for spec in self.columns:
            values = []
            for row_index, record in enumerate(records):
                if spec.name in record:
                    values.append(record[spec.name])
                elif spec.required:
                    raise RequestError(f"{field}[{row_index}].{spec.name}", "missing column")
                else:
                    values.append(None)
            # An optional column no record has is left out, as a column-major request would.
            if spec.required or any(spec.name in record for record in records):
                columns[spec.name] = values
        return self._from_columns(columns, field)

    def columns_by_name(self, columns: Mapping[str, Any], field: str) -> ModelInput:
        """Column-major data: instances/inputs as {"column": [values]} and OIP named inputs."""
        if not self.signature.known:
            return self._checked_unsigned(pd.DataFrame(dict(columns)), field)
        if not self.signature.columns:
            return self.tensors(columns, field)
        return self._from_columns(columns, field)

    def _check_columns(self, names: Sequence[str], field: str) -> None:
        present = set(names)
        for spec in self.columns:
            if spec.required and spec.name not in present:
                raise RequestError(f"{field}", f"missing column {spec.name!r}")
        if len(present) != len(names):
            # MLflow cannot cast a column it finds twice; which value is meant is unknowable.
            seen: set[str] = set()
            for name in names:
                if name in seen and name in self._column_index:
                    raise RequestError(field, f"column {name!r} appears more than once")
                seen.add(name)

    def _from_columns(self, columns: Mapping[str, Any], field: str) -> ModelInput:
        length: int | None = None
        converted: dict[str, np.ndarray[Any, Any]] = {}
        for spec in self.columns:
            if spec.name not in columns:
                if spec.required:
                    raise RequestError(f"{field}.{spec.name}", "missing column")
                continue
            values = columns[spec.name]
            if not isinstance(values, list | tuple | np.ndarray):
                values = [values]
            column_field = f"{field}.{spec.name}"
            array = _convert_column(spec, values, column_field)
            self._refuse_unsupported(array, column_field, spec.name)
            if length is None:
                length = len(array)
            elif len(array) != length:
                raise RequestError(column_field, f"has {len(array)} values, other columns {length}")
            converted[spec.name] = array
        rows = length or 0
        if self.layout == "ndarray":
            for spec in self.columns:
                if spec.name not in converted:
                    converted[spec.name] = self._absent_column(spec, rows, field)
        names = [name for name in self.column_names if name in converted]
        if self.array_dtype is not None:
            return np.column_stack([converted[name] for name in names]).astype(
                self.array_dtype, copy=False
            )
        return pd.DataFrame(converted, columns=names)

    def _absent_column(self, spec: ColumnSpec, rows: int, field: str) -> np.ndarray[Any, Any]:
        """An optional column left out, for a model that needs every column: all missing."""
        if spec.type not in _NULLABLE_TYPES or not self._takes_missing(spec.name):
            raise RequestError(
                f"{field}.{spec.name}",
                "missing column: optional in the signature, but this model cannot take "
                "missing values in it",
            )
        if spec.type in _FLOATING_TYPES:
            return np.full(rows, np.nan, dtype=COLUMN_TYPES[spec.type][1])
        return np.full(rows, None, dtype=object)

    def _unsigned_rows(self, data: object, columns: Sequence[str] | None, field: str) -> ModelInput:
        if columns is not None or self.layout == "dataframe":
            try:
                frame = pd.DataFrame(data, columns=list(columns) if columns is not None else None)
            except ValueError as error:
                raise RequestError(field, str(error)) from None
            return self._checked_unsigned(frame, field)
        try:
            return self._checked_unsigned(np.asarray(data), field)
        except ValueError as error:
            raise RequestError(field, f"not a rectangular array: {error}") from None

    def _checked_unsigned(self, model_input: ModelInput, field: str) -> ModelInput:
        """Input without a signature, refused if it holds values the model cannot take."""
        if isinstance(model_input, pd.DataFrame):
            for column in model_input.columns:
                self._refuse_unsupported(model_input[column].to_numpy(), f"{field}.{column}")
        elif isinstance(model_input, np.ndarray):
            self._refuse_unsupported(model_input, field)
        return model_input

    # --- tensor signatures ---------------------------------------------------------------

    def tensors(self, tensors: Mapping[Any, Any], field: str) -> ModelInput:
        """Named tensors (OIP inputs, instances/inputs for tensor signatures)."""
        specs = self.signature.tensors
        if not specs:
            arrays = {
                name: self._checked_tensor(np.asarray(value), field)
                for name, value in tensors.items()
            }
            if len(arrays) == 1:
                return next(iter(arrays.values()))
            return {str(name): value for name, value in arrays.items()}
        if len(specs) == 1 and len(tensors) == 1:
            value = next(iter(tensors.values()))
            spec = specs[0]
            return self._tensor(spec, value, field if spec.name is None else f"{field}.{spec.name}")
        result: dict[str, np.ndarray[Any, Any]] = {}
        for spec in specs:
            name = spec.name or ""
            if name not in tensors:
                raise RequestError(f"{field}.{name}", "missing input")
            result[name] = self._tensor(spec, tensors[name], f"{field}.{name}")
        return result

    def _tensor(self, spec: TensorSpec, value: object, field: str) -> np.ndarray[Any, Any]:
        try:
            array = np.asarray(value)
        except ValueError as error:
            raise RequestError(field, f"not a rectangular array: {error}") from None
        expected_kind = spec.dtype.kind
        compatible = array.dtype.kind == expected_kind or (
            expected_kind == "f" and array.dtype.kind in "iu"
        )
        if not compatible:
            found = _KIND_NAMES.get(array.dtype.kind, str(array.dtype))
            raise RequestError(field, f"expected {spec.dtype} values, got {found}")
        if len(spec.shape) != array.ndim or any(
            want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise RequestError(field, f"expected shape {list(spec.shape)}, got {list(array.shape)}")
        return self._checked_tensor(array.astype(spec.dtype, copy=False), field)

    def _checked_tensor(self, array: np.ndarray[Any, Any], field: str) -> np.ndarray[Any, Any]:
        self._refuse_unsupported(array, field)
        return array


def row_count(model_input: ModelInput) -> int:
    if isinstance(model_input, dict):
        first = next(iter(model_input.values()), None)
        return 0 if first is None or first.ndim == 0 else len(first)
    if isinstance(model_input, np.ndarray) and model_input.ndim == 0:
        return 1
    return len(model_input)
