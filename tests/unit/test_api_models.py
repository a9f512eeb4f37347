"""Parsing objects into the typed models: what is accepted, what is refused and why."""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml
from pydantic import ValidationError

from mlcycle.api.v1alpha1 import (
    GROUP,
    KINDS,
    VERSION,
    Condition,
    CustomResource,
    InferenceService,
    ModelVersion,
    TrainingJob,
)
from tests.builders import a_model_version, a_training_job, an_inference_service

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _body(kind: type[CustomResource], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored object whose spec is exactly `spec`, in wire form: the tables below are the
    specs under test, so no builder default may slip in."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind.kind_name(),
        "metadata": {"name": "x", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": dict(spec),
    }


TRAINING = {"image": "example/train:1", "command": ["python", "train.py"]}
MODEL_VERSION = {"modelName": "iris", "source": {"uri": "s3://models/iris"}}
SERVICE = {"model": {"name": "iris", "alias": "champion"}}

VALID: list[tuple[str, type[CustomResource], dict[str, Any]]] = [
    ("minimal training", TrainingJob, TRAINING),
    (
        "training with everything",
        TrainingJob,
        {
            **TRAINING,
            "args": ["--epochs", "3"],
            "env": [
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            ],
            "resources": {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"nvidia.com/gpu": 1},
            },
            "podTemplate": {
                "nodeSelector": {"gpu": "a100"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"anything": ["goes", "here"]}},
                "volumes": [{"name": "data", "emptyDir": {}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "imagePullSecrets": [{"name": "registry"}],
                "serviceAccountName": "trainer",
                "priorityClassName": "high",
                "securityContext": {"runAsUser": 1000},
            },
            "hyperparameters": {"learning_rate": "0.1", "n.estimators": "100"},
            "mlflow": {"experimentName": "iris", "runName": "try-1", "tags": {"team": "ml"}},
            "dataset": {"uri": "s3://data/iris.csv", "digest": "abc", "version": "3"},
            "s3": {"secretRef": {"name": "s3-creds"}, "endpoint": "http://127.0.0.1:9000"},
            "workers": 2,
            "backoffLimit": 3,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 60,
            "startupDeadlineSeconds": 120,
            "suspend": True,
            "queueName": "team-a",
            "failurePolicy": {"retryableExitCodes": [137], "permanentExitCodes": [1, 2]},
            "register": {
                "modelName": "iris-classifier",
                "gates": [{"metric": "accuracy", "op": ">=", "value": 0.9}],
                "compareTo": "@champion",
                "compareMetric": "accuracy",
                "aliases": ["challenger"],
            },
        },
    ),
    (
        "version from a training job",
        ModelVersion,
        {**MODEL_VERSION, "source": {"trainingJobRef": {"name": "t"}}},
    ),
    ("version from a run", ModelVersion, {**MODEL_VERSION, "source": {"run": {"runId": "a1b2c3"}}}),
    ("version from a uri", ModelVersion, MODEL_VERSION),
    (
        "adopted version with approval",
        ModelVersion,
        {
            **MODEL_VERSION,
            "source": {"version": 3},
            "aliases": ["challenger", "staging"],
            "approval": {
                "required": True,
                "approvedBy": "alice",
                "approvedAt": "2025-01-01T00:00:00Z",
            },
            "deletionPolicy": "Archive",
            "registeredModel": {"description": "iris", "tags": {"team": "ml"}},
        },
    ),
    ("service following an alias", InferenceService, SERVICE),
    ("service on a version", InferenceService, {"model": {"name": "iris", "version": 2}}),
    (
        "service on a ModelVersion",
        InferenceService,
        {"model": {"modelVersionRef": {"name": "iris-v2"}}},
    ),
    (
        "service with everything",
        InferenceService,
        {
            **SERVICE,
            "server": {
                "replicas": 2,
                "minReplicas": 1,
                "maxReplicas": 4,
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "batching": {"maxBatchSize": 16, "maxLatencyMs": 10},
            },
            "traffic": {
                "mode": "gateway-api",
                "gateway": {"parentRef": {"name": "gw", "sectionName": "http"}},
            },
            "rollout": {
                "strategy": "ABTest",
                "steps": [5, 50],
                "interval": "1m30s",
                "capacity": "neutral",
                "abTest": {"headerName": "x-variant", "headerValue": "b", "weight": 10},
            },
            "analysis": {
                "minRequests": 20,
                "successRateMin": 0.99,
                "latencyP99MaxMs": 250,
                "driftMax": 0.2,
                "failureThreshold": 3,
                "prometheus": [{"name": "errors", "query": "sum(rate(x[1m]))", "max": 0.01}],
            },
            "paused": True,
            "registry": {"promoteAlias": "champion"},
        },
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec"), [case[1:] for case in VALID], ids=[case[0] for case in VALID]
)
def test_valid_specs_parse(kind: type[CustomResource], spec: dict[str, Any]) -> None:
    parsed = kind.from_body(_body(kind, spec))
    assert parsed.metadata.uid == "u-1"
    # What the operator writes back (status, children) comes from the same aliases.
    assert (
        parsed.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)["spec"].keys()
        <= spec.keys()
    )


INVALID: list[tuple[str, type[CustomResource], dict[str, Any], str, str]] = [
    ("no image", TrainingJob, {"command": ["x"]}, "spec.image", "Field required"),
    (
        "zero workers",
        TrainingJob,
        {**TRAINING, "workers": 0},
        "spec.workers",
        "greater than or equal to 1",
    ),
    ("unknown field", TrainingJob, {**TRAINING, "worker": 2}, "spec.worker", "Extra inputs"),
    (
        "bad quantity",
        TrainingJob,
        {**TRAINING, "resources": {"limits": {"cpu": "lots"}}},
        "spec.resources.limits.cpu",
        "not a quantity",
    ),
    (
        "env value and valueFrom",
        TrainingJob,
        {
            **TRAINING,
            "env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
        },
        "spec.env.0",
        "not both",
    ),
    (
        "duplicate env names",
        TrainingJob,
        {**TRAINING, "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "spec.env",
        "duplicate",
    ),
    (
        "valueFrom with two sources",
        TrainingJob,
        {
            **TRAINING,
            "env": [
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "x"},
                        "secretKeyRef": {"name": "s", "key": "k"},
                    },
                }
            ],
        },
        "spec.env.0.valueFrom",
        "exactly one of",
    ),
    (
        "bad hyperparameter name",
        TrainingJob,
        {**TRAINING, "hyperparameters": {"9 lives": "x"}},
        "spec.hyperparameters",
        "names are",
    ),
    (
        "gate op",
        TrainingJob,
        {
            **TRAINING,
            "register": {"modelName": "m", "gates": [{"metric": "a", "op": "~", "value": 1}]},
        },
        "spec.register.gates.0.op",
        "Input should be",
    ),
    (
        "compareTo syntax",
        TrainingJob,
        {**TRAINING, "register": {"modelName": "m", "compareTo": "champion", "compareMetric": "a"}},
        "spec.register.compareTo",
        "pattern",
    ),
    (
        "compareTo alone",
        TrainingJob,
        {**TRAINING, "register": {"modelName": "m", "compareTo": "@champion"}},
        "spec.register",
        "together",
    ),
    (
        "exit code both ways",
        TrainingJob,
        {**TRAINING, "failurePolicy": {"retryableExitCodes": [1], "permanentExitCodes": [1]}},
        "spec.failurePolicy",
        "both retryable and permanent",
    ),
    (
        "exit code zero",
        TrainingJob,
        {**TRAINING, "failurePolicy": {"retryableExitCodes": [0]}},
        "spec.failurePolicy.retryableExitCodes.0",
        "greater than or equal to 1",
    ),
    (
        "two sources",
        ModelVersion,
        {**MODEL_VERSION, "source": {"uri": "s3://a", "version": 2}},
        "spec.source",
        "exactly one of: trainingJobRef, run, uri, version",
    ),
    ("no source", ModelVersion, {**MODEL_VERSION, "source": {}}, "spec.source", "exactly one of"),
    (
        "model name with slash",
        ModelVersion,
        {**MODEL_VERSION, "modelName": "a/b"},
        "spec.modelName",
        "pattern",
    ),
    (
        "reserved alias latest",
        ModelVersion,
        {**MODEL_VERSION, "aliases": ["Latest"]},
        "spec.aliases.0",
        "reserved",
    ),
    (
        "version-like alias",
        ModelVersion,
        {**MODEL_VERSION, "aliases": ["v2"]},
        "spec.aliases.0",
        "reserved",
    ),
    (
        "alias syntax",
        ModelVersion,
        {**MODEL_VERSION, "aliases": ["not ok"]},
        "spec.aliases.0",
        "pattern",
    ),
    (
        "duplicate aliases",
        ModelVersion,
        {**MODEL_VERSION, "aliases": ["a", "a"]},
        "spec.aliases",
        "duplicate",
    ),
    (
        "deletion policy",
        ModelVersion,
        {**MODEL_VERSION, "deletionPolicy": "Purge"},
        "spec.deletionPolicy",
        "Retain",
    ),
    (
        "approvedAt alone",
        ModelVersion,
        {**MODEL_VERSION, "approval": {"approvedAt": "2025-01-01T00:00:00Z"}},
        "spec.approval",
        "approvedBy",
    ),
    (
        "name without version or alias",
        InferenceService,
        {"model": {"name": "iris"}},
        "spec.model",
        "model is one of",
    ),
    (
        "version and alias",
        InferenceService,
        {"model": {"name": "iris", "version": 1, "alias": "a"}},
        "spec.model",
        "model is one of",
    ),
    (
        "ref and name",
        InferenceService,
        {"model": {"modelVersionRef": {"name": "v"}, "name": "iris", "version": 1}},
        "spec.model",
        "model is one of",
    ),
    (
        "alias with @",
        InferenceService,
        {"model": {"name": "iris", "alias": "@champion"}},
        "spec.model.alias",
        "pattern",
    ),
    (
        "step over 100",
        InferenceService,
        {**SERVICE, "rollout": {"steps": [10, 101]}},
        "spec.rollout.steps.1",
        "less than or equal to 100",
    ),
    (
        "steps decreasing",
        InferenceService,
        {**SERVICE, "rollout": {"steps": [50, 10]}},
        "spec.rollout.steps",
        "increasing",
    ),
    (
        "steps repeated",
        InferenceService,
        {**SERVICE, "rollout": {"steps": [10, 10]}},
        "spec.rollout.steps",
        "duplicate",
    ),
    (
        "interval syntax",
        InferenceService,
        {**SERVICE, "rollout": {"interval": "5 minutes"}},
        "spec.rollout.interval",
        "pattern",
    ),
    (
        "ABTest without header",
        InferenceService,
        {**SERVICE, "rollout": {"strategy": "ABTest"}},
        "spec.rollout",
        "needs abTest",
    ),
    (
        "gateway mode without gateway",
        InferenceService,
        {**SERVICE, "traffic": {"mode": "gateway-api"}},
        "spec.traffic",
        "gateway-api",
    ),
    (
        "traffic mode",
        InferenceService,
        {**SERVICE, "traffic": {"mode": "mesh"}},
        "spec.traffic.mode",
        "router",
    ),
    (
        "min over max replicas",
        InferenceService,
        {**SERVICE, "server": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.server",
        "must not exceed",
    ),
    (
        "min replicas alone",
        InferenceService,
        {**SERVICE, "server": {"minReplicas": 2}},
        "spec.server",
        "needs maxReplicas",
    ),
    (
        "success rate over 1",
        InferenceService,
        {**SERVICE, "analysis": {"successRateMin": 1.5}},
        "spec.analysis.successRateMin",
        "less than or equal to 1",
    ),
    (
        "query without bounds",
        InferenceService,
        {**SERVICE, "analysis": {"prometheus": [{"name": "q", "query": "up"}]}},
        "spec.analysis.prometheus.0",
        "min, max or both",
    ),
    (
        "query bounds crossed",
        InferenceService,
        {**SERVICE, "analysis": {"prometheus": [{"name": "q", "query": "up", "min": 2, "max": 1}]}},
        "spec.analysis.prometheus.0",
        "must not exceed",
    ),
]


