"""MLflow model signatures as request validators.

A signature (the `signature` block of an MLmodel file) is parsed once into column or tensor
specs; each request is then turned into exactly what the model is called with — a 2-D
numpy array when every column is numeric and the model takes arrays (no DataFrame on the
hot path), a DataFrame otherwise, or named tensors — and anything that does not fit the
signature becomes a `RequestError` naming the field, which the server answers with a 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

ModelInput: TypeAlias = np.ndarray[Any, Any] | pd.DataFrame | dict[str, np.ndarray[Any, Any]]
InputLayout: TypeAlias = Literal["ndarray", "dataframe"]


class RequestError(Exception):
    """A request that does not fit the protocol or the signature: answered with a 400."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    # An MLflow DataType name (double, float, long, integer, boolean, string, binary,
    # datetime) or "any" for the composite types (array, object, map) passed through as is.
    type: str
    required: bool = True


@dataclass(frozen=True)
class TensorSpec:
    name: str | None
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """Inputs are columns, tensors or unknown (no signature: accepted as sent)."""

    columns: tuple[ColumnSpec, ...] = ()
    tensors: tuple[TensorSpec, ...] = ()
    output_columns: tuple[ColumnSpec, ...] = ()
    output_tensors: tuple[TensorSpec, ...] = ()
    has_params: bool = False

    @property
    def known(self) -> bool:
        return bool(self.columns or self.tensors)

    def output_names(self) -> tuple[str, ...]:
        specs: list[ColumnSpec | TensorSpec] = [*self.output_columns, *self.output_tensors]
        return tuple(spec.name for spec in specs if spec.name)


# Which numpy kinds a column type accepts, and the dtype it is converted to. Integers are
# accepted for floating columns (JSON has no separate integer/float notation for 1 vs 1.0);
# floats are never silently truncated into integer columns.
_COLUMN_TYPES: dict[str, tuple[str, np.dtype[Any] | None]] = {
    "double": ("fiu", np.dtype(np.float64)),
    "float": ("fiu", np.dtype(np.float32)),
    "long": ("iu", np.dtype(np.int64)),
    "integer": ("iu", np.dtype(np.int32)),
    "boolean": ("b", np.dtype(np.bool_)),
    "string": ("U", None),
    "binary": ("USO", None),
    "datetime": ("UM", np.dtype("datetime64[ns]")),
}
_NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
_KIND_NAMES = {
    "f": "a float",
    "i": "an integer",
    "u": "an integer",
    "b": "a boolean",
    "U": "a string",
    "S": "bytes",
    "O": "a mixed or null value",
}


def _parse_specs(encoded: str | None) -> tuple[tuple[ColumnSpec, ...], tuple[TensorSpec, ...]]:
    if not encoded:
        return (), ()
    columns: list[ColumnSpec] = []
    tensors: list[TensorSpec] = []
    for index, item in enumerate(json.loads(encoded)):
        if item.get("type") == "tensor":
            tensor = item["tensor-spec"]
            tensors.append(
                TensorSpec(item.get("name"), np.dtype(tensor["dtype"]), tuple(tensor["shape"]))
            )
        else:
            kind = item.get("type", "any")
            columns.append(
                ColumnSpec(
                    name=item.get("name", str(index)),
                    type=kind if kind in _COLUMN_TYPES else "any",
                    required=item.get("required", True),
                )
            )
    return tuple(columns), tuple(tensors)


