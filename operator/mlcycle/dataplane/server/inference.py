"""One inference request, whatever protocol carried it: validated model input and options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlcycle.dataplane.server.signature import ModelInput


@dataclass(frozen=True)
class Inference:
    model_input: ModelInput
    rows: int
    params: dict[str, Any] | None = None
    request_id: str | None = None
    requested_outputs: tuple[str, ...] = ()
