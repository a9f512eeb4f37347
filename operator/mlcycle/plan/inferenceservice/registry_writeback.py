"""Write-back of rollout outcomes to the MLflow registry: queued in status, written in order
after traffic has moved, retried with backoff while MLflow is down.

Traffic is the safety action and never waits for MLflow: a decision moves traffic at once
and queues its tags and alias in `status.pendingRegistryWrites`, so a restarted operator
still lands them. Writes are idempotent (a tag or an alias set again to the same value), so
a pass that dies between a write and the status that drops it only writes it again. One
Event when a write cannot land (it goes pending), one when it lands, none per retry.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Final

from mlcycle.api.v1alpha1.inferenceservice import PendingRegistryWrite
from mlcycle.plan import reasons
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.plan.conditions import EventIntent, cap_message

PENDING_LIMIT: Final = 20
"""Of `status.pendingRegistryWrites`: beyond it the oldest go (later outcomes of the same
version supersede them anyway)."""


def queued(
    pending: Sequence[PendingRegistryWrite], decided: Sequence[PendingRegistryWrite]
) -> list[PendingRegistryWrite]:
    """The writes still owed, oldest first, then this pass's decisions."""
    return [*pending, *decided][-PENDING_LIMIT:]


def due(pending: Sequence[PendingRegistryWrite], now: datetime.datetime) -> bool:
    """Whether to try now: writes land in order, so the oldest one's backoff decides."""
    if not pending:
        return False
    retry_at = pending[0].next_attempt_at
    return retry_at is None or retry_at <= now


def _what(write: PendingRegistryWrite) -> str:
    # A long value (a rollback's reason) is already in the Event that decided it.
    tags = sorted(write.tags.items())
    parts = [key if len(value) > 40 else f"{key}={value}" for key, value in tags]
    if write.alias is not None:
        parts.append(f"alias {write.alias}")
    return f"{', '.join(parts) or 'nothing'} on version {write.version} of {write.model_name}"


def after_attempt(
    pending: Sequence[PendingRegistryWrite],
    landed: int,
    error: str | None,
    now: datetime.datetime,
    jitter: float,
) -> tuple[list[PendingRegistryWrite], list[EventIntent]]:
    """The queue after the first `landed` writes succeeded and the next one failed with
    `error` (None: all landed). Events: `RegistryWritten` for each landed write that had
    been pending, `RegistryWritePending` for each write that becomes pending now."""
    events = [
        EventIntent(
            "Normal",
            reasons.REGISTRY_WRITTEN,
            cap_message(
                f"{_what(write)} written to MLflow (decided at {write.decided_at.isoformat()},"
                f" {write.attempts} failed attempts before)"
            ),
        )
        for write in pending[:landed]
        if write.attempts > 0
    ]
    remaining = list(pending[landed:])
    if error is None or not remaining:
        return remaining, events
    retries = remaining[0].attempts + 1
    retry_at = now + datetime.timedelta(seconds=backoff_seconds(retries, jitter))
    failed = []
    for write in remaining:
        if write.attempts == 0:
            events.append(
                EventIntent(
                    "Warning",
                    reasons.REGISTRY_WRITE_PENDING,
                    cap_message(
                        f"{_what(write)} not written to MLflow yet (traffic already moved):"
                        f" {error}; retried with backoff"
                    ),
                )
            )
        failed.append(
            write.model_copy(
                update={
                    "attempts": write.attempts + 1,
                    "next_attempt_at": retry_at,
                    "last_error": cap_message(error),
                }
            )
        )
    return failed, events
