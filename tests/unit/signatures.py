"""Model signatures the model-server unit tests share, written as MLmodel files hold them."""

from __future__ import annotations

import json

from mlcycle.dataplane.server.signature import Signature, parse_signature
from mlcycle.dataplane.server.validation import InputValidator


def columns_signature(
    *columns: tuple[str, str] | tuple[str, str, bool], output_dtype: str | None = None
) -> Signature:
    """Columns as (name, MLflow type[, required]); a [-1] output tensor of `output_dtype`."""
    block = {
        "inputs": json.dumps(
            [
                {"type": column[1], "name": column[0], "required": column[2:] != (False,)}
                for column in columns
            ]
        )
    }
    if output_dtype is not None:
        block["outputs"] = json.dumps(
            [{"type": "tensor", "tensor-spec": {"dtype": output_dtype, "shape": [-1]}}]
        )
    return parse_signature(block)


COLUMNS = ["a", "b"]
SIGNATURE = columns_signature(*((name, "double") for name in COLUMNS), output_dtype="int64")
VALIDATOR = InputValidator(SIGNATURE, "ndarray")
EXPECTED = [[1.0, 2.0], [3.0, 4.0]]
