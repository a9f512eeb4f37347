"""MLflow model signatures: the MLmodel file's `signature` block parsed once into column
or tensor specs, and described as Open Inference Protocol metadata.

`validation` checks requests against what is parsed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    columns_named: bool = True
    """Every input column has a name (MLflow then takes columns only by name, never by
    position); unnamed columns are numbered here."""

    @property
    def known(self) -> bool:
        return bool(self.columns or self.tensors)

    def output_names(self) -> tuple[str, ...]:
        specs: list[ColumnSpec | TensorSpec] = [*self.output_columns, *self.output_tensors]
        return tuple(spec.name for spec in specs if spec.name)


# Which numpy kinds a column type takes as they are, and the dtype it is converted to; other
# values go through the column type's coercion in `validation`, value by value.
COLUMN_TYPES: dict[str, tuple[str, np.dtype[Any] | None]] = {
    "double": ("fiu", np.dtype(np.float64)),
    "float": ("fiu", np.dtype(np.float32)),
    "long": ("iu", np.dtype(np.int64)),
    "integer": ("iu", np.dtype(np.int32)),
    "boolean": ("b", np.dtype(np.bool_)),
    "string": ("U", None),
    "binary": ("USO", None),
    "datetime": ("UM", np.dtype("datetime64[ns]")),
}


def _parse_specs(
    encoded: str | None,
) -> tuple[tuple[ColumnSpec, ...], tuple[TensorSpec, ...], bool]:
    if not encoded:
        return (), (), True
    columns: list[ColumnSpec] = []
    tensors: list[TensorSpec] = []
    named = True
    for index, item in enumerate(json.loads(encoded)):
        if item.get("type") == "tensor":
            tensor = item["tensor-spec"]
            tensors.append(
                TensorSpec(item.get("name"), np.dtype(tensor["dtype"]), tuple(tensor["shape"]))
            )
        else:
            kind = item.get("type", "any")
            named = named and "name" in item
            columns.append(
                ColumnSpec(
                    name=item.get("name", str(index)),
                    type=kind if kind in COLUMN_TYPES else "any",
                    required=item.get("required", True),
                )
            )
    return tuple(columns), tuple(tensors), named


def parse_signature(block: Mapping[str, Any] | None) -> Signature:
    """The MLmodel file's `signature` block (inputs/outputs are JSON strings there)."""
    if not block:
        return Signature()
    columns, tensors, named = _parse_specs(block.get("inputs"))
    output_columns, output_tensors, _ = _parse_specs(block.get("outputs"))
    return Signature(
        columns=columns,
        tensors=tensors,
        output_columns=output_columns,
        output_tensors=output_tensors,
        has_params=bool(block.get("params")),
        columns_named=named,
    )


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
