"""The InferenceService reconciler driven through several ticks against in-memory fakes:
children applied once while unchanged, the registry asked at most every RESOLVE_SECONDS, a
refused child backed off in the object's memory record, the record gone with the object."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.plan import reasons
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.plan.serving_names import INFERENCESERVICE_UID_LABEL
from mlcycle.reconcile.inferenceservice import (
    RESOLVE_SECONDS,
    InferenceServiceDeps,
    reconcile_inferenceservice,
)
from mlcycle.reconcile.outcome import Outcome
from tests.builders import an_inference_service, later
from tests.fakes import FakeCluster, FakeRegistry

pytestmark = pytest.mark.unit

SERVICE = an_inference_service("iris").model("iris", version=1)
UID = "uid-1"


class ClusterChildren:
    """Deployments as the operator's indexes would hold them: what the fake API server
    stores, by the owner's uid label."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._cluster = cluster

    def deployments(self, uid: str) -> Sequence[Mapping[str, Any]]:
        return [
            body
            for body in self._cluster.of_kind("Deployment")
            if (body["metadata"].get("labels") or {}).get(INFERENCESERVICE_UID_LABEL) == uid
        ]

    def pods(self, uid: str) -> Sequence[Mapping[str, Any]]:
        return []

    def model_version(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def model_versions_tracking(self, model_name: str, version: str) -> Sequence[Mapping[str, Any]]:
        return []


class Scenario:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.registry = FakeRegistry()
        self.registry.ensure_registered_model("iris", description=None, tags={})
        self.registry.create_version(
            "iris",
            source="s3://models/iris/1",
            owner_uid="someone-else",
            tags={},
            run_id=None,
            model_id=None,
            description=None,
        )
        self.registry.calls.clear()
        self.cluster.store(SERVICE.body())
        self.deps = InferenceServiceDeps(
            cluster=self.cluster,
            registry_for=lambda _uri: self.registry,
            default_tracking_uri=self.registry.tracking_uri,
            metrics=OperatorMetrics().rollouts,
            jitter=lambda: 0.0,
        )

    def tick(self, seconds: float = 0) -> Outcome:
        return asyncio.run(
            reconcile_inferenceservice(
                SERVICE.obj(), self.deps, ClusterChildren(self.cluster), later(seconds)
            )
        )

    def applied(self, kind: str) -> list[str]:
        return [str(m["metadata"]["name"]) for m in self.cluster.applied if m["kind"] == kind]

    def condition(self, type_: str) -> dict[str, Any]:
        stored = self.cluster.get("mlcycle.dev/v1alpha1", "InferenceService", "ns", "iris")
        assert stored is not None
        return next(c for c in stored["status"]["conditions"] if c["type"] == type_)


def test_unchanged_children_are_applied_once_and_the_registry_asked_once_per_interval() -> None:
    scenario = Scenario()

    first = scenario.tick()
    sent = len(scenario.cluster.applied)
    second = scenario.tick(1)
    third = scenario.tick(2)

    assert scenario.applied("Deployment") == ["iris-v1", "iris-router"]
    assert len(scenario.cluster.applied) == sent
    assert scenario.registry.calls["get_version"] == 1
    assert reasons.RESOLVED in [event.reason for event in first.events]
    assert second == third == Outcome([])
    # The rollout's next decision is the tick's: the handler never retries.
    assert first.retry_after is None

    scenario.tick(RESOLVE_SECONDS)
    assert scenario.registry.calls["get_version"] == 2


def test_a_refused_child_is_reported_and_sent_again_only_after_its_backoff() -> None:
    scenario = Scenario()
    scenario.cluster.refuse["Deployment"] = "admission webhook denied the request"

    scenario.tick()
    refused = scenario.condition(reasons.CHILDREN_APPLIED)
    assert (refused["status"], refused["reason"]) == ("False", reasons.CHILD_REFUSED)
    assert "admission webhook" in refused["message"]
    assert scenario.applied("Deployment") == ["iris-v1", "iris-router"]

    delay = backoff_seconds(1, 0.0)
    scenario.tick(delay / 2)
    assert scenario.applied("Deployment") == ["iris-v1", "iris-router"]
    # Still refused, though nothing was sent: the status keeps saying so.
    assert scenario.condition(reasons.CHILDREN_APPLIED)["reason"] == reasons.CHILD_REFUSED

    del scenario.cluster.refuse["Deployment"]
    scenario.tick(delay)
    assert scenario.applied("Deployment") == ["iris-v1", "iris-router"] * 2
    applied = scenario.condition(reasons.CHILDREN_APPLIED)
    assert (applied["status"], applied["reason"]) == ("True", reasons.APPLIED)


def test_the_memory_of_a_deleted_object_is_forgotten() -> None:
    scenario = Scenario()
    scenario.tick()
    sent = len(scenario.cluster.applied)
    assert UID in scenario.deps.memory

    scenario.deps.memory.forget(UID)

    assert UID not in scenario.deps.memory
    # Nothing remembered: an object of the same uid would be applied and resolved anew.
    scenario.tick(1)
    assert len(scenario.cluster.applied) == 2 * sent
    assert scenario.registry.calls["get_version"] == 2
