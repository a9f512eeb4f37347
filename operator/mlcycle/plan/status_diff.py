"""The JSON merge patch (RFC 7386) that turns a recorded status into the desired one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(recorded: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired` as a JSON merge patch over `recorded`: a merge patch keeps whatever it does
    not mention, so a field gone (a finished canary, a cleared baseline) is sent as null."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = recorded.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = merge_patch(old, value)
        else:
            patch[key] = value
    for key in recorded:
        if key not in desired:
            patch[key] = None
    return patch
