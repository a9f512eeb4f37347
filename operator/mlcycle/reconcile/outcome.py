"""What one pass of any kind's reconcile tells its handler: the Events to post and when to
run again."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlcycle.plan.conditions import EventIntent


@dataclass(frozen=True)
class Outcome:
    events: list[EventIntent] = field(default_factory=list)
    retry_after: float | None = None
    """Seconds before kopf runs the change handler again (a backoff, a registration being
    awaited); None when the object's next trigger is enough."""