def parse_signature(block: Mapping[str, Any] | None) -> Signature:
    """The MLmodel file's `signature` block (inputs/outputs are JSON strings there)."""
    if not block:
        return Signature()
    columns, tensors = _parse_specs(block.get("inputs"))
    output_columns, output_tensors = _parse_specs(block.get("outputs"))
    return Signature(
        columns=columns,
        tensors=tensors,
        output_columns=output_columns,
        output_tensors=output_tensors,
        has_params=bool(block.get("params")),
    )


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _convert_column(spec: ColumnSpec, values: Any, field: str) -> np.ndarray[Any, Any]:
    """One column's values as the array its type asks for, or a RequestError naming it."""
    if spec.type == "any":
        column = np.empty(len(values), dtype=object)
        column[:] = list(values)
        return column
    kinds, target = _COLUMN_TYPES[spec.type]
    try:
        array = np.asarray(values)
    except ValueError as error:
        raise RequestError(field, f"expected {spec.type} values: {error}") from None
    if array.ndim != 1:
        raise RequestError(field, f"expected one {spec.type} value per row, got nested values")
    if array.dtype.kind == "O" and spec.type in ("double", "float") and not spec.required:
        # Optional floating columns take null as NaN, as MLflow's own enforcement does.
        array = np.asarray([np.nan if v is None else v for v in values])
    if array.dtype.kind not in kinds:
        for row, value in enumerate(values):
            element = np.asarray(value)
            if value is None:
                raise RequestError(field, f"missing value at row {row}")
            if element.dtype.kind not in kinds or element.ndim != 0:
                found = _KIND_NAMES.get(element.dtype.kind, str(element.dtype))
                raise RequestError(
                    field, f"expected {spec.type}, got {found} {_describe(value)} at row {row}"
                )
        raise RequestError(field, f"expected {spec.type} values")
    if target is not None and array.dtype != target:
        try:
            array = array.astype(target)
        except (ValueError, OverflowError) as error:
            raise RequestError(field, f"not convertible to {spec.type}: {error}") from None
    return array


class InputValidator:
    """Turns decoded request payloads into model input, checked against the signature.

    `layout` is what the loaded model is called with: "ndarray" for native flavors that
    take arrays, "dataframe" for pyfunc. `column_order` is the order the model's features
    were fitted in (sklearn's feature_names_in_) when it differs from the signature's.
    """

    def __init__(
        self,
        signature: Signature,
        layout: InputLayout,
        column_order: Sequence[str] | None = None,
    ) -> None:
        self.signature = signature
        self.layout = layout
        by_name = {spec.name: spec for spec in signature.columns}
        ordered = [by_name[name] for name in column_order] if column_order else []
        self.columns: tuple[ColumnSpec, ...] = tuple(ordered) or signature.columns
        self.column_names = tuple(spec.name for spec in self.columns)
        self._column_index = {name: i for i, name in enumerate(self.column_names)}
        column_types = {spec.type for spec in self.columns}
        # The fast path: one numeric type for every column and a model that takes arrays.
        self.array_dtype: np.dtype[Any] | None = None
        if layout == "ndarray" and len(column_types) == 1 and column_types <= _NUMERIC_TYPES:
            self.array_dtype = _COLUMN_TYPES[column_types.pop()][1]
            self._array_kinds = _COLUMN_TYPES[self.columns[0].type][0]

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
            fast = self._numeric_rows(data, names)
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

    def _numeric_rows(self, data: object, names: list[str]) -> ModelInput | None:
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
        return array.astype(self.array_dtype, copy=False)

    def records(self, records: object, field: str) -> ModelInput:
        """dataframe_records and instances as objects: one mapping per row."""
        if not isinstance(records, list):
            raise RequestError(field, "expected a list of records")
        for row_index, record in enumerate(records):
            if not isinstance(record, dict):
                raise RequestError(f"{field}[{row_index}]", f"expected an object, got {record!r}")
        if not self.signature.known:
            return pd.DataFrame.from_records(records)
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
            columns[spec.name] = values
        return self._from_columns(columns, field)

    def columns_by_name(self, columns: Mapping[str, Any], field: str) -> ModelInput:
        """Column-major data: instances/inputs as {"column": [values]} and OIP named inputs."""
        if not self.signature.known:
            return pd.DataFrame(dict(columns))
        if not self.signature.columns:
            return self.tensors(columns, field)
        return self._from_columns(columns, field)

    def _check_columns(self, names: Sequence[str], field: str) -> None:
        present = set(names)
        for spec in self.columns:
            if spec.required and spec.name not in present:
                raise RequestError(f"{field}", f"missing column {spec.name!r}")

    def _from_columns(self, columns: Mapping[str, Any], field: str) -> ModelInput:
        length: int | None = None
        converted: dict[str, np.ndarray[Any, Any]] = {}
        for spec in self.columns:
            values = columns.get(spec.name)
            if values is None:
                if spec.required:
                    raise RequestError(f"{field}.{spec.name}", "missing column")
                continue
            if not isinstance(values, list | tuple | np.ndarray):
                values = [values]
            array = _convert_column(spec, values, f"{field}.{spec.name}")
            if length is None:
                length = len(array)
            elif len(array) != length:
                raise RequestError(
                    f"{field}.{spec.name}", f"has {len(array)} values, other columns {length}"
                )
            converted[spec.name] = array
        rows = length or 0
        for spec in self.columns:
            if spec.name not in converted:
                converted[spec.name] = (
                    np.full(rows, np.nan)
                    if spec.type in ("double", "float")
                    else np.full(rows, None, dtype=object)
                )
        if self.array_dtype is not None:
            return np.column_stack([converted[name] for name in self.column_names]).astype(
                self.array_dtype, copy=False
            )
        return pd.DataFrame(converted, columns=list(self.column_names))

    def _unsigned_rows(self, data: object, columns: Sequence[str] | None, field: str) -> ModelInput:
        if columns is not None or self.layout == "dataframe":
            try:
                return pd.DataFrame(data, columns=list(columns) if columns is not None else None)
            except ValueError as error:
                raise RequestError(field, str(error)) from None
        try:
            return np.asarray(data)
        except ValueError as error:
            raise RequestError(field, f"not a rectangular array: {error}") from None

    # --- tensor signatures ---------------------------------------------------------------

    def tensors(self, tensors: Mapping[Any, Any], field: str) -> ModelInput:
        """Named tensors (OIP inputs, instances/inputs for tensor signatures)."""
        specs = self.signature.tensors
        if not specs:
            arrays = {name: np.asarray(value) for name, value in tensors.items()}
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

    @staticmethod
    def _tensor(spec: TensorSpec, value: object, field: str) -> np.ndarray[Any, Any]:
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
        return array.astype(spec.dtype, copy=False)


