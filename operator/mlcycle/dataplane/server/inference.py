"""One inference request, whatever protocol carried it: validated model input and options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlcycle.dataplane.server.validation import ModelInput


@dataclass(frozen=True)
class Inference:
    model_input: ModelInput
    rows: int
    params: dict[str, Any] | None = None
    request_id: str | None = None
    requested_outputs: tuple[str, ...] = ()
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to answer with raw little-endian bytes instead of typed values (HTTP's
    binary tensor data extension: per requested output)."""
    all_outputs_binary: bool = False
    """Every output as raw bytes: no outputs were named and the request asked for binary."""
