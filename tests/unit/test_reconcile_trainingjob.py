"""The TrainingJob reconciler driven through several passes against in-memory fakes: one
run and one Job however often it runs, MLflow outages and refused Jobs backed off in the
object's memory record, transitions announced once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.api.v1alpha1 import TrainingJob
from mlcycle.plan import reasons
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.reconcile.outcome import Outcome
from mlcycle.reconcile.trainingjob import (
    TrainingDeps,
    kill_run_on_delete,
    reconcile_trainingjob,
)
from tests.builders import a_training_job, later
from tests.fakes import FakeCluster, FakeTracking

pytestmark = pytest.mark.unit

TRAINING = a_training_job("train").command("python", "train.py")


class ClusterChildren:
    """Jobs as the operator's indexes would hold them: what the fake API server stores."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._cluster = cluster

    def job(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._cluster.get("batch/v1", "Job", namespace, name)

    def pods(self, namespace: str, job_name: str) -> Sequence[Mapping[str, Any]]:
        return []


class Scenario:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.tracking = FakeTracking()
        self.cluster.store(TRAINING.body())
        self.deps = TrainingDeps(
            cluster=self.cluster,
            tracking_for=lambda _uri: self.tracking,
            default_tracking_uri=self.tracking.tracking_uri,
            metrics=OperatorMetrics().training,
            jitter=lambda: 0.0,
        )

    def reconcile(self, seconds: float = 0, tj: TrainingJob | None = None) -> Outcome:
        # Every trigger holds the body it was fired with: the one without status, unless
        # a test says otherwise. The reconciler must not be misled by it.
        training = tj if tj is not None else TRAINING.obj()
        return asyncio.run(
            reconcile_trainingjob(
                training, self.deps, ClusterChildren(self.cluster), later(seconds)
            )
        )

    def status(self) -> dict[str, Any]:
        stored = self.cluster.get("mlcycle.dev/v1alpha1", "TrainingJob", "ns", "train")
        assert stored is not None
        status: dict[str, Any] = stored.get("status") or {}
        return status

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status()["conditions"] if c["type"] == type_)

    def kinds_applied(self) -> list[str]:
        return [str(manifest["kind"]) for manifest in self.cluster.applied]


def test_a_training_gets_one_run_and_one_job_however_often_it_is_reconciled() -> None:
    scenario = Scenario()

    first = scenario.reconcile()
    second = scenario.reconcile(5)
    third = scenario.reconcile(10)

    assert scenario.tracking.calls["create_run"] == 1
    # The status the first pass wrote names the run: MLflow is not searched again.
    assert scenario.tracking.calls["ensure_run"] == 1
    assert scenario.kinds_applied() == ["Job"]
    assert [event.reason for event in first.events] == [reasons.JOB_CREATED, reasons.RUN_BOUND]
    # Transitions are announced once, though the later triggers hold the stale body.
    assert second.events == third.events == []
    [run_id] = scenario.tracking.runs
    assert scenario.status()["mlflowRunId"] == run_id
    assert scenario.status()["jobName"] == "train"


def test_an_mlflow_outage_backs_off_in_the_memory_record_without_calling_mlflow() -> None:
    scenario = Scenario()
    scenario.tracking.down = True

    first = scenario.reconcile()
    assert first.retry_after == backoff_seconds(1, 0.0)
    assert [(event.type, event.reason) for event in first.events] == [
        ("Warning", reasons.MLFLOW_UNAVAILABLE)
    ]
    assert scenario.condition(reasons.TRACKING_READY)["status"] == "False"

    during = scenario.reconcile(first.retry_after / 2)
    assert during == Outcome([], retry_after=first.retry_after / 2)
    assert scenario.tracking.calls["ensure_run"] == 1  # not called while backing off

    again = scenario.reconcile(first.retry_after)
    assert scenario.tracking.calls["ensure_run"] == 2
    assert again.retry_after == backoff_seconds(2, 0.0)  # doubled: a second failure in a row
    assert again.events == []  # the same reason, announced once

    scenario.tracking.down = False
    recovered = scenario.reconcile(first.retry_after + again.retry_after)
    assert recovered.retry_after is None
    assert scenario.condition(reasons.TRACKING_READY)["reason"] == reasons.RUN_BOUND
    assert scenario.kinds_applied() == ["Job"]
    assert scenario.deps.memory.of("uid-1").backoffs == {}


def test_a_refused_job_is_reported_and_sent_again_only_after_its_backoff() -> None:
    scenario = Scenario()
    scenario.cluster.refuse["Job"] = "exceeded quota: compute-resources"

    first = scenario.reconcile()
    assert first.retry_after == backoff_seconds(1, 0.0)
    assert [(event.type, event.reason) for event in first.events] == [
        ("Warning", reasons.JOB_REFUSED)
    ]
    refused = scenario.condition(reasons.CHILDREN_APPLIED)
    assert (refused["status"], refused["reason"]) == ("False", reasons.JOB_REFUSED)
    assert "exceeded quota" in refused["message"]

    during = scenario.reconcile(first.retry_after / 2)
    assert during == Outcome([], retry_after=first.retry_after / 2)
    assert scenario.kinds_applied() == ["Job"]  # the refused one only

    del scenario.cluster.refuse["Job"]
    scenario.reconcile(first.retry_after)
    assert scenario.kinds_applied() == ["Job", "Job"]
    assert len(scenario.cluster.of_kind("Job")) == 1
    accepted = scenario.condition(reasons.CHILDREN_APPLIED)
    assert (accepted["status"], accepted["reason"]) == ("True", reasons.APPLIED)
    assert scenario.deps.memory.of("uid-1").backoffs == {}


def test_a_training_deleted_while_running_leaves_its_run_killed() -> None:
    scenario = Scenario()
    scenario.reconcile()
    [run_id] = scenario.tracking.runs
    running = TRAINING.status(phase="Running", mlflow_run_id=run_id).obj()

    asyncio.run(kill_run_on_delete(running, scenario.deps))

    assert scenario.tracking.runs[run_id]["status"] == "KILLED"