def row_count(model_input: ModelInput) -> int:
    if isinstance(model_input, dict):
        first = next(iter(model_input.values()), None)
        return 0 if first is None or first.ndim == 0 else len(first)
    if isinstance(model_input, np.ndarray) and model_input.ndim == 0:
        return 1
    return len(model_input)


def signature_as_json(signature: Signature) -> dict[str, Any]:
    """For metadata responses: the signature's inputs and outputs as OIP tensor metadata."""
    inputs: list[ColumnSpec | TensorSpec] = [*signature.columns, *signature.tensors]
    outputs: list[ColumnSpec | TensorSpec] = [*signature.output_columns, *signature.output_tensors]
    return {
        "inputs": [_spec_metadata(spec, f"input-{i}") for i, spec in enumerate(inputs)],
        "outputs": [_spec_metadata(spec, f"output-{i}") for i, spec in enumerate(outputs)],
    }


_OIP_BY_COLUMN_TYPE = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
    "any": "BYTES",
}


def _spec_metadata(spec: ColumnSpec | TensorSpec, default_name: str) -> dict[str, Any]:
    if isinstance(spec, ColumnSpec):
        return {"name": spec.name, "datatype": _OIP_BY_COLUMN_TYPE[spec.type], "shape": [-1]}
    return {
        "name": spec.name or default_name,
        "datatype": oip_datatype(spec.dtype),
        "shape": list(spec.shape),
    }


_OIP_BY_KIND_SIZE = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}


def oip_datatype(dtype: np.dtype[Any]) -> str:
    return _OIP_BY_KIND_SIZE.get((dtype.kind, dtype.itemsize), "BYTES")