def _errors(error: ValidationError) -> Iterator[tuple[str, str]]:
    for item in error.errors():
        yield ".".join(str(part) for part in item["loc"]), item["msg"]


@pytest.mark.parametrize(
    ("kind", "spec", "location", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_specs_are_refused_at_the_field_with_a_reason(
    kind: type[CustomResource], spec: dict[str, Any], location: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        kind.from_body(_body(kind, spec))
    errors = list(_errors(caught.value))
    assert any(loc == location and message in msg for loc, msg in errors), errors


def test_defaults_fill_what_the_user_left_out() -> None:
    job = a_training_job().command("python", "train.py").obj()
    assert (job.spec.workers, job.spec.suspend, job.spec.hyperparameters, job.status) == (
        1,
        False,
        {},
        None,
    )
    version = a_model_version().model("iris").from_uri("s3://models/iris").obj()
    assert version.spec.deletion_policy == "Retain"
    assert version.spec.aliases == []
    service = an_inference_service().model("iris", alias="champion").obj()
    assert service.spec.traffic.mode == "router"
    assert service.spec.rollout.strategy == "Canary"
    assert service.spec.rollout.steps == [10, 25, 50]
    assert service.spec.rollout.interval == "1m"
    assert service.spec.rollout.capacity == "surge"
    assert service.spec.analysis.failure_threshold == 2
    assert service.spec.server.replicas == 1
    assert service.spec.paused is False


def test_defaults_are_not_shared_between_objects() -> None:
    first = an_inference_service().model("iris", alias="champion").obj()
    second = an_inference_service().model("iris", alias="champion").obj()
    first.spec.rollout.steps.append(75)
    assert second.spec.rollout.steps == [10, 25, 50]


def test_fields_are_camel_case_on_the_wire_and_snake_case_in_python() -> None:
    job = (
        a_training_job()
        .command("python", "train.py")
        .spec(ttlSecondsAfterFinished=30, register={"modelName": "m"})
        .obj()
    )
    assert job.spec.ttl_seconds_after_finished == 30
    assert job.spec.registration is not None
    assert job.spec.registration.model_name == "m"
    wire = job.model_dump(by_alias=True, exclude_none=True)
    assert wire["spec"]["ttlSecondsAfterFinished"] == 30
    assert wire["spec"]["register"]["artifactPath"] == "model"
    assert wire["apiVersion"] == "mlcycle.dev/v1alpha1"
    assert wire["kind"] == "TrainingJob"
    # Python code may build objects by field name too.
    built = TrainingJob(spec={"image": "x", "ttl_seconds_after_finished": 30})
    assert built.spec.ttl_seconds_after_finished == 30


def test_from_body_takes_kopf_bodies_and_ignores_unknown_metadata() -> None:
    raw = a_training_job().command("python", "train.py").body()
    raw["metadata"].update(
        managedFields=[{"manager": "kubectl"}],
        ownerReferences=[],
        creationTimestamp="2025-01-01T00:00:00Z",
        labels={"team": "ml"},
    )
    raw["status"] = {
        "phase": "Running",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "SpecValid",
                "message": "spec accepted",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "metrics": {"accuracy": 0.97},
    }
    job = TrainingJob.from_body(kopf.Body(cast(kopf.RawBody, raw)))
    assert job.metadata.labels == {"team": "ml"}
    assert job.metadata.creation_timestamp == datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    assert job.status is not None
    assert job.status.phase == "Running"
    assert job.status.metrics == {"accuracy": 0.97}
    assert job.status.conditions[0].last_transition_time.year == 2025


def test_a_body_of_another_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="kind"):
        TrainingJob.from_body(a_model_version().model("iris").from_uri("s3://models/iris").body())


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"phase": "Exploded"}, "Input should be"),
        ({"conditions": [{"type": "Ready"}]}, "Field required"),
    ],
)
def test_status_is_typed_too(status: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        a_training_job().command("python", "train.py").status(**status).obj()


def test_conditions_round_trip_in_wire_form() -> None:
    condition = Condition(
        type="Ready",
        status="False",
        reason="MLflowUnavailable",
        message="connection refused",
        last_transition_time=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
        observed_generation=3,
    )
    wire = condition.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire == {
        "type": "Ready",
        "status": "False",
        "reason": "MLflowUnavailable",
        "message": "connection refused",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 3,
    }
    assert Condition.model_validate(wire) == condition


def test_kind_metadata() -> None:
    assert [(k.kind_name(), k.plural(), k.initial_phase()) for k in KINDS] == [
        ("TrainingJob", "trainingjobs", "Pending"),
        ("ModelVersion", "modelversions", "Pending"),
        ("InferenceService", "inferenceservices", "Progressing"),
    ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_examples_parse(path: Path) -> None:
    by_kind = {kind.kind_name(): kind for kind in KINDS}
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("apiVersion") == f"{GROUP}/{VERSION}":
            by_kind[document["kind"]].from_body(document)
