"""ModelVersion against the real MLflow registry (and S3 store) and the real apiserver."""

from __future__ import annotations

import asyncio
import datetime
import json
import tempfile
import time
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.kube import new_api_client
from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.adapters.registry import MlflowRegistry, VersionRecord
from mlcycle.api.v1alpha1 import ModelVersion
from mlcycle.dev.cluster import LocalStack
from mlcycle.reconcile.modelversion import ModelVersionDeps, reconcile_modelversion
from tests.builders import a_model_version
from tests.harness import (
    REPO_ROOT,
    Kubectl,
    RunningOperator,
    event_reasons,
    eventually,
    operator_in_thread,
    scrape,
)
from tests.integration.objects import (
    apply,
    condition,
    find,
    get,
    status_of,
    wait_for_condition,
    wait_for_phase,
)

pytestmark = pytest.mark.integration

UID_TAG = "mlcycle.dev/uid"


@pytest.fixture
def operator_settings() -> dict[str, object]:
    """Drift is looked for every 2 s, so a test sees it corrected within its deadline."""
    return {"drift_check_seconds": 2}


@pytest.fixture
def mlflow_client(stack: LocalStack) -> MlflowClient:
    return MlflowClient(
        tracking_uri=stack.env()["MLFLOW_TRACKING_URI"],
        registry_uri=stack.env()["MLFLOW_TRACKING_URI"],
    )


# --- helpers -------------------------------------------------------------------------------


def _logged_run(stack: LocalStack, experiment: str) -> tuple[str, str]:
    """A finished run that logged a small scikit-learn model as `model`: (run id, model id)."""
    mlflow.set_tracking_uri(stack.env()["MLFLOW_TRACKING_URI"])
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    labels = np.array([0, 1, 0, 1])
    with mlflow.start_run(experiment_id=experiment_id) as run:
        model = LogisticRegression().fit(features, labels)
        info = mlflow.sklearn.log_model(model, name="model", input_example=features[:2])
    return run.info.run_id, str(info.model_id)


def _uid(kubectl: Kubectl, namespace: str, name: str) -> str:
    return str(get(kubectl, namespace, "modelversion", name)["metadata"]["uid"])


def _versions_of(client: MlflowClient, model: str, uid: str) -> list[Any]:
    return list(client.search_model_versions(f"name = '{model}' and tags.`{UID_TAG}` = '{uid}'"))


# --- tests ---------------------------------------------------------------------------------


