"""Field access on the objects the API server returned (Jobs, pods): an absent part reads
as empty, a timestamp as a datetime."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any


def metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return metadata_of(obj).get("labels") or {}


def spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def timestamp(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.datetime.fromisoformat(value)
    return None


def true_condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in status_of(obj).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None
