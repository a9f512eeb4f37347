"""The pieces every reconciler shares: the per-object memory record and its backoffs, the
apply of children with backoff, the status write, and the rule that turns a condition's
transition into an Event."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from mlcycle.api.v1alpha1 import TrainingJobStatus
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.plan.conditions import EventIntent, StatusPlan, condition_event, condition_events
from mlcycle.reconcile.children import Refused, apply_children
from mlcycle.reconcile.memory import Memory, ObjectMemory
from mlcycle.reconcile.status import with_written_status, write_status
from tests.builders import NOW, a_condition, a_training_job, later
from tests.fakes import FakeCluster

pytestmark = pytest.mark.unit


def test_a_backoff_doubles_with_each_failure_in_a_row_and_ends_on_recovery() -> None:
    memory: ObjectMemory[None] = ObjectMemory()

    first = memory.back_off("mlflow", NOW, 0.0)
    assert memory.waiting("mlflow", later(first - 0.1)) is not None
    assert memory.waiting("mlflow", later(first)) is None
    second = memory.back_off("mlflow", later(first), 0.0)

    assert (first, second) == (backoff_seconds(1, 0.0), backoff_seconds(2, 0.0))
    memory.recovered("mlflow")
    assert memory.backoffs == {}
    assert memory.back_off("mlflow", NOW, 0.0) == first


def test_a_backoff_holds_only_what_failed() -> None:
    memory: ObjectMemory[None] = ObjectMemory()
    memory.back_off("Deployment ns/iris", NOW, 0.0, digest="a", reason="Refused")

    assert memory.waiting("Deployment ns/iris", NOW, digest="a") is not None
    assert memory.waiting("Deployment ns/iris", NOW, digest="b") is None  # changed since
    assert memory.waiting("Service ns/iris", NOW) is None
    # A different manifest failing starts counting again.
    assert memory.back_off("Deployment ns/iris", NOW, 0.0, digest="b") == backoff_seconds(1, 0)


def test_the_store_keeps_one_record_per_uid_until_forgotten() -> None:
    store: Memory[None] = Memory()
    record = store.of("uid-1")

    assert store.of("uid-1") is record
    assert store.of("uid-2") is not record
    store.forget("uid-1")
    assert "uid-1" not in store
    assert store.of("uid-1") is not record


JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"namespace": "ns", "name": "train"}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ns", "name": "train"}}


def _apply(cluster: FakeCluster, memory: ObjectMemory[None], seconds: float) -> object:
    return asyncio.run(
        apply_children(
            cluster,
            memory,
            "job",
            [SERVICE, JOB],
            later(seconds),
            0.0,
            refusal_reason=lambda error: f"Refused:{error.message}",
        )
    )


def test_children_refused_are_not_sent_again_before_their_backoff_ends() -> None:
    cluster, memory = FakeCluster(), ObjectMemory[None]()
    cluster.refuse["Job"] = "quota"

    refused = _apply(cluster, memory, 0)
    assert refused == Refused("Refused:quota", "quota", backoff_seconds(1, 0.0), fresh=True)
    assert [m["kind"] for m in cluster.applied] == ["Service", "Job"]

    waiting = _apply(cluster, memory, 0.25)
    assert waiting == Refused("Refused:quota", "quota", backoff_seconds(1, 0.0) - 0.25, False)
    assert len(cluster.applied) == 2

    del cluster.refuse["Job"]
    applied = _apply(cluster, memory, backoff_seconds(1, 0.0))
    assert isinstance(applied, list)
    assert [body["kind"] for body in applied] == ["Service", "Job"]
    assert memory.backoffs == {}


def test_an_error_other_than_a_refusal_is_not_a_backoff() -> None:
    class Down(FakeCluster):
        def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            raise ConnectionError("reset")

    memory: ObjectMemory[None] = ObjectMemory()
    with pytest.raises(ConnectionError):
        _apply(Down(), memory, 0)
    assert memory.backoffs == {}


TRAINING = a_training_job("train")


def test_the_status_is_written_only_when_changed_and_remembered() -> None:
    cluster = FakeCluster()
    cluster.store(TRAINING.body())
    memory: ObjectMemory[None] = ObjectMemory()
    event = EventIntent("Normal", "Started", "started")

    unchanged = asyncio.run(
        write_status(cluster, TRAINING.obj(), memory, StatusPlan({"phase": "X"}, [], False))
    )
    assert unchanged == []
    assert cluster.status_patches == []
    assert with_written_status(TRAINING.obj(), memory, TrainingJobStatus).status is None

    events = asyncio.run(
        write_status(
            cluster, TRAINING.obj(), memory, StatusPlan({"phase": "Running"}, [event], True)
        )
    )
    assert events == [event]
    assert len(cluster.status_patches) == 1
    assert memory.written_status == {"phase": "Running"}
    latest = with_written_status(TRAINING.obj(), memory, TrainingJobStatus)
    assert latest.status is not None
    assert latest.status.phase == "Running"


def _at(minutes: float) -> datetime.datetime:
    return later(minutes=minutes)


def test_a_condition_event_is_for_a_new_status_or_reason_only() -> None:
    pending = a_condition("Registered", "False", "Registering", message="version 1 is PENDING")
    still = a_condition("Registered", "False", "Registering", message="version 1 is still so")
    failed = a_condition("Registered", "False", "RegistrationFailed", message="no artifact")
    ready = a_condition("Registered", "True", "VersionReady", message="READY", at=_at(1))

    assert condition_event([], [pending], "Registered") == EventIntent(
        "Warning", "Registering", "version 1 is PENDING"
    )
    assert condition_event([pending], [still], "Registered") is None  # the message only
    assert condition_event([pending], [failed], "Registered") == EventIntent(
        "Warning", "RegistrationFailed", "no artifact"
    )
    assert condition_event([failed], [ready], "Registered") == EventIntent(
        "Normal", "VersionReady", "READY"
    )
    assert condition_event([ready], [], "Registered") is None
    # A wait that needs nobody is announced as Normal.
    assert condition_events([], [pending], ["Registered"], normal_reasons={"Registering"}) == [
        EventIntent("Normal", "Registering", "version 1 is PENDING")
    ]