def test_registers_from_a_run_with_tags_aliases_signature_and_lineage(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, model_id = _logged_run(stack, namespace)
    model = f"{namespace}-clf"
    apply(
        kubectl,
        namespace,
        a_model_version("clf-v1")
        .model(model)
        .from_run(run_id, artifact_path="model")
        .aliases("challenger")
        .spec(
            description="first classifier",
            tags={"team": "fraud"},
            registeredModel={"description": "fraud classifier", "tags": {"owner": "team-a"}},
        )
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "modelversion", "clf-v1", "Ready", timeout=90)
    assert status["version"] == "1"
    assert status["modelUri"] == f"models:/{model}/1"
    # MLflow 3 logs the model as a LoggedModel: registered by its id, not a run path.
    assert status["source"] == f"models:/{model_id}"
    assert status["lineage"]["runId"] == run_id
    assert status["lineage"]["loggedModelId"] == model_id
    assert status["lineage"]["experimentId"]
    assert "float64" in status["signature"]["inputs"]
    assert status["aliases"] == ["challenger"]
    assert [move["alias"] for move in status["aliasHistory"]] == ["challenger"]
    for type_ in ("SourceReady", "Registered", "AliasesSynced", "Ready"):
        assert condition(status, type_)["status"] == "True", status["conditions"]

    uid = _uid(kubectl, namespace, "clf-v1")
    [version] = _versions_of(mlflow_client, model, uid)
    assert version.version == "1"
    assert version.run_id == run_id
    assert version.description == "first classifier"
    assert version.tags["team"] == "fraud"
    assert version.tags["mlcycle.dev/name"] == "clf-v1"
    assert version.tags["mlcycle.dev/alias.challenger"].startswith("Set at ")
    registered = mlflow_client.get_registered_model(model)
    assert registered.aliases == {"challenger": "1"}
    assert registered.description == "fraud classifier"
    assert registered.tags["owner"] == "team-a"

    printed = kubectl("get", "modelversion", "clf-v1", "-n", namespace).stdout
    for column in ("MODEL", "VERSION", "ALIASES", "PHASE", "AGE"):
        assert column in printed
    assert model in printed
    assert "challenger" in printed
    reasons = event_reasons(kubectl, namespace, "ModelVersion", "clf-v1")
    for reason in ("VersionCreated", "AliasMoved", "VersionReady"):
        assert reasons[reason] == 1, reasons
    exposition = scrape(operator.url)
    assert 'mlcycle_modelversion_registrations_total{result="created"} 1.0' in exposition
    assert "mlcycle_modelversion_registration_latency_seconds_count 1.0" in exposition


def _s3_location(client: MlflowClient, model_id: str) -> str:
    """Where the LoggedModel's files sit in the S3 store behind MLflow's artifact proxy."""
    location = str(client.get_logged_model(model_id).artifact_location)
    return location.replace("mlflow-artifacts:/", "s3://mlflow/artifacts/", 1)


def test_registers_from_a_uri(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    _run_id, model_id = _logged_run(stack, namespace)
    uri = _s3_location(mlflow_client, model_id)
    model = f"{namespace}-uri"
    apply(kubectl, namespace, a_model_version("from-uri").model(model).from_uri(uri).manifest())
    status = wait_for_phase(kubectl, namespace, "modelversion", "from-uri", "Ready", timeout=90)
    assert status["source"] == uri
    assert status["version"] == "1"
    assert "float64" in status["signature"]["inputs"]
    [version] = _versions_of(mlflow_client, model, _uid(kubectl, namespace, "from-uri"))
    assert version.source == uri
    assert not version.run_id


def test_an_unwritable_tmp_is_a_signature_condition_and_the_read_is_retried(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The operator's only writable place is /tmp (read-only root): one that is missing
    # makes the MLmodel download fail with an OSError. Registration goes on; the failure
    # is a condition with its cause, and the read succeeds once /tmp is back.
    _run_id, model_id = _logged_run(stack, namespace)
    uri = _s3_location(mlflow_client, model_id)
    monkeypatch.setattr(tempfile, "tempdir", f"/nonexistent-{namespace}/tmp")
    apply(
        kubectl,
        namespace,
        a_model_version("no-tmp").model(f"{namespace}-no-tmp").from_uri(uri).manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "modelversion", "no-tmp", "Ready", timeout=90)
    read = condition(status, "SignatureRead")
    assert (read["status"], read["reason"]) == ("False", "SignatureUnavailable"), read
    assert "cannot create a directory" in read["message"], read
    assert "signature" not in status
    assert event_reasons(kubectl, namespace, "ModelVersion", "no-tmp")["SignatureUnavailable"] == 1

    monkeypatch.undo()
    status = wait_for_condition(
        kubectl, namespace, "modelversion", "no-tmp", "SignatureRead", "SignatureFound", timeout=60
    )
    assert "float64" in status["signature"]["inputs"]
    assert event_reasons(kubectl, namespace, "ModelVersion", "no-tmp")["SignatureUnavailable"] == 1


def test_adopts_an_existing_version_without_registering_another(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, model_id = _logged_run(stack, namespace)
    model = f"{namespace}-adopted"
    mlflow_client.create_registered_model(model)
    mlflow_client.create_model_version(
        model, f"models:/{model_id}", run_id=run_id, model_id=model_id, await_creation_for=30
    )
    apply(
        kubectl,
        namespace,
        a_model_version("adopted")
        .model(model)
        .from_version(1)
        .aliases("champion")
        .spec(tags={"stage": "prod"})
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "modelversion", "adopted", "Ready", timeout=90)
    assert status["version"] == "1"
    assert status["lineage"]["runId"] == run_id
    versions = mlflow_client.search_model_versions(f"name = '{model}'")
    assert [v.version for v in versions] == ["1"]
    assert versions[0].tags[UID_TAG] == _uid(kubectl, namespace, "adopted")
    assert versions[0].tags["stage"] == "prod"
    assert mlflow_client.get_registered_model(model).aliases == {"champion": "1"}
    assert event_reasons(kubectl, namespace, "ModelVersion", "adopted")["VersionAdopted"] == 1
    assert 'mlcycle_modelversion_registrations_total{result="adopted"} 1.0' in scrape(operator.url)


def test_approval_gate_holds_aliases_until_approved(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, _model_id = _logged_run(stack, namespace)
    model = f"{namespace}-gated"
    apply(
        kubectl,
        namespace,
        a_model_version("gated")
        .model(model)
        .from_run(run_id)
        .aliases("champion")
        .spec(approval={"required": True})
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "modelversion", "gated", "Ready", timeout=90)
    assert condition(status, "Approved")["reason"] == "AwaitingApproval"
    assert condition(status, "AliasesSynced")["reason"] == "AwaitingApproval"
    assert status["approval"]["approved"] is False
    assert status.get("aliases", []) == []
    assert mlflow_client.get_registered_model(model).aliases == {}

    kubectl(
        "patch", "modelversion", "gated", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"approval": {"required": True, "approvedBy": "alice"}}}),
    )  # fmt: skip
    status = wait_for_condition(
        kubectl, namespace, "modelversion", "gated", "AliasesSynced", "AliasesSet", timeout=60
    )
    assert status["approval"]["approvedBy"] == "alice"
    assert status["approval"]["approvedAt"]
    assert condition(status, "Approved")["status"] == "True"
    assert mlflow_client.get_registered_model(model).aliases == {"champion": status["version"]}


def test_deletion_policies_retain_archive_and_delete(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, _model_id = _logged_run(stack, namespace)
    model = f"{namespace}-policies"
    policies = {"kept": ("Retain", "kept"), "archived": ("Archive", "old"), "gone": ("Delete", "x")}
    for name, (policy, alias) in policies.items():
        apply(
            kubectl,
            namespace,
            a_model_version(name)
            .model(model)
            .from_run(run_id)
            .aliases(alias)
            .spec(deletionPolicy=policy)
            .manifest(),
        )
    versions = {
        name: wait_for_phase(kubectl, namespace, "modelversion", name, "Ready", timeout=90)[
            "version"
        ]
        for name in policies
    }
    # kopf's finalizer holds every object until its policy ran.
    for name in policies:
        assert (
            "mlcycle.dev/finalizer"
            in get(kubectl, namespace, "modelversion", name)["metadata"]["finalizers"]
        )
        kubectl("delete", "modelversion", name, "-n", namespace, "--wait=true", "--timeout=60s")

    kept = mlflow_client.get_model_version(model, versions["kept"])
    assert "mlcycle.dev/archived" not in kept.tags
    archived = mlflow_client.get_model_version(model, versions["archived"])
    assert archived.tags["mlcycle.dev/archived"] == "true"
    remaining = [v.version for v in mlflow_client.search_model_versions(f"name = '{model}'")]
    assert versions["gone"] not in remaining
    registered = mlflow_client.get_registered_model(model)
    # Retain keeps the alias; Archive drops it; Delete takes it with the version.
    assert registered.aliases == {"kept": versions["kept"]}
    # No object owns an alias any more: the claims went with their objects.
    assert not [key for key in registered.tags if key.startswith("mlcycle.dev/alias-owner.")]


def test_mlflow_outage_during_registration_retries_with_backoff_and_registers_once(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    _run_id, model_id = _logged_run(stack, namespace)
    uri = _s3_location(mlflow_client, model_id)
    model = f"{namespace}-outage"
    stack.stop_mlflow()
    try:
        apply(kubectl, namespace, a_model_version("outage").model(model).from_uri(uri).manifest())
        wait_for_condition(
            kubectl,
            namespace,
            "modelversion",
            "outage",
            "Registered",
            "MLflowUnavailable",
            timeout=60,
        )

        def retried_twice() -> dict[str, Any] | None:
            status = status_of(kubectl, namespace, "modelversion", "outage")
            return status if (status.get("retryCount") or 0) >= 2 else None

        status = eventually("a second attempt with backoff", retried_twice, timeout=60)
        assert status["nextAttemptTime"]
        assert status["phase"] == "Pending"
    finally:
        stack.start_mlflow()
    status = wait_for_phase(kubectl, namespace, "modelversion", "outage", "Ready", timeout=150)
    assert "retryCount" not in status
    assert len(_versions_of(mlflow_client, model, _uid(kubectl, namespace, "outage"))) == 1
    assert len(mlflow_client.search_model_versions(f"name = '{model}'")) == 1
    # Announced once, however many attempts failed.
    assert event_reasons(kubectl, namespace, "ModelVersion", "outage")["MLflowUnavailable"] == 1


class OperatorKilledError(Exception):
    """Stands for the process dying: nothing after the create call runs."""


class KilledAfterCreate(MlflowRegistry):
    def create_version(self, *args: Any, **kwargs: Any) -> VersionRecord:
        super().create_version(*args, **kwargs)
        raise OperatorKilledError


def test_operator_killed_right_after_the_create_call_registers_once(
    stack: LocalStack, kubectl: Kubectl, namespace: str, mlflow_client: MlflowClient
) -> None:
    run_id, _model_id = _logged_run(stack, namespace)
    model = f"{namespace}-crash"
    apply(kubectl, namespace, a_model_version("crash").model(model).from_run(run_id).manifest())
    tracking_uri = stack.env()["MLFLOW_TRACKING_URI"]
    deps = ModelVersionDeps(
        cluster=ClusterClient(new_api_client()),
        registry_for=KilledAfterCreate,
        default_tracking_uri=tracking_uri,
        metrics=OperatorMetrics().registration,
    )
    crashed = ModelVersion.from_body(get(kubectl, namespace, "modelversion", "crash"))
    with pytest.raises(OperatorKilledError):
        asyncio.run(reconcile_modelversion(crashed, deps, datetime.datetime.now(datetime.UTC)))
    uid = _uid(kubectl, namespace, "crash")
    [created] = _versions_of(mlflow_client, model, uid)
    assert "version" not in status_of(
        kubectl, namespace, "modelversion", "crash"
    )  # the status never said so

    with operator_in_thread([namespace]):
        status = wait_for_phase(kubectl, namespace, "modelversion", "crash", "Ready", timeout=90)
    assert status["version"] == created.version
    assert [v.version for v in _versions_of(mlflow_client, model, uid)] == [created.version]
    assert len(mlflow_client.search_model_versions(f"name = '{model}'")) == 1


def test_bad_references_give_a_clear_condition(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    model = f"{namespace}-bad"
    apply(
        kubectl,
        namespace,
        a_model_version("no-job").model(model).from_training_job("nope").manifest(),
    )
    apply(
        kubectl, namespace, a_model_version("no-run").model(model).from_run("0123abcd").manifest()
    )
    apply(kubectl, namespace, a_model_version("no-version").model(model).from_version(7).manifest())
    status = wait_for_condition(
        kubectl,
        namespace,
        "modelversion",
        "no-job",
        "SourceReady",
        "TrainingJobNotFound",
        timeout=60,
    )
    assert status["phase"] == "Pending"
    assert "nope" in condition(status, "SourceReady")["message"]
    status = wait_for_condition(
        kubectl, namespace, "modelversion", "no-run", "SourceReady", "RunNotFound", timeout=60
    )
    assert status["phase"] == "Failed"
    assert "0123abcd" in condition(status, "SourceReady")["message"]
    status = wait_for_condition(
        kubectl,
        namespace,
        "modelversion",
        "no-version",
        "SourceReady",
        "VersionNotFound",
        timeout=60,
    )
    assert status["phase"] == "Failed"
    assert not mlflow_client.search_model_versions(f"name = '{model}'")


def _alias_target(client: MlflowClient, model: str, alias: str) -> str | None:
    aliases: dict[str, str] = client.get_registered_model(model).aliases
    return aliases.get(alias)


def test_two_objects_claiming_one_alias_conflict_without_flip_flop(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, _model_id = _logged_run(stack, namespace)
    model = f"{namespace}-owned"
    source = {"run": {"runId": run_id}}
    apply(
        kubectl,
        namespace,
        a_model_version("first").model(model).aliases("prod").spec(source=source).manifest(),
    )
    first = wait_for_phase(kubectl, namespace, "modelversion", "first", "Ready", timeout=90)[
        "version"
    ]
    apply(
        kubectl,
        namespace,
        a_model_version("second").model(model).aliases("prod").spec(source=source).manifest(),
    )
    status = wait_for_condition(
        kubectl, namespace, "modelversion", "second", "AliasesSynced", "AliasConflict", timeout=60
    )
    assert f"{namespace}/first" in condition(status, "AliasesSynced")["message"]
    second = status["version"]
    # Two resyncs later the alias has not moved and the conflict was announced once.
    time.sleep(25)
    assert _alias_target(mlflow_client, model, "prod") == first
    assert event_reasons(kubectl, namespace, "ModelVersion", "second")["AliasConflict"] == 1
    assert event_reasons(kubectl, namespace, "ModelVersion", "first")["DriftCorrected"] == 0

    # The owner lets go: the other object takes the alias on its next pass.
    kubectl(
        "patch", "modelversion", "first", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"aliases":[]}}',
    )  # fmt: skip
    wait_for_condition(
        kubectl, namespace, "modelversion", "second", "AliasesSynced", "AliasesSet", timeout=60
    )
    assert _alias_target(mlflow_client, model, "prod") == second
    history = status_of(kubectl, namespace, "modelversion", "first")["aliasHistory"]
    assert [(move["alias"], move["action"]) for move in history] == [
        ("prod", "Set"),
        ("prod", "Removed"),
    ]


def test_drift_in_mlflow_is_corrected_and_reported(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, model_id = _logged_run(stack, namespace)
    model = f"{namespace}-drift"
    apply(
        kubectl,
        namespace,
        a_model_version("steady")
        .model(model)
        .from_run(run_id)
        .aliases("prod")
        .spec(tags={"team": "a"})
        .manifest(),
    )
    version = wait_for_phase(kubectl, namespace, "modelversion", "steady", "Ready", timeout=90)[
        "version"
    ]
    other = mlflow_client.create_model_version(
        model, f"models:/{model_id}", run_id=run_id, model_id=model_id, await_creation_for=30
    )
    mlflow_client.set_registered_model_alias(model, "prod", other.version)
    mlflow_client.set_model_version_tag(model, version, "team", "b")

    def corrected() -> bool:
        tags = mlflow_client.get_model_version(model, version).tags
        return _alias_target(mlflow_client, model, "prod") == version and tags["team"] == "a"

    eventually("the alias and tag set back", corrected, timeout=60)
    # The Event is bookkeeping, posted after the correction: it may arrive a moment later.
    eventually(
        "a DriftCorrected Event",
        lambda: event_reasons(kubectl, namespace, "ModelVersion", "steady")["DriftCorrected"] >= 1,
        timeout=30,
    )
    history = status_of(kubectl, namespace, "modelversion", "steady")["aliasHistory"]
    assert history[-1]["previousVersion"] == other.version
    assert "set back" in history[-1]["reason"]

    # A tag dropped from the spec goes from MLflow; one set there by someone else stays.
    mlflow_client.set_model_version_tag(model, version, "reviewed-by", "alice")
    apply(
        kubectl,
        namespace,
        a_model_version("steady")
        .model(model)
        .from_run(run_id)
        .aliases("prod")
        .spec(tags={"tier": "1"})
        .manifest(),
    )
    eventually(
        "the dropped tag deleted",
        lambda: "team" not in mlflow_client.get_model_version(model, version).tags,
        timeout=60,
    )
    tags = mlflow_client.get_model_version(model, version).tags
    assert (tags["tier"], tags["reviewed-by"]) == ("1", "alice")


def test_registers_from_a_trainingjob_once_it_succeeds(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    training = yaml.safe_load((REPO_ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    del training["spec"]["register"]  # this ModelVersion registers it instead
    kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(training))
    model = f"{namespace}-iris"
    apply(
        kubectl,
        namespace,
        a_model_version("iris-v1")
        .model(model)
        .from_training_job("iris")
        .aliases("challenger")
        .manifest(),
    )
    wait_for_condition(
        kubectl,
        namespace,
        "modelversion",
        "iris-v1",
        "SourceReady",
        "WaitingForTrainingJob",
        timeout=60,
    )
    status = wait_for_phase(kubectl, namespace, "modelversion", "iris-v1", "Ready", timeout=240)
    job = json.loads(kubectl("get", "trainingjob", "iris", "-n", namespace, "-o", "json").stdout)
    run_id = job["status"]["mlflowRunId"]
    assert status["lineage"]["trainingJob"] == "iris"
    assert status["lineage"]["runId"] == run_id
    assert status["lineage"]["dataset"]["uri"] == "sklearn://datasets/iris"
    assert status["source"].startswith("models:/m-")
    assert status["signature"]["inputs"]
    assert _alias_target(mlflow_client, model, "challenger") == status["version"]
    [version] = _versions_of(mlflow_client, model, _uid(kubectl, namespace, "iris-v1"))
    assert version.run_id == run_id


def test_a_duplicate_version_for_one_object_is_removed_and_the_oldest_kept(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, model_id = _logged_run(stack, namespace)
    model = f"{namespace}-twice"
    apply(kubectl, namespace, a_model_version("twice").model(model).from_run(run_id).manifest())
    version = wait_for_phase(kubectl, namespace, "modelversion", "twice", "Ready", timeout=90)[
        "version"
    ]
    uid = _uid(kubectl, namespace, "twice")
    # What a second creator racing the first (a replica during a leader hand-over) leaves.
    mlflow_client.create_model_version(
        model, f"models:/{model_id}", run_id=run_id, model_id=model_id, tags={UID_TAG: uid}
    )
    eventually(
        "the duplicate deleted",
        lambda: [v.version for v in _versions_of(mlflow_client, model, uid)] == [version],
        timeout=60,
    )
    assert status_of(kubectl, namespace, "modelversion", "twice")["version"] == version
    assert (
        event_reasons(kubectl, namespace, "ModelVersion", "twice")["DuplicateVersionRemoved"] == 1
    )


def test_deletion_waits_for_mlflow_before_applying_the_policy(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    operator: RunningOperator,
    mlflow_client: MlflowClient,
) -> None:
    run_id, _model_id = _logged_run(stack, namespace)
    model = f"{namespace}-later"
    apply(
        kubectl,
        namespace,
        a_model_version("later")
        .model(model)
        .from_run(run_id)
        .spec(deletionPolicy="Delete")
        .manifest(),
    )
    version = wait_for_phase(kubectl, namespace, "modelversion", "later", "Ready", timeout=90)[
        "version"
    ]
    stack.stop_mlflow()
    try:
        kubectl("delete", "modelversion", "later", "-n", namespace, "--wait=false")
        time.sleep(5)
        # The finalizer holds the object while the policy cannot be applied.
        held = get(kubectl, namespace, "modelversion", "later")
        assert held["metadata"]["deletionTimestamp"]
        assert "mlcycle.dev/finalizer" in held["metadata"]["finalizers"]
    finally:
        stack.start_mlflow()
    eventually(
        "the object gone",
        lambda: not find(kubectl, namespace, "modelversion", "later"),
        timeout=120,
    )
    remaining = [v.version for v in mlflow_client.search_model_versions(f"name = '{model}'")]
    assert version not in remaining
