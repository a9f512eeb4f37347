"""Registry write-backs: queued in order, retried with the shared backoff, one Event when a
write goes pending and one when it lands."""

from __future__ import annotations

import pytest

from mlcycle.api.v1alpha1.inferenceservice import PendingRegistryWrite
from mlcycle.plan import reasons
from mlcycle.plan.inferenceservice.registry_writeback import (
    PENDING_LIMIT,
    after_attempt,
    due,
    queued,
)
from tests.builders import NOW, later

pytestmark = pytest.mark.unit


def _write(version: str, **fields: object) -> PendingRegistryWrite:
    return PendingRegistryWrite.model_validate(
        {"modelName": "iris", "version": version, "tags": {"rollout": "failed"},
         "decidedAt": NOW.isoformat(), **fields}
    )  # fmt: skip


def test_a_write_that_lands_at_once_makes_no_event() -> None:
    remaining, events = after_attempt([_write("3")], 1, None, later(0), 0.5)
    assert (remaining, events) == ([], [])


def test_pending_then_written_one_event_each_and_none_per_retry() -> None:
    queue = [_write("3", alias=None), _write("4", alias="champion", tags={})]
    queue, events = after_attempt(queue, 0, "MLflow unavailable", later(0), 0.0)
    assert [e.reason for e in events] == [reasons.REGISTRY_WRITE_PENDING] * 2
    assert all(e.type == "Warning" for e in events)
    assert [w.attempts for w in queue] == [1, 1]
    assert queue[0].next_attempt_at == later(1)  # 2 s base, equal jitter 0
    assert not due(queue, later(0.5))
    assert due(queue, later(1))
    queue, events = after_attempt(queue, 0, "MLflow unavailable", later(1), 0.0)
    assert events == []
    assert queue[0].next_attempt_at == later(1 + 2)  # doubled
    assert queue[0].last_error == "MLflow unavailable"
    # The first lands, the second fails again: in order, one Event for the landed one.
    queue, events = after_attempt(queue, 1, "MLflow unavailable", later(3), 0.0)
    assert [e.reason for e in events] == [reasons.REGISTRY_WRITTEN]
    assert "rollout=failed on version 3" in events[0].message
    assert [(w.version, w.attempts) for w in queue] == [("4", 3)]
    queue, events = after_attempt(queue, 1, None, later(10), 0.0)
    assert queue == []
    assert [(e.type, e.reason) for e in events] == [("Normal", reasons.REGISTRY_WRITTEN)]
    assert "alias champion on version 4" in events[0].message


def test_the_queue_keeps_the_newest() -> None:
    owed = [_write(str(n)) for n in range(PENDING_LIMIT)]
    kept = queued(owed, [_write("new")])
    assert len(kept) == PENDING_LIMIT
    assert (kept[0].version, kept[-1].version) == ("1", "new")
    assert not due([], later(0))
