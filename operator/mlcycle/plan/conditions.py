"""Conditions keyed by type, in the Kubernetes API conventions' style."""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlcycle.api.v1alpha1.common import Condition

MESSAGE_LIMIT: Final = 1024


@dataclass(frozen=True)
class EventIntent:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StatusPlan:
    """The status to write (camelCase; None clears a field) and the Events to emit."""

    status: dict[str, Any]
    events: list[EventIntent]
    changed: bool


def cap_message(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime.datetime,
) -> list[Condition]:
    """Replace the condition of `type_`; its transition time moves only when status moves."""
    previous = next((c for c in conditions if c.type == type_), None)
    transition = now
    if previous is not None and previous.status == status and previous.last_transition_time:
        transition = previous.last_transition_time
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    kept = [c for c in conditions if c.type != type_]
    return sorted([*kept, updated], key=lambda c: c.type)


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Status is written only when it differs, so a resync never bumps resourceVersion."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())


def condition_event(
    before: Sequence[Condition],
    after: Sequence[Condition],
    type_: str,
    *,
    normal_reasons: Collection[str] = (),
) -> EventIntent | None:
    """The one rule that turns a condition's transition into an Event, for every kind.

    An Event when the condition appears or its status or reason moves; a message change is
    not one (a message may carry a count or a time, and Events are for transitions only).
    Normal when the condition is True or its reason is one of `normal_reasons` (a wait that
    needs nobody, such as a version still registering), Warning otherwise.
    """
    old, new = find_condition(before, type_), find_condition(after, type_)
    if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
        return None
    normal = new.status == "True" or new.reason in normal_reasons
    return EventIntent("Normal" if normal else "Warning", new.reason, cap_message(new.message))


def condition_events(
    before: Sequence[Condition],
    after: Sequence[Condition],
    types: Iterable[str],
    *,
    normal_reasons: Collection[str] = (),
) -> list[EventIntent]:
    """`condition_event` for each of `types`, in their order."""
    events = (
        condition_event(before, after, type_, normal_reasons=normal_reasons) for type_ in types
    )
    return [event for event in events if event is not None]


class ConditionSet:
    """The conditions being planned, all stamped with one generation and one clock."""

    def __init__(
        self, conditions: Sequence[Condition], generation: int | None, now: datetime.datetime
    ) -> None:
        self.conditions = list(conditions)
        self._generation = generation
        self._now = now

    def put(self, type_: str, status: bool, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            type_=type_,
            status="True" if status else "False",
            reason=reason,
            message=message,
            observed_generation=self._generation,
            now=self._now,
        )
