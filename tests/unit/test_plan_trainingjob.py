"""TrainingJob planning: the child Job and Service, reading Job and pod state, gang
restarts, registration gates and status, on real manifests and an injected clock."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from mlcycle.api.v1alpha1 import TrainingJob, TrainingJobStatus
from mlcycle.plan import reasons
from mlcycle.plan.conditions import find_condition
from mlcycle.plan.trainingjob.gang import gang_restart, gang_restart_needed
from mlcycle.plan.trainingjob.gates import GateResult, evaluate_gates
from mlcycle.plan.trainingjob.job import desired_headless_service, desired_job, job_suspended
from mlcycle.plan.trainingjob.names import attempt_of, job_name
from mlcycle.plan.trainingjob.observe import TrainingObservation, observe_training
from mlcycle.plan.trainingjob.registration import desired_model_version
from mlcycle.plan.trainingjob.run import (
    RunBinding,
    experiment_name,
    mlflow_run_url,
    run_name,
    run_tags,
)
from mlcycle.plan.trainingjob.status import blocked_status, mlflow_run_status, status_patch
from tests.builders import NOW, a_training_job, later, wire_time

pytestmark = pytest.mark.unit

TRAINING = a_training_job("train", namespace="team-a").generation(3).command("python", "train.py")
RUN = RunBinding(
    run_id="0123456789abcdef0123456789abcdef",
    experiment_id="7",
    experiment_name="team-a",
    tracking_uri="http://mlflow.mlcycle:5000",
)


# --- Builders -------------------------------------------------------------------------------


def _job_condition(type_: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": wire_time(later(minutes=10)),
    }


def _job(
    *,
    attempt: int = 0,
    conditions: Sequence[Mapping[str, Any]] = (),
    suspend: bool = False,
    active: int = 0,
    failed: int = 0,
    succeeded: int = 0,
) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": wire_time(NOW), "conditions": list(conditions)}
    for key, count in (("active", active), ("failed", failed), ("succeeded", succeeded)):
        if count:
            status[key] = count
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "labels": {"mlcycle.dev/attempt": str(attempt)}},
        "spec": {"suspend": suspend},
        "status": status,
    }


def _pod(
    name: str = "train-abcde",
    phase: str = "Running",
    *,
    created: datetime.datetime = NOW,
    attempt: int = 0,
    rank: int | None = None,
    waiting: tuple[str, str] | None = None,
    terminated: Mapping[str, Any] | None = None,
    unschedulable: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"running": {"startedAt": wire_time(created)}} if phase == "Running" else {}
    )
    if waiting is not None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if terminated is not None:
        state = {"terminated": dict(terminated)}
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "trainer", "state": state}],
    }
    if unschedulable is not None:
        status["containerStatuses"] = []
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    annotations = {} if rank is None else {"batch.kubernetes.io/job-completion-index": str(rank)}
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": wire_time(created),
            "labels": {"mlcycle.dev/attempt": str(attempt)},
            "annotations": annotations,
        },
        "status": status,
    }


def _exited(code: int, reason: str = "Error", message: str = "", minute: int = 5) -> dict[str, Any]:
    return {
        "exitCode": code,
        "reason": reason,
        "message": message,
        "finishedAt": wire_time(later(minutes=minute)),
    }


def _env(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable for variable in container["env"]}


# --- Names and the run --------------------------------------------------------------------------


def test_experiment_and_run_names_default_to_namespace_and_name() -> None:
    assert (experiment_name(TRAINING.obj()), run_name(TRAINING.obj())) == ("team-a", "train")
    custom = TRAINING.spec(mlflow={"experimentName": "iris", "runName": "baseline"}).obj()
    assert (experiment_name(custom), run_name(custom)) == ("iris", "baseline")


@pytest.mark.parametrize(
    ("name", "workers", "attempt", "expected"),
    [
        pytest.param("train", 1, 0, "train", id="first attempt keeps the name"),
        pytest.param("train", 3, 2, "train-r2", id="gang restart gets a suffix"),
        pytest.param("train-r2", 1, 0, "train-r2", id="a name that looks like a retry"),
    ],
)
def test_job_names(name: str, workers: int, attempt: int, expected: str) -> None:
    tj = TRAINING.named(name).workers(workers).obj()
    assert job_name(tj, attempt) == expected
    assert attempt_of(expected, tj) == attempt


@pytest.mark.parametrize(
    ("name", "workers"),
    [
        pytest.param("a" * 70, 1, id="too long"),
        pytest.param("a" * 62, 16, id="no room for the pod index"),
        pytest.param("team.train", 1, id="dots are no DNS label"),
        pytest.param("9lives", 2, id="a service name cannot start with a digit"),
    ],
)
def test_unusable_names_are_shortened_with_a_hash(name: str, workers: int) -> None:
    tj = TRAINING.named(name).workers(workers).obj()
    first, retry = job_name(tj, 0), job_name(tj, 12)
    index = f"-{workers - 1}"
    for generated in (first, retry):
        assert len(generated + (index if workers > 1 else "")) <= 63
        assert generated[0].isalpha()
        assert all(c.isalnum() or c == "-" for c in generated)
    assert retry.endswith("-r12")
    labels = desired_job(tj, RUN)["spec"]["template"]["metadata"]["labels"]
    assert all(len(value) <= 63 for value in labels.values())
    assert attempt_of(retry, tj) == 12
    assert attempt_of(first, tj) == 0
    # Two objects whose names clean up alike still get different Jobs.
    assert job_name(TRAINING.named(name.replace(".", "-") + "x").workers(workers).obj(), 0) != first


# --- The child Job ------------------------------------------------------------------------


def test_single_worker_job() -> None:
    tj = TRAINING.spec(
        args=["--epochs", "3"],
        resources={"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": 1}},
        activeDeadlineSeconds=3600,
        ttlSecondsAfterFinished=60,
        podTemplate={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "serviceAccountName": "trainer",
            "volumes": [{"name": "data", "emptyDir": {}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "batch",
            "securityContext": {"runAsNonRoot": True},
        },
    ).obj()
    job = desired_job(tj, RUN)

    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["name"] == "train"
    assert job["metadata"]["namespace"] == "team-a"
    labels = {
        "app.kubernetes.io/managed-by": "mlcycle",
        "mlcycle.dev/trainingjob": "train",
        "mlcycle.dev/trainingjob-uid": "uid-1",
        "mlcycle.dev/attempt": "0",
    }
    assert job["metadata"]["labels"] == labels
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": "train",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = job["spec"]
    assert spec["backoffLimit"] == 6
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["suspend"] is False
    assert (spec["completions"], spec["parallelism"]) == (1, 1)
    assert "completionMode" not in spec
    assert "ttlSecondsAfterFinished" not in spec
    template = spec["template"]
    assert template["metadata"]["labels"] == labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "subdomain" not in pod
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["serviceAccountName"] == "trainer"
    assert pod["volumes"] == [
        {"name": "mlcycle-tmp", "emptyDir": {}},
        {"name": "data", "emptyDir": {}},
    ]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["priorityClassName"] == "batch"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    [container] = pod["containers"]
    assert container["name"] == "trainer"
    assert container["image"] == "example/train:1"
    assert container["command"] == ["python", "train.py"]
    assert container["args"] == ["--epochs", "3"]
    assert container["resources"] == {
        "requests": {"cpu": "500m"},
        "limits": {"nvidia.com/gpu": 1},
    }
    assert container["volumeMounts"] == [
        {"name": "mlcycle-tmp", "mountPath": "/tmp"},
        {"name": "data", "mountPath": "/data"},
    ]
    # The image is the user's: its root filesystem stays writable.
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": False,
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = _env(job)
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlcycle:5000"
    assert env["MLFLOW_EXPERIMENT_NAME"]["value"] == "team-a"
    assert env["MLFLOW_EXPERIMENT_ID"]["value"] == "7"
    assert env["MLFLOW_RUN_ID"]["value"] == RUN.run_id
    assert env["MLCYCLE_TRAININGJOB"]["value"] == "train"
    assert "MASTER_ADDR" not in env
    assert desired_headless_service(tj, "train") is None


def test_the_training_pod_passes_the_restricted_standard_and_the_user_may_relax_it() -> None:
    pod = desired_job(TRAINING.obj(), RUN)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "runAsUser" not in pod["securityContext"]
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    relaxed = TRAINING.spec(
        podTemplate={
            "securityContext": {"runAsNonRoot": False, "fsGroup": 1000},
            "containerSecurityContext": {"capabilities": {"add": ["SYS_PTRACE"]}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
        }
    ).obj()
    pod = desired_job(relaxed, RUN)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": False,
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": 1000,
    }
    [container] = pod["containers"]
    assert container["securityContext"]["capabilities"] == {"add": ["SYS_PTRACE"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The user's own /tmp replaces ours.
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp"}]


def test_backoff_limit_of_one_worker_comes_from_the_spec() -> None:
    assert desired_job(TRAINING.backoff_limit(2).obj(), RUN)["spec"]["backoffLimit"] == 2


def test_three_workers_make_an_indexed_job_with_a_headless_service() -> None:
    tj = TRAINING.workers(3).backoff_limit(4).obj()
    job = desired_job(tj, RUN, attempt=1)

    assert job["metadata"]["name"] == "train-r1"
    assert job["metadata"]["labels"]["mlcycle.dev/attempt"] == "1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (3, 3)
    # The operator restarts the whole gang; the Job itself never retries one rank.
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["subdomain"] == "train-r1"
    env = _env(job)
    assert env["MASTER_ADDR"] == {"name": "MASTER_ADDR", "value": "train-r1-0.train-r1"}
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["WORLD_SIZE"]["value"] == "3"
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    for rank_variable in ("RANK", "NODE_RANK"):
        assert env[rank_variable]["valueFrom"] == {"fieldRef": {"fieldPath": index}}

    service = desired_headless_service(tj, "train-r1")
    assert service is not None
    assert service["metadata"]["name"] == "train-r1"
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert service["spec"] == {
        "clusterIP": "None",
        "selector": {"mlcycle.dev/trainingjob-uid": "uid-1", "mlcycle.dev/attempt": "1"},
        "ports": [{"name": "dist", "port": 29500, "targetPort": 29500}],
        "publishNotReadyAddresses": True,
    }
    # The Service selects exactly the pods of this attempt.
    pod_labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_s3_keys_reach_the_pod_only_through_secret_key_refs() -> None:
    tj = TRAINING.spec(
        s3={"secretRef": {"name": "s3-creds"}, "endpoint": "http://minio:9000"}
    ).obj()
    job = desired_job(tj, RUN)
    env = _env(job)

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": key}},
        }
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    literal_aws = [v for v in env.values() if v["name"].startswith("AWS_") and "value" in v]
    assert literal_aws == []


def test_mlflow_credentials_reach_the_pod_only_from_the_named_secret() -> None:
    run = dataclasses.replace(RUN, credentials_secret="mlflow-creds")
    env = _env(desired_job(TRAINING.obj(), run))

    assert env["MLFLOW_TRACKING_URI"] == {
        "name": "MLFLOW_TRACKING_URI",
        "value": "http://mlflow.mlcycle:5000",
    }
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        # Optional: a Secret holds a username and password, or a token.
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "mlflow-creds", "key": key, "optional": True}},
        }
    no_secret = _env(desired_job(TRAINING.obj(), RUN))
    assert not [
        name
        for name in no_secret
        if name.startswith("MLFLOW_TRACKING_") and name != "MLFLOW_TRACKING_URI"
    ]


def test_the_run_url_never_shows_credentials() -> None:
    run = dataclasses.replace(RUN, tracking_uri="https://op:pw-1@mlflow.example/")
    assert mlflow_run_url(run) == f"https://mlflow.example/#/experiments/7/runs/{RUN.run_id}"


def test_no_s3_means_no_aws_variables() -> None:
    env = _env(desired_job(TRAINING.obj(), RUN))
    assert not [name for name in env if name.startswith(("AWS_", "MLFLOW_S3"))]


@pytest.mark.parametrize(
    ("hyperparameter", "variable"),
    [
        ("lr", "MLCYCLE_HP_LR"),
        ("learning-rate", "MLCYCLE_HP_LEARNING_RATE"),
        ("model.max_depth", "MLCYCLE_HP_MODEL_MAX_DEPTH"),
        ("_seed", "MLCYCLE_HP__SEED"),
    ],
)
def test_hyperparameter_variables(hyperparameter: str, variable: str) -> None:
    env = _env(desired_job(TRAINING.hyperparameters({hyperparameter: "0.1", "z": "1"}).obj(), RUN))
    assert env[variable]["value"] == "0.1"
    assert json.loads(env["MLCYCLE_HYPERPARAMETERS"]["value"]) == {hyperparameter: "0.1", "z": "1"}


def test_hyperparameters_json_has_sorted_keys() -> None:
    env = _env(desired_job(TRAINING.hyperparameters({"b": "2", "a": "1"}).obj(), RUN))
    assert env["MLCYCLE_HYPERPARAMETERS"]["value"] == '{"a": "1", "b": "2"}'


def test_hyperparameters_that_clash_as_variables_stay_in_the_json_only() -> None:
    tj = TRAINING.hyperparameters({"a.b": "1", "a_b": "2", "c": "3"}).obj()
    env = _env(desired_job(tj, RUN))
    assert "MLCYCLE_HP_A_B" not in env
    assert env["MLCYCLE_HP_C"]["value"] == "3"
    assert json.loads(env["MLCYCLE_HYPERPARAMETERS"]["value"])["a_b"] == "2"


def test_dataset_variables() -> None:
    tj = TRAINING.dataset("s3://data/iris.csv", digest="sha256:ab", version="3").obj()
    env = _env(desired_job(tj, RUN))
    assert env["MLCYCLE_DATASET_URI"]["value"] == "s3://data/iris.csv"
    assert env["MLCYCLE_DATASET_DIGEST"]["value"] == "sha256:ab"
    assert env["MLCYCLE_DATASET_VERSION"]["value"] == "3"
    without_digest = _env(desired_job(TRAINING.dataset("s3://data/x").obj(), RUN))
    assert "MLCYCLE_DATASET_DIGEST" not in without_digest


def test_user_env_follows_ours_and_overrides_by_replacing() -> None:
    tj = TRAINING.spec(
        env=[
            {"name": "OUTPUT", "value": "/out/$(MLFLOW_RUN_ID)"},
            {"name": "MLFLOW_EXPERIMENT_NAME", "value": "mine"},
        ]
    ).obj()
    container = desired_job(tj, RUN)["spec"]["template"]["spec"]["containers"][0]
    names = [variable["name"] for variable in container["env"]]

    assert len(names) == len(set(names)), "server-side apply rejects duplicate env names"
    assert names.index("MLFLOW_RUN_ID") < names.index("OUTPUT")
    assert names[-2:] == ["OUTPUT", "MLFLOW_EXPERIMENT_NAME"]
    assert _env(desired_job(tj, RUN))["MLFLOW_EXPERIMENT_NAME"]["value"] == "mine"


@pytest.mark.parametrize(
    ("failure_policy", "rules"),
    [
        pytest.param(None, [], id="disruptions only"),
        pytest.param(
            {"permanentExitCodes": [42, 2]},
            [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 42]}}],
            id="permanent codes fail the Job",
        ),
        pytest.param(
            {"retryableExitCodes": [75], "permanentExitCodes": [1]},
            [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}},
                {"action": "Count", "onExitCodes": {"operator": "In", "values": [75]}},
            ],
            id="retryable codes count",
        ),
    ],
)
def test_pod_failure_policy(
    failure_policy: dict[str, Any] | None, rules: list[dict[str, Any]]
) -> None:
    spec: dict[str, Any] = {} if failure_policy is None else {"failurePolicy": failure_policy}
    job = desired_job(TRAINING.spec(**spec).obj(), RUN)
    for rule in rules:
        rule["onExitCodes"]["containerName"] = "trainer"
    disruption = {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert job["spec"]["podFailurePolicy"] == {"rules": [disruption, *rules]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_queue_name_labels_the_job_and_creates_it_suspended_for_kueue() -> None:
    tj = TRAINING.queue("gpu-queue").obj()
    job = desired_job(tj, RUN)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert job["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in desired_job(TRAINING.obj(), RUN)["metadata"]["labels"]


@pytest.mark.parametrize(
    ("spec", "existing_suspend", "expected"),
    [
        pytest.param({}, None, False, id="plain job runs"),
        pytest.param({"suspend": True}, None, True, id="user suspends"),
        pytest.param({"queueName": "q"}, None, True, id="queued job starts suspended"),
        pytest.param({"queueName": "q"}, False, False, id="kueue admitted it: keep running"),
        pytest.param({"queueName": "q"}, True, True, id="kueue has not admitted it"),
        pytest.param({"queueName": "q", "suspend": True}, False, True, id="user suspends queued"),
        pytest.param({"suspend": False}, True, False, id="user resumes"),
    ],
)
def test_job_suspended(spec: dict[str, Any], existing_suspend: bool | None, expected: bool) -> None:
    existing = None if existing_suspend is None else _job(suspend=existing_suspend)
    assert job_suspended(TRAINING.spec(**spec).obj(), existing) is expected


def test_model_version_is_standalone_and_named_after_the_run() -> None:
    tj = TRAINING.registration("iris", aliases=["challenger"]).obj()
    model_version = desired_model_version(tj, RUN)
    assert model_version["kind"] == "ModelVersion"
    assert model_version["metadata"]["name"] == "train-01234567"
    assert "ownerReferences" not in model_version["metadata"]
    assert model_version["spec"]["modelName"] == "iris"
    assert model_version["spec"]["source"] == {
        "run": {"runId": RUN.run_id, "artifactPath": "model"}
    }
    assert model_version["spec"]["aliases"] == ["challenger"]
    # The next training that passes its gates takes the aliases over.
    assert model_version["spec"]["aliasPolicy"] == "Newest"


# --- Observation ----------------------------------------------------------------------------

LATER = later(minutes=20)

OBSERVATIONS = [
    pytest.param(
        {},
        None,
        [],
        ("Pending", "Pending", False, None),
        "not created",
        id="no Job yet",
    ),
    pytest.param(
        {},
        _job(active=1),
        [_pod("train-a", "Pending")],
        ("Pending", "JobCreated", False, None),
        "waiting",
        id="pods starting",
    ),
    pytest.param(
        {},
        _job(active=1),
        [_pod("train-a", "Running")],
        ("Running", "Running", False, None),
        "1 of 1 workers running",
        id="running",
    ),
    pytest.param(
        {},
        _job(succeeded=1, conditions=[_job_condition("Complete")]),
        [_pod("train-a", "Succeeded", terminated=_exited(0, "Completed"))],
        ("Succeeded", "Completed", True, None),
        "succeeded",
        id="complete",
    ),
    pytest.param(
        {"backoffLimit": 1},
        _job(failed=2, conditions=[_job_condition("Failed", "BackoffLimitExceeded")]),
        [
            _pod("train-a", "Failed", terminated=_exited(3, minute=3)),
            _pod("train-b", "Failed", terminated=_exited(137, "OOMKilled", minute=8)),
        ],
        ("Failed", "OOMKilled", True, 137),
        "container trainer of pod train-b was OOMKilled (exit code 137)",
        id="backoff limit exceeded, last pod OOMKilled",
    ),
    pytest.param(
        {"backoffLimit": 0},
        _job(failed=1, conditions=[_job_condition("Failed", "BackoffLimitExceeded")]),
        [_pod("train-a", "Failed", terminated=_exited(3, message="Traceback\nValueError: bad"))],
        ("Failed", "BackoffLimitExceeded", True, 3),
        "container trainer of pod train-a exited with code 3: Traceback\nValueError: bad",
        id="backoff limit exceeded with exit code and termination message",
    ),
    pytest.param(
        {"activeDeadlineSeconds": 600},
        _job(
            conditions=[
                _job_condition(
                    "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
                )
            ]
        ),
        [_pod("train-a", "Failed", terminated=_exited(143))],
        ("Failed", "DeadlineExceeded", True, None),
        "Job was active longer than specified deadline (activeDeadlineSeconds 600)",
        id="deadline exceeded",
    ),
    pytest.param(
        {"failurePolicy": {"permanentExitCodes": [2]}},
        _job(failed=1, conditions=[_job_condition("FailureTarget", "PodFailurePolicy")]),
        [_pod("train-a", "Failed", terminated=_exited(2))],
        ("Failed", "PodFailurePolicy", True, 2),
        "exited with code 2",
        id="permanent exit code",
    ),
    pytest.param(
        {},
        _job(failed=1, conditions=[_job_condition("Failed", "", "it broke")]),
        [],
        ("Failed", "Error", True, None),
        "it broke",
        id="failed without a reason",
    ),
    pytest.param(
        {},
        _job(active=1),
        [_pod("train-a", "Pending", waiting=("ImagePullBackOff", 'Back-off pulling "x"'))],
        ("Pending", "ImagePullBackOff", False, None),
        'container trainer of pod train-a: Back-off pulling "x"',
        id="image pull back-off",
    ),
    pytest.param(
        {},
        _job(active=1),
        [_pod("train-a", "Pending", waiting=("CreateContainerConfigError", "no secret s3"))],
        ("Pending", "CreateContainerConfigError", False, None),
        "no secret s3",
        id="missing secret",
    ),
    pytest.param(
        {},
        _job(active=1),
        [_pod("train-a", "Pending", unschedulable="0/3 nodes have nvidia.com/gpu")],
        ("Pending", "Unschedulable", False, None),
        "pod train-a is unschedulable: 0/3 nodes have nvidia.com/gpu",
        id="unschedulable",
    ),
    pytest.param(
        {"suspend": True},
        _job(suspend=True),
        [],
        ("Suspended", "Suspended", False, None),
        "suspended",
        id="suspended by the user",
    ),
    pytest.param(
        {"queueName": "gpu"},
        _job(suspend=True),
        [],
        ("Suspended", "Queued", False, None),
        "waiting for Kueue to admit it from gpu",
        id="waiting for Kueue",
    ),
    pytest.param(
        {"suspend": True},
        _job(suspend=True, active=1),
        [_pod("train-a", "Running")],
        ("Running", "Running", False, None),
        "running",
        id="suspending but the pod still runs",
    ),
    pytest.param(
        {"workers": 3},
        _job(active=3, succeeded=1),
        [_pod("a", "Succeeded", rank=0), _pod("b", "Running", rank=1), _pod("c", rank=2)],
        ("Running", "Running", False, None),
        "2 of 3 workers running, 1 finished",
        id="a finished rank is no success of the gang",
    ),
    pytest.param(
        {"workers": 2},
        _job(succeeded=2, conditions=[_job_condition("Complete")]),
        [],
        ("Succeeded", "Completed", True, None),
        "all 2 workers succeeded",
        id="gang complete",
    ),
]


@pytest.mark.parametrize(("spec", "job", "pods", "expected", "message_part"), OBSERVATIONS)
def test_observe_training(
    spec: dict[str, Any],
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    expected: tuple[str, str, bool, int | None],
    message_part: str,
) -> None:
    observation = observe_training(TRAINING.spec(**spec).obj(), job, pods, LATER)
    phase, reason, terminal, exit_code = expected
    assert (observation.phase, observation.reason) == (phase, reason)
    assert observation.terminal is terminal
    assert observation.exit_code == exit_code
    assert message_part in observation.message
    assert len(observation.message) <= 1024


def test_times_and_attempts_come_from_the_job() -> None:
    job = _job(succeeded=1, failed=2, conditions=[_job_condition("Complete")])
    job["status"]["completionTime"] = wire_time(LATER)
    observation = observe_training(TRAINING.obj(), job, [], LATER)
    assert observation.start_time == NOW
    assert observation.completion_time == LATER
    assert observation.attempts == 3


def test_long_termination_messages_keep_their_end() -> None:
    output = "x" * 5000 + "ValueError: the real cause"
    job = _job(failed=1, conditions=[_job_condition("Failed", "BackoffLimitExceeded")])
    pods = [_pod("train-a", "Failed", terminated=_exited(1, message=output))]
    observation = observe_training(TRAINING.backoff_limit(0).obj(), job, pods, LATER)
    assert len(observation.message) <= 1024
    assert observation.message.startswith("container trainer of pod train-a exited with code 1: ")
    assert observation.message.endswith("ValueError: the real cause")


@pytest.mark.parametrize(
    ("waited", "expected_phase", "expected_reason"),
    [
        pytest.param(299, "Pending", "ImagePullBackOff", id="before the deadline"),
        pytest.param(300, "Pending", "ImagePullBackOff", id="at the deadline"),
        pytest.param(301, "Failed", "StartupDeadlineExceeded", id="after the deadline"),
    ],
)
def test_startup_deadline(waited: int, expected_phase: str, expected_reason: str) -> None:
    tj = TRAINING.startup_deadline(300).obj()
    pods = [_pod("train-a", "Pending", waiting=("ImagePullBackOff", "no such image"))]
    now = later(waited)
    observation = observe_training(tj, _job(active=1), pods, now)
    assert (observation.phase, observation.reason) == (expected_phase, expected_reason)
    assert observation.terminal is (expected_phase == "Failed")
    if observation.terminal:
        assert observation.completion_time == now
        assert "Pending for 301s" in observation.message
        assert "ImagePullBackOff" in observation.message


def test_startup_deadline_ignores_pods_that_started() -> None:
    tj = TRAINING.startup_deadline(60).obj()
    observation = observe_training(tj, _job(active=1), [_pod("train-a", "Running")], LATER)
    assert observation.phase == "Running"


def test_pods_of_an_earlier_attempt_are_not_read() -> None:
    tj = TRAINING.workers(2).obj()
    old = _pod("old", "Failed", attempt=0, rank=1, terminated=_exited(1))
    job, pods = _job(attempt=1, active=2), [old, _pod("new", attempt=1)]
    observation = observe_training(tj, job, pods, NOW)
    assert (observation.phase, observation.reason, observation.attempts) == (
        "Running",
        "Running",
        2,
    )
    assert gang_restart(tj, job, pods) is None


# --- Gang restarts ----------------------------------------------------------------------------

RANK_1_FAILED = _pod("train-1", "Failed", rank=1, terminated=_exited(1, message="NCCL error"))
BACKOFF_EXCEEDED = [_job_condition("Failed", "BackoffLimitExceeded")]

GANG_CASES = [
    pytest.param({"workers": 1}, _job(active=1), [RANK_1_FAILED], None, id="one worker: the Job"),
    pytest.param({"workers": 2}, _job(active=2), [_pod(rank=0), _pod(rank=1)], None, id="healthy"),
    pytest.param(
        {"workers": 2}, _job(active=1), [_pod(rank=0), RANK_1_FAILED], (True, 1), id="rank failed"
    ),
    pytest.param(
        {"workers": 2},
        _job(conditions=BACKOFF_EXCEEDED),
        [RANK_1_FAILED],
        (True, 1),
        id="the Job already failed on that rank",
    ),
    pytest.param(
        {"workers": 2, "backoffLimit": 2},
        _job(attempt=1, conditions=BACKOFF_EXCEEDED),
        [_pod("train-r1-1", "Failed", attempt=1, rank=1, terminated=_exited(1))],
        (True, 2),
        id="second restart within budget",
    ),
    pytest.param(
        {"workers": 2, "backoffLimit": 2},
        _job(attempt=2, conditions=BACKOFF_EXCEEDED),
        [_pod("train-r2-1", "Failed", attempt=2, rank=1, terminated=_exited(1))],
        (False, 2),
        id="budget spent",
    ),
    pytest.param(
        {"workers": 2},
        _job(attempt=6, conditions=BACKOFF_EXCEEDED),
        [],
        (False, 6),
        id="default budget of six",
    ),
    pytest.param(
        {"workers": 2, "backoffLimit": 0},
        _job(conditions=BACKOFF_EXCEEDED),
        [RANK_1_FAILED],
        (False, 0),
        id="no restarts allowed",
    ),
    pytest.param(
        {"workers": 2, "failurePolicy": {"permanentExitCodes": [1]}},
        _job(active=1),
        [RANK_1_FAILED],
        None,
        id="permanent exit code is not retried",
    ),
    pytest.param(
        {"workers": 2},
        _job(conditions=[_job_condition("Failed", "DeadlineExceeded")]),
        [RANK_1_FAILED],
        None,
        id="deadline is not retried",
    ),
    pytest.param(
        {"workers": 2},
        _job(conditions=[_job_condition("Complete")]),
        [RANK_1_FAILED],
        None,
        id="complete",
    ),
]


@pytest.mark.parametrize(("spec", "job", "pods", "expected"), GANG_CASES)
def test_gang_restart(
    spec: dict[str, Any],
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    expected: tuple[bool, int] | None,
) -> None:
    tj = TRAINING.spec(**spec).obj()
    decision = gang_restart(tj, job, pods)
    if expected is None:
        assert decision is None
        assert not gang_restart_needed(tj, job, pods)
        return
    assert decision is not None
    assert (decision.restart, decision.next_attempt) == expected
    assert gang_restart_needed(tj, job, pods) is expected[0]


def test_gang_restart_is_observed_as_running_and_never_terminal() -> None:
    tj = TRAINING.workers(2).obj()
    observation = observe_training(tj, _job(conditions=BACKOFF_EXCEEDED), [RANK_1_FAILED], LATER)
    assert (observation.phase, observation.reason) == ("Running", "GangRestarting")
    assert observation.terminal is False
    assert "rank 1 failed" in observation.message
    assert "NCCL error" in observation.message
    assert "restart 1 of 6" in observation.message


def test_spent_gang_budget_fails_the_training() -> None:
    tj = TRAINING.workers(2).backoff_limit(1).obj()
    oom = _pod("t-r1-0", "Failed", attempt=1, rank=0, terminated=_exited(137, "OOMKilled"))
    observation = observe_training(tj, _job(attempt=1, conditions=BACKOFF_EXCEEDED), [oom], LATER)
    assert (observation.phase, observation.reason) == ("Failed", "OOMKilled")
    assert observation.terminal
    assert observation.attempts == 2
    assert "no gang restarts left (backoffLimit 1)" in observation.message


# --- Gates ----------------------------------------------------------------------------------

METRICS = {"accuracy": 0.82, "loss": 0.3}


@pytest.mark.parametrize(
    ("gates", "failures"),
    [
        pytest.param([], [], id="no gates"),
        pytest.param([{"metric": "accuracy", "op": ">=", "value": 0.8}], [], id="holds"),
        pytest.param(
            [{"metric": "accuracy", "op": ">=", "value": 0.9}],
            ["accuracy 0.82 < required 0.9 (short by 0.08)"],
            id="misses by 0.08",
        ),
        pytest.param(
            [{"metric": "accuracy", "op": ">", "value": 0.82}],
            ["accuracy 0.82 is not > required 0.82 (short by 0)"],
            id="strict bound",
        ),
        pytest.param(
            [{"metric": "loss", "op": "<=", "value": 0.25}],
            ["loss 0.3 > required 0.25 (short by 0.05)"],
            id="a loss above its bound",
        ),
        pytest.param(
            [{"metric": "loss", "op": "==", "value": 0.25}],
            ["loss 0.3 != required 0.25 (off by 0.05)"],
            id="equality",
        ),
        pytest.param(
            [
                {"metric": "f1", "op": ">=", "value": 0.5},
                {"metric": "accuracy", "op": ">=", "value": 0.9},
            ],
            ["metric f1 was not logged", "accuracy 0.82 < required 0.9 (short by 0.08)"],
            id="every failure is listed",
        ),
    ],
)
def test_evaluate_gates(gates: list[dict[str, Any]], failures: list[str]) -> None:
    tj = TRAINING.registration("iris", gates=gates).obj()
    assert tj.spec.registration is not None
    result = evaluate_gates(tj.spec.registration.gates, METRICS)
    assert result == GateResult(passed=not failures, failures=failures)


@dataclass(frozen=True)
class _Champion:
    value: float | None
    version: str = "3"
    run_id: str | None = "r1"
    source: str = "runs:/r1/model"
    run_found: bool = True


_REFUSED_MISSING = (
    "champion (@champion, version 3) has no accuracy to compare with: {why}"
    " (set register.onMissing: pass to register anyway)"
)


@pytest.mark.parametrize(
    ("compare", "champion", "failures", "reason"),
    [
        pytest.param(None, _Champion(0.95), [], None, id="no champion gate configured"),
        pytest.param({"compareOp": ">"}, None, [], None, id="no champion yet"),
        pytest.param({"compareOp": ">"}, _Champion(0.8), [], None, id="beats the champion"),
        pytest.param(
            {"compareOp": ">"},
            _Champion(0.85),
            ["accuracy 0.82 is not > champion (@champion, version 3) 0.85 (short by 0.03)"],
            reasons.GATES_NOT_MET,
            id="loses to the champion",
        ),
        pytest.param(
            {"compareOp": ">", "compareMetric": "f1"},
            _Champion(0.5),
            ["metric f1 was not logged"],
            reasons.GATES_NOT_MET,
            id="challenger did not log the metric",
        ),
        pytest.param(
            {},
            _Champion(None),
            [_REFUSED_MISSING.format(why="its run r1 did not log accuracy")],
            reasons.CHAMPION_METRIC_MISSING,
            id="champion run lacks the metric",
        ),
        pytest.param(
            {},
            _Champion(None, run_found=False),
            [_REFUSED_MISSING.format(why="its run r1 no longer exists")],
            reasons.CHAMPION_METRIC_MISSING,
            id="champion run deleted",
        ),
        pytest.param(
            {},
            _Champion(None, run_id=None, source="s3://models/iris", run_found=False),
            [
                _REFUSED_MISSING.format(
                    why="it was registered from s3://models/iris, not from a run"
                )
            ],
            reasons.CHAMPION_METRIC_MISSING,
            id="champion registered from a URI",
        ),
        pytest.param(
            {"onMissing": "pass"}, _Champion(None), [], None, id="opted in to pass when missing"
        ),
        pytest.param(
            {"onMissing": "pass"},
            _Champion(0.85),
            ["accuracy 0.82 is not > champion (@champion, version 3) 0.85 (short by 0.03)"],
            reasons.GATES_NOT_MET,
            id="opting in does not pass a measured champion",
        ),
    ],
)
def test_champion_gate(
    compare: dict[str, Any] | None,
    champion: _Champion | None,
    failures: list[str],
    reason: str | None,
) -> None:
    register: dict[str, Any] = {"modelName": "iris"}
    if compare is not None:
        register |= {"compareTo": "@champion", "compareMetric": "accuracy", **compare}
    tj = TRAINING.spec(register=register).obj()
    registration = tj.spec.registration
    assert registration is not None
    result = evaluate_gates([], METRICS, champion=champion, registration=registration)
    assert result.failures == failures
    assert result.passed is (not failures)
    if reason is not None:
        assert result.reason == reason


def test_a_missing_champion_metric_is_its_own_reason_announced_once() -> None:
    tj = TRAINING.registration("iris", compareTo="@champion", compareMetric="accuracy").obj()
    assert tj.spec.registration is not None
    gates = evaluate_gates([], METRICS, champion=_Champion(None), registration=tj.spec.registration)
    done = TrainingObservation("Succeeded", "Completed", "done", terminal=True)
    first = _patch(TrainingJobStatus(phase="Running"), done, LATER, tj=tj, gates=gates)
    condition = find_condition(_status(first.status).conditions, reasons.MODEL_REGISTERED)
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "ChampionMetricMissing")
    assert ("Warning", "ChampionMetricMissing") in [(e.type, e.reason) for e in first.events]
    again = _patch(_status(first.status), done, LATER, tj=tj, gates=gates)
    assert again.events == []


# --- The MLflow run's status ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "reason", "terminal", "deleted", "expected"),
    [
        ("Succeeded", "Completed", True, False, "FINISHED"),
        ("Failed", "BackoffLimitExceeded", True, False, "FAILED"),
        ("Failed", "OOMKilled", True, False, "FAILED"),
        ("Failed", "StartupDeadlineExceeded", True, False, "FAILED"),
        ("Failed", "DeadlineExceeded", True, False, "KILLED"),
        ("Running", "Running", False, True, "KILLED"),
        ("Succeeded", "Completed", True, True, "FINISHED"),
    ],
)
def test_mlflow_run_status(
    phase: Any, reason: str, terminal: bool, deleted: bool, expected: str
) -> None:
    observation = TrainingObservation(phase, reason, "", terminal=terminal)
    assert mlflow_run_status(observation, deleted=deleted) == expected


def test_a_running_training_has_no_final_run_status() -> None:
    with pytest.raises(ValueError, match="not ended"):
        mlflow_run_status(TrainingObservation("Running", "Running", ""))


# --- Status -------------------------------------------------------------------------------------

RUNNING = TrainingObservation("Running", "Running", "1 of 1 workers running", start_time=NOW)


def _status(plan_status: Mapping[str, Any]) -> TrainingJobStatus:
    recorded = {key: value for key, value in plan_status.items() if value is not None}
    return TrainingJobStatus.model_validate(recorded)


def _patch(
    previous: TrainingJobStatus | None,
    observation: TrainingObservation,
    now: datetime.datetime,
    tj: TrainingJob | None = None,
    **extra: Any,
) -> Any:
    return status_patch(
        tj or TRAINING.obj(),
        previous=previous,
        observation=observation,
        run=RUN,
        job_name="train",
        metrics=extra.pop("metrics", {}),
        now=now,
        **extra,
    )


def test_status_for_a_running_training() -> None:
    plan = _patch(TrainingJobStatus(phase="Pending"), RUNNING, NOW)
    status = plan.status
    assert status["phase"] == "Running"
    assert status["observedGeneration"] == 3
    assert status["jobName"] == "train"
    assert status["mlflowRunId"] == RUN.run_id
    assert status["mlflowExperimentId"] == "7"
    assert status["mlflowRunUrl"] == (
        f"http://mlflow.mlcycle:5000/#/experiments/7/runs/{RUN.run_id}"
    )
    assert status["startTime"] == "2026-01-01T12:00:00Z"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"Running", "TrackingReady"}
    assert conditions["Running"]["status"] == "True"
    assert all(c["observedGeneration"] == 3 for c in conditions.values())
    assert plan.changed
    assert [(e.type, e.reason) for e in plan.events] == [
        ("Normal", "Running"),
        ("Normal", "RunBound"),
    ]


def test_an_unchanged_observation_writes_nothing_and_emits_nothing() -> None:
    first = _patch(TrainingJobStatus(phase="Pending"), RUNNING, NOW)
    again = _patch(_status(first.status), RUNNING, later(minutes=3))
    assert again.changed is False
    assert again.events == []
    assert again.status == first.status


def test_transition_time_moves_only_when_the_status_moves() -> None:
    first = _status(_patch(None, RUNNING, NOW).status)
    t1 = later(minutes=1)
    still_running = TrainingObservation("Running", "Running", "2 of 2 workers running")
    second = _status(_patch(first, still_running, t1).status)
    running = find_condition(second.conditions, reasons.RUNNING)
    assert running is not None
    assert (running.last_transition_time, running.message) == (NOW, "2 of 2 workers running")

    t2 = later(minutes=2)
    done = TrainingObservation(
        "Succeeded", "Completed", "the training pod succeeded", terminal=True, completion_time=t2
    )
    third = _patch(second, done, t2, metrics={"accuracy": 0.93})
    finished = _status(third.status)
    running = find_condition(finished.conditions, reasons.RUNNING)
    complete = find_condition(finished.conditions, reasons.COMPLETE)
    tracking = find_condition(finished.conditions, reasons.TRACKING_READY)
    assert running is not None
    assert complete is not None
    assert tracking is not None
    assert (running.status, running.reason, running.last_transition_time) == (
        "False",
        "Completed",
        t2,
    )
    assert (complete.status, complete.last_transition_time) == ("True", t2)
    assert tracking.last_transition_time == NOW
    assert finished.completion_time == t2
    assert finished.start_time == NOW
    assert finished.metrics == {"accuracy": 0.93}
    assert [(e.type, e.reason) for e in third.events] == [("Normal", "Completed")]


def test_failure_is_recorded_and_cleared_fields_are_nulled() -> None:
    failed = TrainingObservation(
        "Failed",
        "OOMKilled",
        "container trainer of pod p was OOMKilled (exit code 137)",
        terminal=True,
        exit_code=137,
        completion_time=LATER,
        attempts=2,
    )
    plan = _patch(TrainingJobStatus(phase="Running"), failed, LATER)
    assert plan.status["failureReason"] == "OOMKilled"
    assert plan.status["failureMessage"].endswith("(exit code 137)")
    assert plan.status["attempts"] == 2
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert (conditions["Failed"]["status"], conditions["Failed"]["reason"]) == ("True", "OOMKilled")
    assert [(e.type, e.reason) for e in plan.events if e.reason != "RunBound"] == [
        ("Warning", "OOMKilled")
    ]

    # A status that (say, after a hand edit) carries a failure while running loses it.
    stale = TrainingJobStatus(phase="Running", failure_reason="Old", failure_message="old")
    cleared = _patch(stale, RUNNING, NOW).status
    assert cleared["failureReason"] is None
    assert cleared["failureMessage"] is None


def test_suspend_and_resume_conditions() -> None:
    suspended = TrainingObservation("Suspended", "Suspended", "the Job is suspended")
    first = _patch(TrainingJobStatus(phase="Running"), suspended, NOW)
    assert first.status["phase"] == "Suspended"
    assert [e.reason for e in first.events if e.reason != "RunBound"] == ["Suspended"]
    resumed = _patch(_status(first.status), RUNNING, LATER)
    condition = find_condition(_status(resumed.status).conditions, reasons.SUSPENDED)
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "Resumed")
    assert resumed.status["phase"] == "Running"


@pytest.mark.parametrize(
    ("observation", "admitted", "reason"),
    [
        (TrainingObservation("Suspended", "Queued", "waiting"), "False", "Queued"),
        (TrainingObservation("Pending", "JobCreated", "waiting for pods"), "True", "Admitted"),
        (RUNNING, "True", "Admitted"),
    ],
)
def test_admitted_condition_mirrors_kueue(
    observation: TrainingObservation, admitted: str, reason: str
) -> None:
    plan = _patch(None, observation, NOW, tj=TRAINING.queue("gpu").obj())
    condition = find_condition(_status(plan.status).conditions, reasons.ADMITTED)
    assert condition is not None
    assert (condition.status, condition.reason) == (admitted, reason)


def test_no_admitted_condition_without_a_queue() -> None:
    plan = _patch(None, RUNNING, NOW)
    assert find_condition(_status(plan.status).conditions, reasons.ADMITTED) is None


def test_gang_restart_emits_one_event_while_the_phase_stays() -> None:
    restarting = TrainingObservation("Running", "GangRestarting", "rank 1 failed; restarting")
    running = _status(_patch(None, RUNNING, NOW).status)
    plan = _patch(running, restarting, LATER)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "GangRestarting")]
    assert _patch(_status(plan.status), restarting, LATER).events == []


def test_gates_not_met_says_which_metric_missed() -> None:
    done = TrainingObservation("Succeeded", "Completed", "done", terminal=True)
    gates = GateResult(False, ["accuracy 0.82 < required 0.9 (short by 0.08)"])
    plan = _patch(TrainingJobStatus(phase="Running"), done, LATER, gates=gates)
    condition = find_condition(_status(plan.status).conditions, reasons.MODEL_REGISTERED)
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "GatesNotMet")
    assert condition.message == "accuracy 0.82 < required 0.9 (short by 0.08)"
    assert ("Warning", "GatesNotMet") in [(e.type, e.reason) for e in plan.events]
    assert plan.status["phase"] == "Succeeded"


def test_registration_is_recorded() -> None:
    done = TrainingObservation("Succeeded", "Completed", "done", terminal=True)
    plan = _patch(
        None, done, LATER, gates=GateResult(True), registered_model_version="train-01234567"
    )
    assert plan.status["registeredModelVersion"] == "train-01234567"
    condition = find_condition(_status(plan.status).conditions, reasons.MODEL_REGISTERED)
    assert condition is not None
    assert condition.status == "True"


def test_blocked_status_keeps_the_phase_and_warns_once() -> None:
    previous = TrainingJobStatus(phase="Pending")
    first = blocked_status(TRAINING.obj(), previous, "MLflowUnavailable", "connection refused", NOW)
    assert first.status["phase"] == "Pending"
    assert first.changed
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "MLflowUnavailable")]
    condition = find_condition(_status(first.status).conditions, reasons.TRACKING_READY)
    assert condition is not None
    assert condition.status == "False"

    again = blocked_status(
        TRAINING.obj(), _status(first.status), "MLflowUnavailable", "connection refused", LATER
    )
    assert again.changed is False
    assert again.events == []


@pytest.mark.parametrize(
    ("spec", "metrics", "expected"),
    [
        ({}, {"accuracy": 0.97}, None),
        ({"primaryMetric": "rmse"}, {"rmse": 0.123456, "accuracy": 0.5}, "rmse=0.1235"),
        ({"primaryMetric": "rmse"}, {"accuracy": 0.5}, None),
        (
            {"register": {"modelName": "m", "gates": [{"metric": "f1", "op": ">", "value": 0}]}},
            {"f1": 0.9, "accuracy": 0.5},
            "f1=0.9",
        ),
        (
            {
                "primaryMetric": "accuracy",
                "register": {"modelName": "m", "gates": [{"metric": "f1", "op": ">", "value": 0}]},
            },
            {"f1": 0.9, "accuracy": 0.5},
            "accuracy=0.5",
        ),
    ],
)
def test_primary_metric_column(
    spec: dict[str, Any], metrics: dict[str, float], expected: str | None
) -> None:
    observation = TrainingObservation(
        phase="Succeeded", reason=reasons.COMPLETED, message="done", terminal=True, attempts=1
    )
    planned = status_patch(
        TRAINING.spec(**spec).obj(),
        previous=None,
        observation=observation,
        run=RUN,
        job_name="train",
        metrics=metrics,
        now=NOW,
    )
    assert planned.status.get("primaryMetric") == expected


# --- What the run records -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tracking_uri", "ui_url", "expected"),
    [
        ("http://mlflow.mlcycle:5000", None, "http://mlflow.mlcycle:5000"),
        ("http://mlflow.mlcycle:5000/", None, "http://mlflow.mlcycle:5000"),
        # Users reach the UI at another address than the pods reach the tracking server.
        ("http://mlflow.mlcycle:5000", "https://mlflow.example.com/", "https://mlflow.example.com"),
        ("databricks", None, None),  # no UI address known
        ("databricks", "https://dbc.example.com/ml", "https://dbc.example.com/ml"),
    ],
)
def test_run_url_at_the_configured_ui_address(
    tracking_uri: str, ui_url: str | None, expected: str | None
) -> None:
    run = RunBinding("abc", "7", "team-a", tracking_uri)
    url = mlflow_run_url(run, ui_url)
    assert url == (f"{expected}/#/experiments/7/runs/abc" if expected else None)


def test_run_tags_record_image_command_code_version_and_mlflow_system_tags() -> None:
    tj = TRAINING.spec(
        args=["--epochs", "3 4"],
        env=[{"name": "GIT_COMMIT", "value": "abc123"}, {"name": "GIT_REPO_URL", "value": "r"}],
        podTemplate={"serviceAccountName": "trainer"},
    ).obj()
    assert run_tags(tj) == {
        "mlcycle.dev/namespace": "team-a",
        "mlcycle.dev/name": "train",
        "mlcycle.dev/kind": "TrainingJob",
        "mlcycle.dev/image": "example/train:1",
        "mlcycle.dev/command": "python train.py --epochs '3 4'",
        "mlcycle.dev/git-commit": "abc123",
        "mlflow.source.type": "JOB",
        "mlflow.source.name": "example/train:1",
        "mlflow.source.git.commit": "abc123",
        "mlflow.source.git.repoURL": "r",
        "mlflow.user": "system:serviceaccount:team-a:trainer",
    }


def test_run_tags_without_code_version_or_command() -> None:
    secret_ref = {"secretKeyRef": {"name": "ci", "key": "commit"}}
    tj = TRAINING.command().spec(env=[{"name": "GIT_COMMIT", "valueFrom": secret_ref}]).obj()
    tags = run_tags(tj)
    # A commit the operator cannot read is left to the training code to record.
    assert "mlflow.source.git.commit" not in tags
    assert "mlcycle.dev/command" not in tags
    assert tags["mlflow.user"] == "system:serviceaccount:team-a:default"
