"""The ModelVersion reconciler driven through several passes against in-memory fakes: one
registry version however often it runs, an outage backed off, Ready objects compared with
MLflow at the drift interval only, the deletion policy applied."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.adapters.registry import SourceRun
from mlcycle.api.v1alpha1 import ModelVersion
from mlcycle.plan import modelversion as plan
from mlcycle.plan import reasons
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.reconcile.modelversion import (
    ModelVersionDeps,
    finalize_modelversion,
    reconcile_modelversion,
)
from mlcycle.reconcile.outcome import Outcome
from tests.builders import RUN_ID, a_model_version, later
from tests.fakes import FakeCluster, FakeRegistry

pytestmark = pytest.mark.unit

VERSION = a_model_version("iris-v1").from_run(RUN_ID)
DRIFT_CHECK_SECONDS = 60.0


class Scenario:
    def __init__(self, version: Any = VERSION) -> None:
        self.version = version
        self.cluster = FakeCluster()
        self.registry = FakeRegistry()
        self.registry.source_runs[RUN_ID] = SourceRun(
            RUN_ID, "FINISHED", "1", None, None, None, None
        )
        self.cluster.store(version.body())
        self.deps = ModelVersionDeps(
            cluster=self.cluster,
            registry_for=lambda _uri: self.registry,
            default_tracking_uri=self.registry.tracking_uri,
            metrics=OperatorMetrics().registration,
            jitter=lambda: 0.0,
            drift_check_seconds=DRIFT_CHECK_SECONDS,
        )

    def body(self) -> dict[str, Any]:
        body = self.cluster.get("mlcycle.dev/v1alpha1", "ModelVersion", "ns", "iris-v1")
        assert body is not None
        return body

    def stored(self) -> ModelVersion:
        return ModelVersion.from_body(self.body())

    def reconcile(self, seconds: float = 0, *, resync: bool = False) -> Outcome:
        # The trigger's body is the stored one, as the resync's index would hand it over.
        return asyncio.run(
            reconcile_modelversion(self.stored(), self.deps, later(seconds), resync=resync)
        )

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.body().get("status") or {}
        return status


def test_a_version_is_registered_once_however_often_it_is_reconciled() -> None:
    scenario = Scenario()

    first = scenario.reconcile()
    second = scenario.reconcile(10)

    assert scenario.registry.calls["create_version"] == 1
    assert list(scenario.registry.versions) == [("iris", "1")]
    assert scenario.status()["phase"] == "Ready"
    assert scenario.status()["version"] == "1"
    assert reasons.VERSION_CREATED in [event.reason for event in first.events]
    assert second == Outcome([])


def test_a_version_still_registering_is_polled_until_ready() -> None:
    scenario = Scenario()
    scenario.registry.registering = True

    first = scenario.reconcile()
    assert first.retry_after == plan.REGISTERING_POLL_SECONDS
    assert scenario.status()["phase"] == "Registering"

    key = ("iris", "1")
    scenario.registry.versions[key] = dataclasses.replace(
        scenario.registry.versions[key], status="READY"
    )
    ready = scenario.reconcile(plan.REGISTERING_POLL_SECONDS)
    assert ready.retry_after is None
    assert scenario.status()["phase"] == "Ready"
    assert scenario.registry.calls["create_version"] == 1


def test_an_mlflow_outage_is_retried_with_backoff_without_calling_mlflow_meanwhile() -> None:
    scenario = Scenario()
    scenario.registry.down = True

    first = scenario.reconcile()
    assert first.retry_after == backoff_seconds(1, 0.0)
    assert scenario.status()["retryCount"] == 1
    calls = sum(scenario.registry.calls.values())

    during = scenario.reconcile(first.retry_after / 2)
    assert during.retry_after == pytest.approx(first.retry_after / 2)
    assert sum(scenario.registry.calls.values()) == calls

    scenario.registry.down = False
    scenario.reconcile(first.retry_after)
    assert scenario.status()["phase"] == "Ready"
    assert "retryCount" not in scenario.status()


def test_a_ready_version_is_compared_with_mlflow_at_the_drift_interval_only() -> None:
    scenario = Scenario()
    scenario.reconcile()
    calls = sum(scenario.registry.calls.values())

    scenario.reconcile(DRIFT_CHECK_SECONDS / 2, resync=True)
    assert sum(scenario.registry.calls.values()) == calls

    scenario.reconcile(DRIFT_CHECK_SECONDS, resync=True)
    assert sum(scenario.registry.calls.values()) > calls


def test_the_delete_policy_removes_the_version_from_the_registry() -> None:
    scenario = Scenario(VERSION.spec(deletion_policy="Delete"))
    scenario.reconcile()
    assert list(scenario.registry.versions) == [("iris", "1")]

    delay = asyncio.run(finalize_modelversion(scenario.stored(), scenario.deps, attempt=0))

    assert delay is None
    assert scenario.registry.versions == {}
