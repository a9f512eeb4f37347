"""TrainingJob decisions: the child Job and Service, what the pods say, gang restarts,
registration gates, the MLflow run's final status and the status to write.

Pure: manifests are camelCase dicts for server-side apply, observed children are the dicts
the API server returned, and the clock is an argument.

Phases and conditions
---------------------
`status.phase` is one of Pending, Running, Succeeded, Failed, Suspended. Conditions
(`reasons` holds every type and reason):

- `TrackingReady`: the MLflow run is bound (True, `RunBound`) or cannot be
  (False, `MLflowUnavailable` / `MLflowNotConfigured`).
- `Running`: True while the training pods run; False says why not (`Pending`,
  `ImagePullBackOff`, `Unschedulable`, `Queued`, `Completed`, `BackoffLimitExceeded`...).
- `Complete` / `Failed`: written once the training ended, as the batch/v1 Job does; the
  reason of `Failed` is the precise failure (`OOMKilled`, `DeadlineExceeded`, ...).
- `Suspended`: True while suspended (`Suspended` by the user, `Queued` waiting for Kueue);
  present as False (`Resumed`) once it was ever True, like the Job's own condition.
- `Admitted` (only with `queueName`): whether Kueue admitted the Job (unsuspended it).
- `ModelRegistered` (only with `register`, after success): True, or False with
  `GatesNotMet` and which metric missed by how much, or `ChampionMetricMissing` when the
  `compareTo` champion has nothing to compare with (unless `onMissing: pass`).

Every condition carries the TrainingJob's `observedGeneration`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import operator
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from mlcycle.api.redaction import redact_url
from mlcycle.api.v1alpha1.common import API_VERSION
from mlcycle.api.v1alpha1.trainingjob import (
    MetricGate,
    Registration,
    TrainingJob,
    TrainingJobPhase,
    TrainingJobStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.conditions import (
    MESSAGE_LIMIT,
    ConditionSet,
    EventIntent,
    StatusPlan,
    cap_message,
    condition_event,
    find_condition,
    status_changed,
)
from mlcycle.plan.ownership import MANAGED_BY_LABEL, controller_reference, name_label
from mlcycle.plan.workload import merged_env, mlflow_env, secret_env, with_workload

CONTAINER_NAME: Final = "trainer"
MASTER_PORT: Final = 29500
# Kubernetes' own default; written out so the Job shows what the operator relies on.
DEFAULT_BACKOFF_LIMIT: Final = 6

TRAININGJOB_LABEL: Final = "mlcycle.dev/trainingjob"
TRAININGJOB_UID_LABEL: Final = "mlcycle.dev/trainingjob-uid"
ATTEMPT_LABEL: Final = "mlcycle.dev/attempt"
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_KEY: Final = "batch.kubernetes.io/job-completion-index"

# A Job's name becomes the `job-name` label of its pods (label values are at most 63
# characters), and for an Indexed Job `<name>-<index>` becomes each pod's hostname and the
# name the headless Service (a DNS-1035 label) must carry.
_NAME_LIMIT: Final = 63
_DNS_1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

_PENDING_CONTAINER_REASONS: Final = frozenset(
    {
        reasons.IMAGE_PULL_BACK_OFF,
        reasons.ERR_IMAGE_PULL,
        reasons.INVALID_IMAGE_NAME,
        reasons.CREATE_CONTAINER_CONFIG_ERROR,
        reasons.CREATE_CONTAINER_ERROR,
    }
)


# --- The MLflow run and names --------------------------------------------------------------


@dataclass(frozen=True)
class RunBinding:
    """The MLflow run the training pods log into, created before the pods start."""

    run_id: str
    experiment_id: str
    experiment_name: str
    tracking_uri: str
    credentials_secret: str | None = None
    """Secret in the TrainingJob's namespace with MLflow credentials for the pods."""


def experiment_name(tj: TrainingJob) -> str:
    if tj.spec.mlflow is not None and tj.spec.mlflow.experiment_name:
        return tj.spec.mlflow.experiment_name
    return str(tj.metadata.namespace)


def run_name(tj: TrainingJob) -> str:
    if tj.spec.mlflow is not None and tj.spec.mlflow.run_name:
        return tj.spec.mlflow.run_name
    return str(tj.metadata.name)


def mlflow_run_url(run: RunBinding, ui_url: str | None = None) -> str | None:
    """The run's page in the MLflow UI: at `ui_url` (`--mlflow-ui-url`, the address users
    reach, which the in-cluster tracking URI often is not), else at the tracking URI when
    that is the UI's own address."""
    base = ui_url or run.tracking_uri
    if not base.startswith(("http://", "https://")):
        return None
    base = redact_url(base).rstrip("/")
    return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


# --- What the run records -------------------------------------------------------------------

GIT_COMMIT_ENV: Final = "GIT_COMMIT"
"""A literal `spec.env` entry naming the commit of the training code (CI sets it when it
builds the image or writes the manifest)."""
GIT_REPO_URL_ENV: Final = "GIT_REPO_URL"
# MLflow refuses run tag values longer than this.
_TAG_VALUE_LIMIT: Final = 8000


def _literal_env(tj: TrainingJob, name: str) -> str | None:
    return next((env.value for env in tj.spec.env if env.name == name and env.value), None)


def run_tags(tj: TrainingJob) -> dict[str, str]:
    """The tags the run is created with: which object owns it, and what reproduces it (image,
    command, code version), also as MLflow's own system tags so its UI shows Source, the
    git commit and User. The user is the Kubernetes identity the training runs as: the
    object does not record who created it."""
    overlay = tj.spec.pod_template
    account = (overlay.service_account_name if overlay else None) or "default"
    namespace = str(tj.metadata.namespace)
    tags = {
        "mlcycle.dev/namespace": namespace,
        "mlcycle.dev/name": str(tj.metadata.name),
        "mlcycle.dev/kind": "TrainingJob",
        "mlcycle.dev/image": tj.spec.image,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": tj.spec.image,
        "mlflow.user": f"system:serviceaccount:{namespace}:{account}",
    }
    command = [*tj.spec.command, *tj.spec.args]
    if command:
        tags["mlcycle.dev/command"] = shlex.join(command)
    commit = _literal_env(tj, GIT_COMMIT_ENV)
    if commit:
        tags["mlcycle.dev/git-commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    repo = _literal_env(tj, GIT_REPO_URL_ENV)
    if repo:
        tags["mlflow.source.git.repoURL"] = repo
    return {key: value[:_TAG_VALUE_LIMIT] for key, value in tags.items()}


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def job_name(tj: TrainingJob, attempt: int = 0) -> str:
    """`<name>` for the first attempt, `<name>-r<attempt>` for each gang restart.

    A name that is too long, or not a DNS-1035 label (dots, a leading digit), is shortened
    and made valid with a hash of the full name, so two TrainingJobs never share a Job.
    """
    name = str(tj.metadata.name)
    suffix = f"-r{attempt}" if attempt else ""
    limit = _NAME_LIMIT
    if tj.spec.workers > 1:
        limit -= len(f"-{tj.spec.workers - 1}")  # room for the pod hostname's index
    if _DNS_1035_LABEL.match(name) and len(name) + len(suffix) <= limit:
        return name + suffix
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not cleaned[:1].isalpha():
        cleaned = f"tj-{cleaned}"
    keep = limit - len(suffix) - len(_short_hash(name)) - 1
    return f"{cleaned[:keep].rstrip('-')}-{_short_hash(name)}{suffix}"


def attempt_of(name: str, tj: TrainingJob) -> int:
    """The gang attempt a Job name of this TrainingJob stands for (0 when it is no retry)."""
    match = re.search(r"-r([0-9]+)$", name)
    if match and job_name(tj, int(match.group(1))) == name:
        return int(match.group(1))
    return 0


def attempt_of_job(job: Mapping[str, Any]) -> int:
    label = _labels_of(job).get(ATTEMPT_LABEL, "0")
    return int(label) if label.isdigit() else 0


def backoff_limit(tj: TrainingJob) -> int:
    if tj.spec.backoff_limit is not None:
        return tj.spec.backoff_limit
    return DEFAULT_BACKOFF_LIMIT


def job_suspended(tj: TrainingJob, job: Mapping[str, Any] | None = None) -> bool:
    """Whether the Job should be suspended.

    With a `queueName` the Job is created suspended and Kueue admits it by unsuspending it;
    after that Kueue owns the field (it suspends again on preemption), so the existing Job's
    value is kept unless the user suspends the TrainingJob.
    """
    if tj.spec.suspend:
        return True
    if tj.spec.queue_name is None:
        return False
    if job is None:
        return True
    return bool(_spec_of(job).get("suspend"))


# --- Children -----------------------------------------------------------------------------


def _child_labels(tj: TrainingJob, attempt: int) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: "mlcycle",
        TRAININGJOB_LABEL: name_label(str(tj.metadata.name)),
        TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
        ATTEMPT_LABEL: str(attempt),
    }


def hyperparameter_env_name(name: str) -> str:
    return "MLCYCLE_HP_" + re.sub(r"[.-]", "_", name).upper()


def _hyperparameter_env(hyperparameters: Mapping[str, str]) -> list[dict[str, Any]]:
    by_env_name: dict[str, list[str]] = {}
    for name in sorted(hyperparameters):
        by_env_name.setdefault(hyperparameter_env_name(name), []).append(name)
    # `lr` and `LR` (or `a.b` and `a_b`) would make the same variable; neither is the right
    # one, so both are left to MLCYCLE_HYPERPARAMETERS rather than picked silently.
    env = [
        {"name": env_name, "value": hyperparameters[names[0]]}
        for env_name, names in by_env_name.items()
        if len(names) == 1
    ]
    all_of_them = json.dumps(dict(hyperparameters), sort_keys=True)
    env.append({"name": "MLCYCLE_HYPERPARAMETERS", "value": all_of_them})
    return env


def _distributed_env(tj: TrainingJob, name: str) -> list[dict[str, Any]]:
    # One process per pod: WORLD_SIZE counts pods. torchrun users pass
    # `--nnodes=$WORLD_SIZE --node_rank=$NODE_RANK` and let torchrun compute the rest.
    completion_index = {
        "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_KEY}']"}
    }
    return [
        # An Indexed Job's pod i has hostname `<job>-<i>`; with `subdomain` set to the
        # headless Service it resolves as `<job>-<i>.<service>` inside the namespace.
        {"name": "MASTER_ADDR", "value": f"{name}-0.{name}"},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "WORLD_SIZE", "value": str(tj.spec.workers)},
        {"name": "RANK", "valueFrom": completion_index},
        {"name": "NODE_RANK", "valueFrom": completion_index},
    ]


def training_env(tj: TrainingJob, run: RunBinding, name: str) -> list[dict[str, Any]]:
    """The container's environment: mlcycle's variables, then the user's `env`.

    Ours come first because Kubernetes expands `$(VAR)` only from variables defined earlier,
    so the user's values may refer to `$(MLFLOW_RUN_ID)` and friends. A user variable with
    the same name replaces ours rather than following it: server-side apply rejects
    duplicate names in `env` (a list keyed by name).
    """
    ours: list[dict[str, Any]] = [
        *mlflow_env(run.tracking_uri, run.credentials_secret),
        {"name": "MLFLOW_EXPERIMENT_NAME", "value": run.experiment_name},
        {"name": "MLFLOW_EXPERIMENT_ID", "value": run.experiment_id},
        {"name": "MLFLOW_RUN_ID", "value": run.run_id},
        {"name": "MLCYCLE_TRAININGJOB", "value": str(tj.metadata.name)},
        *_hyperparameter_env(tj.spec.hyperparameters),
    ]
    dataset = tj.spec.dataset
    if dataset is not None:
        ours.append({"name": "MLCYCLE_DATASET_URI", "value": dataset.uri})
        if dataset.digest is not None:
            ours.append({"name": "MLCYCLE_DATASET_DIGEST", "value": dataset.digest})
        if dataset.version is not None:
            ours.append({"name": "MLCYCLE_DATASET_VERSION", "value": dataset.version})
    s3 = tj.spec.s3
    if s3 is not None:
        ours.append(secret_env("AWS_ACCESS_KEY_ID", s3.secret_ref.name))
        ours.append(secret_env("AWS_SECRET_ACCESS_KEY", s3.secret_ref.name))
        if s3.endpoint is not None:
            ours.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": s3.endpoint})
    if tj.spec.workers > 1:
        ours.extend(_distributed_env(tj, name))
    return merged_env(ours, tj.spec)


def _container(tj: TrainingJob, run: RunBinding, name: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": tj.spec.image,
        "env": training_env(tj, run, name),
        # The last lines of output become the termination message, which status shows when
        # the script crashed without writing /dev/termination-log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if tj.spec.command:
        container["command"] = list(tj.spec.command)
    if tj.spec.args:
        container["args"] = list(tj.spec.args)
    return container


def _pod_spec(tj: TrainingJob, run: RunBinding, name: str) -> dict[str, Any]:
    container = _container(tj, run, name)
    pod: dict[str, Any] = {
        # A Job with a podFailurePolicy requires Never; the Job controller makes new pods.
        "restartPolicy": "Never",
        "containers": [container],
    }
    if tj.spec.workers > 1:
        pod["subdomain"] = name
    # The image is the user's: whether its program writes outside /tmp is unknown, so the
    # root filesystem stays writable unless the overlay says otherwise.
    return with_workload(pod, container, tj.spec, read_only_root=False)


def pod_failure_policy(tj: TrainingJob) -> dict[str, Any]:
    """Exit codes to the Job's podFailurePolicy; the first matching rule wins.

    Disruptions (preemption, node drain, eviction) come first and never count: a pod
    killed by SIGTERM during a drain must not hit a permanent exit code such as 143.
    """
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    policy = tj.spec.failure_policy
    if policy is not None:
        for action, codes in (
            ("FailJob", policy.permanent_exit_codes),
            ("Count", policy.retryable_exit_codes),
        ):
            if codes:
                on_exit_codes = {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": sorted(codes),
                }
                rules.append({"action": action, "onExitCodes": on_exit_codes})
    return {"rules": rules}


def desired_job(tj: TrainingJob, run: RunBinding, *, attempt: int = 0) -> dict[str, Any]:
    """The batch/v1 Job running attempt `attempt` of the training.

    No `ttlSecondsAfterFinished`: the TrainingJob owns its TTL, and a Job deleted under a
    level-triggered controller would be created again.
    """
    name = job_name(tj, attempt)
    labels = _child_labels(tj, attempt)
    job_labels = dict(labels)
    if tj.spec.queue_name is not None:
        # Only on the Job: Kueue admits the Job as one workload, and the same label on its
        # pods would make Kueue's pod integration gate each pod again.
        job_labels[KUEUE_QUEUE_LABEL] = tj.spec.queue_name
    workers = tj.spec.workers
    spec: dict[str, Any] = {
        # With several workers a failed rank restarts the whole gang (the operator makes the
        # next attempt); a per-pod retry would rejoin a rendezvous that no longer exists.
        "backoffLimit": 0 if workers > 1 else backoff_limit(tj),
        "completions": workers,
        "parallelism": workers,
        "suspend": job_suspended(tj),
        "podFailurePolicy": pod_failure_policy(tj),
        "template": {
            "metadata": {"labels": labels},
            "spec": _pod_spec(tj, run, name),
        },
    }
    if workers > 1:
        spec["completionMode"] = "Indexed"
    if tj.spec.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = tj.spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": tj.metadata.namespace,
            "labels": job_labels,
            "ownerReferences": [controller_reference(tj)],
        },
        "spec": spec,
    }


def desired_headless_service(tj: TrainingJob, job_name: str) -> dict[str, Any] | None:
    """The Service giving each rank of a multi-worker Job a stable DNS name."""
    if tj.spec.workers == 1:
        return None
    attempt = attempt_of(job_name, tj)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job_name,
            "namespace": tj.metadata.namespace,
            "labels": _child_labels(tj, attempt),
            "ownerReferences": [controller_reference(tj)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {
                TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
                ATTEMPT_LABEL: str(attempt),
            },
            "ports": [{"name": "dist", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
            # Ranks resolve pod 0 while it starts, before any readiness is known.
            "publishNotReadyAddresses": True,
        },
    }


def desired_model_version(tj: TrainingJob, run: RunBinding) -> dict[str, Any]:
    """The ModelVersion registering the trained model once every gate held.

    Standalone, not owned by the TrainingJob: a TrainingJob deletes itself after
    `ttlSecondsAfterFinished`, and a registered model (perhaps serving traffic) must not go
    with it. Named after the run so a re-created TrainingJob of the same name registers a
    new version instead of colliding with the old one's immutable source.
    """
    registration = tj.spec.registration
    if registration is None:
        raise ValueError("the TrainingJob has no register block")
    base = f"{tj.metadata.name}-{run.run_id[:8]}"
    name = base if len(base) <= 253 else f"{base[:244]}-{_short_hash(base)}"
    spec: dict[str, Any] = {
        "modelName": registration.model_name,
        "source": {"run": {"runId": run.run_id, "artifactPath": registration.artifact_path}},
        "tags": {
            TRAININGJOB_LABEL: str(tj.metadata.name),
            TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
        },
    }
    if registration.aliases:
        # A later training that passes its gates takes the aliases over, as MLflow moves an
        # alias to the version last given it; a person's pin still outranks it.
        spec["aliases"] = list(registration.aliases)
        spec["aliasPolicy"] = "Newest"
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": name,
            "namespace": tj.metadata.namespace,
            "labels": {
                MANAGED_BY_LABEL: "mlcycle",
                TRAININGJOB_LABEL: name_label(str(tj.metadata.name)),
                TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
            },
        },
        "spec": spec,
    }


# --- Reading the Job and its pods -----------------------------------------------------------


def _metadata_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _metadata_of(obj).get("labels") or {}


def _spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _timestamp(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.datetime.fromisoformat(value)
    return None


def _true_condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in _status_of(obj).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def _job_failed_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # FailureTarget (Kubernetes 1.31+) comes first; Failed follows once pods terminated.
    return _true_condition(job, "Failed") or _true_condition(job, "FailureTarget")


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str(_metadata_of(pod).get("name", "?"))


def _terminating(pod: Mapping[str, Any]) -> bool:
    return _metadata_of(pod).get("deletionTimestamp") is not None


def _pod_phase(pod: Mapping[str, Any]) -> str:
    return str(_status_of(pod).get("phase", "Pending"))


def _trainer_terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in _status_of(pod).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            terminated: Mapping[str, Any] | None = (status.get("state") or {}).get("terminated")
            return terminated
    return None


def rank_of(pod: Mapping[str, Any]) -> int | None:
    metadata = _metadata_of(pod)
    for source in (metadata.get("labels") or {}, metadata.get("annotations") or {}):
        index = source.get(COMPLETION_INDEX_KEY)
        if isinstance(index, str) and index.isdigit():
            return int(index)
    return None


@dataclass(frozen=True)
class PodFailure:
    """How one pod ended, in words a user can act on."""

    pod: str
    reason: str | None  # the container's terminated reason, such as OOMKilled
    exit_code: int | None
    message: str
    rank: int | None


def _finished_at(pod: Mapping[str, Any]) -> datetime.datetime:
    terminated = _trainer_terminated(pod) or {}
    moment = (
        _timestamp(terminated.get("finishedAt"))
        or _timestamp(_status_of(pod).get("startTime"))
        or _timestamp(_metadata_of(pod).get("creationTimestamp"))
    )
    return moment or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def latest_pod_failure(pods: Sequence[Mapping[str, Any]]) -> PodFailure | None:
    failed = [pod for pod in pods if _pod_phase(pod) == "Failed"]
    if not failed:
        return None
    pod = max(failed, key=_finished_at)
    name = _pod_name(pod)
    terminated = _trainer_terminated(pod)
    if terminated is None:
        # Evicted or rejected by the kubelet before the container ran.
        status = _status_of(pod)
        detail = ": ".join(str(s) for s in (status.get("reason"), status.get("message")) if s)
        message = f"pod {name} failed" + (f": {detail}" if detail else "")
        return PodFailure(name, status.get("reason"), None, cap_message(message), rank_of(pod))
    exit_code = terminated.get("exitCode")
    reason = terminated.get("reason")
    head = f"container {CONTAINER_NAME} of pod {name}"
    if reason == reasons.OOM_KILLED:
        head += " was OOMKilled"
        if exit_code is not None:
            head += f" (exit code {exit_code})"
    else:
        head += f" exited with code {exit_code}"
    tail = str(terminated.get("message") or "").strip()
    message = head
    if tail:
        # The end of the output is where a traceback says what went wrong.
        room = MESSAGE_LIMIT - len(head) - 2
        message = f"{head}: {tail[-room:]}" if room > 0 else head
    return PodFailure(name, reason, exit_code, cap_message(message), rank_of(pod))


def _pending_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a Pending pod cannot start, when the kubelet or the scheduler said so."""
    status = _status_of(pod)
    name = _pod_name(pod)
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _PENDING_CONTAINER_REASONS:
            detail = waiting.get("message") or waiting["reason"]
            return waiting["reason"], f"container {container.get('name')} of pod {name}: {detail}"
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == reasons.UNSCHEDULABLE
        ):
            return reasons.UNSCHEDULABLE, f"pod {name} is unschedulable: {condition.get('message')}"
    return None


# --- Gang restarts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GangRestart:
    """What to do after a rank of a multi-worker training failed.

    `restart` False means the retry budget (backoffLimit, 6 when unset) is spent and the
    training fails with BackoffLimitExceeded.
    """

    restart: bool
    next_attempt: int
    failure: PodFailure | None
    message: str


def _current_attempt_pods(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    attempt = str(attempt_of_job(job))
    return [pod for pod in pods if _labels_of(pod).get(ATTEMPT_LABEL, attempt) == attempt]


def gang_restart(
    tj: TrainingJob, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> GangRestart | None:
    """The decision after a rank failed, or None when no rank failed (or one worker).

    The Job of a gang has backoffLimit 0, so the Job controller marks it Failed with
    BackoffLimitExceeded right after the first rank fails; that is the normal trigger.
    A failed pod seen before the Job caught up triggers the same decision. Permanent exit
    codes (the Job fails with PodFailurePolicy) and the deadline are never retried.
    """
    if tj.spec.workers == 1 or job is None or _true_condition(job, "Complete"):
        return None
    failed_condition = _job_failed_condition(job)
    if failed_condition is not None and (
        failed_condition.get("reason") != reasons.BACKOFF_LIMIT_EXCEEDED
    ):
        return None
    failure = latest_pod_failure(_current_attempt_pods(job, pods))
    if failure is None and failed_condition is None:
        return None
    permanent = tj.spec.failure_policy.permanent_exit_codes if tj.spec.failure_policy else []
    if failure is not None and failure.exit_code in permanent:
        return None
    attempt = attempt_of_job(job)
    limit = backoff_limit(tj)
    what = failure.message if failure is not None else "a rank failed"
    if failure is not None and failure.rank is not None:
        what = f"rank {failure.rank} failed: {what}"
    if attempt >= limit:
        message = f"{what}; no gang restarts left (backoffLimit {limit})"
        return GangRestart(False, attempt, failure, cap_message(message))
    message = f"{what}; restarting all {tj.spec.workers} workers (restart {attempt + 1} of {limit})"
    return GangRestart(True, attempt + 1, failure, cap_message(message))


def gang_restart_needed(
    tj: TrainingJob, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> bool:
    decision = gang_restart(tj, job, pods)
    return decision is not None and decision.restart


# --- Observation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingObservation:
    """The child Job and its pods, read as the TrainingJob's state."""

    phase: TrainingJobPhase
    reason: str
    message: str
    terminal: bool = False
    exit_code: int | None = None
    start_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None
    attempts: int = 0


def _attempts(tj: TrainingJob, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> int:
    if tj.spec.workers > 1:
        return attempt_of_job(job) + 1  # a gang restart is one attempt
    status = _status_of(job)
    counted = sum(int(status.get(key) or 0) for key in ("failed", "succeeded", "active"))
    # Job status lags pod events and pods may already be garbage-collected: take the larger.
    return max(counted, len(pods))


def _failure_reason(job_reason: str, failure: PodFailure | None) -> str:
    # The Job says how many tries failed; the pod says why, which is what a user acts on.
    if job_reason == reasons.DEADLINE_EXCEEDED or failure is None:
        return job_reason
    return reasons.OOM_KILLED if failure.reason == reasons.OOM_KILLED else job_reason


def observe_training(
    tj: TrainingJob,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> TrainingObservation:
    """Translate the Job and the pods of its attempt into phase, reason and message.

    In order: the Job's Complete or Failed condition (a failure refined by the latest
    failed pod: OOMKilled, exit code, termination message); a gang restart decision;
    a suspended Job without live pods; a pod Pending longer than startupDeadlineSeconds;
    running pods; why pods are still Pending.
    """
    if job is None:
        return TrainingObservation("Pending", reasons.PENDING, "the Job is not created yet")
    pods = _current_attempt_pods(job, pods)
    attempts = _attempts(tj, job, pods)
    start_time = _timestamp(_status_of(job).get("startTime"))
    progress: dict[str, Any] = {"start_time": start_time, "attempts": attempts}

    complete = _true_condition(job, "Complete")
    if complete is not None:
        completion_time = (
            _timestamp(_status_of(job).get("completionTime"))
            or _timestamp(complete.get("lastTransitionTime"))
            or now
        )
        message = f"all {tj.spec.workers} workers succeeded" if tj.spec.workers > 1 else ""
        return TrainingObservation(
            "Succeeded",
            reasons.COMPLETED,
            message or "the training pod succeeded",
            terminal=True,
            completion_time=completion_time,
            **progress,
        )

    restart = gang_restart(tj, job, pods)
    if restart is not None and restart.restart:
        return TrainingObservation("Running", reasons.GANG_RESTARTING, restart.message, **progress)
    if restart is not None:
        failure = restart.failure
        return TrainingObservation(
            "Failed",
            _failure_reason(reasons.BACKOFF_LIMIT_EXCEEDED, failure),
            restart.message,
            terminal=True,
            exit_code=None if failure is None else failure.exit_code,
            completion_time=now,
            **progress,
        )

    failed = _job_failed_condition(job)
    if failed is not None:
        job_reason = str(failed.get("reason") or reasons.ERROR)
        failure = latest_pod_failure(pods)
        if job_reason == reasons.DEADLINE_EXCEEDED or failure is None:
            # Pods killed at the deadline exit with SIGTERM's code, which explains nothing.
            message = str(failed.get("message") or "the Job failed")
            if job_reason == reasons.DEADLINE_EXCEEDED:
                message += f" (activeDeadlineSeconds {tj.spec.active_deadline_seconds})"
            exit_code = None
        else:
            message, exit_code = failure.message, failure.exit_code
        return TrainingObservation(
            "Failed",
            _failure_reason(job_reason, failure),
            cap_message(message),
            terminal=True,
            exit_code=exit_code,
            completion_time=_timestamp(failed.get("lastTransitionTime")) or now,
            **progress,
        )

    live = [pod for pod in pods if not _terminating(pod) and _pod_phase(pod) != "Failed"]
    running = [pod for pod in live if _pod_phase(pod) == "Running"]
    if _spec_of(job).get("suspend") and not any(
        _pod_phase(pod) in ("Pending", "Running") for pod in live
    ):
        if tj.spec.queue_name is not None and not tj.spec.suspend:
            queue = tj.spec.queue_name
            return TrainingObservation(
                "Suspended",
                reasons.QUEUED,
                f"waiting for Kueue to admit it from {queue}",
                **progress,
            )
        return TrainingObservation(
            "Suspended", reasons.SUSPENDED, "the Job is suspended", **progress
        )

    pending = [pod for pod in live if _pod_phase(pod) == "Pending"]
    deadline = tj.spec.startup_deadline_seconds
    if deadline is not None:
        for pod in pending:
            created = _timestamp(_metadata_of(pod).get("creationTimestamp"))
            if created is None:
                continue
            waited = (now - created).total_seconds()
            if waited > deadline:
                message = (
                    f"pod {_pod_name(pod)} has been Pending for {int(waited)}s,"
                    f" longer than startupDeadlineSeconds ({deadline}s)"
                )
                problem = _pending_problem(pod)
                if problem is not None:
                    message += f": {problem[0]}: {problem[1]}"
                return TrainingObservation(
                    "Failed",
                    reasons.STARTUP_DEADLINE_EXCEEDED,
                    cap_message(message),
                    terminal=True,
                    completion_time=now,
                    **progress,
                )

    finished = [pod for pod in live if _pod_phase(pod) == "Succeeded"]
    if running or finished:
        # For a gang, finished ranks wait for the rest: only the Job's Complete is success.
        message = f"{len(running)} of {tj.spec.workers} workers running"
        if finished:
            message += f", {len(finished)} finished"
        return TrainingObservation("Running", reasons.RUNNING, message, **progress)
    for pod in pending:
        problem = _pending_problem(pod)
        if problem is not None:
            return TrainingObservation("Pending", problem[0], cap_message(problem[1]), **progress)
    return TrainingObservation(
        "Pending", reasons.JOB_CREATED, "waiting for the training pods to start", **progress
    )


# --- Registration gates ---------------------------------------------------------------------

_COMPARISONS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}
_NEGATIONS: Final[Mapping[str, str]] = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!="}


class ChampionView(Protocol):
    """The version `register.compareTo` points at, as the registry reports it."""

    @property
    def version(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def run_found(self) -> bool: ...
    @property
    def value(self) -> float | None: ...


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    reason: str = reasons.GATES_NOT_MET
    """The `ModelRegistered` reason when refused."""


def _number(value: float) -> str:
    return f"{value:.6g}"


def _miss(metric: str, actual: float, op: str, required: float, what: str = "required") -> str:
    gap = _number(abs(required - actual))
    if op == "==":
        return f"{metric} {_number(actual)} != {what} {_number(required)} (off by {gap})"
    if op in (">", "<"):
        return f"{metric} {_number(actual)} is not {op} {what} {_number(required)} (short by {gap})"
    return (
        f"{metric} {_number(actual)} {_NEGATIONS[op]} {what} {_number(required)} (short by {gap})"
    )


def evaluate_gates(
    gates: Sequence[MetricGate],
    metrics: Mapping[str, float],
    *,
    champion: ChampionView | None = None,
    registration: Registration | None = None,
) -> GateResult:
    """Every gate must hold; each failure says which metric missed and by how much.

    `champion` is the version behind `registration.compareTo`; None means there is no
    champion yet, and the first challenger wins by default. A champion without the compare
    metric refuses the registration unless `onMissing` is `pass`: passing by default would
    let any model replace one that was never measured the same way.
    """
    reason = reasons.GATES_NOT_MET
    failures: list[str] = []
    for gate in gates:
        actual = metrics.get(gate.metric)
        if actual is None:
            failures.append(f"metric {gate.metric} was not logged")
        elif not _COMPARISONS[gate.op](actual, gate.value):
            failures.append(_miss(gate.metric, actual, gate.op, gate.value))
    if (
        registration is not None
        and registration.compare_to is not None
        and registration.compare_metric is not None
        and champion is not None
    ):
        metric, op = registration.compare_metric, registration.compare_op
        actual = metrics.get(metric)
        what = f"champion ({registration.compare_to}, version {champion.version})"
        if actual is None:
            failures.append(f"metric {metric} was not logged")
        elif champion.value is None:
            if registration.on_missing == "fail":
                reason = reasons.CHAMPION_METRIC_MISSING
                failures.append(
                    f"{what} has no {metric} to compare with: {_why_missing(champion, metric)}"
                    " (set register.onMissing: pass to register anyway)"
                )
        elif not _COMPARISONS[op](actual, champion.value):
            failures.append(_miss(metric, actual, op, champion.value, what=what))
    return GateResult(passed=not failures, failures=failures, reason=reason)


def _why_missing(champion: ChampionView, metric: str) -> str:
    if champion.run_id is None:
        return f"it was registered from {champion.source}, not from a run"
    if not champion.run_found:
        return f"its run {champion.run_id} no longer exists"
    return f"its run {champion.run_id} did not log {metric}"


# --- The MLflow run's end -----------------------------------------------------------------

MlflowRunStatus = Literal["FINISHED", "FAILED", "KILLED"]


def mlflow_run_status(
    observation: TrainingObservation, *, deleted: bool = False
) -> MlflowRunStatus:
    """How the operator closes the run, so no run stays RUNNING after its pods are gone.

    KILLED when something outside the training stopped it: the deadline, or the
    TrainingJob deleted while it still ran (`deleted`).
    """
    if not observation.terminal:
        if deleted:
            return "KILLED"
        raise ValueError(f"the training has not ended (phase {observation.phase})")
    if observation.phase == "Succeeded":
        return "FINISHED"
    if observation.reason == reasons.DEADLINE_EXCEEDED:
        return "KILLED"
    return "FAILED"


# --- Status -------------------------------------------------------------------------------


# Cleared with an explicit null (JSON merge patch) when they no longer apply.
_CLEARABLE: Final = ("completionTime", "failureReason", "failureMessage")


def _recorded(previous: TrainingJobStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = previous.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _with_cleared_fields(status: dict[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    for key in _CLEARABLE:
        if key not in status and key in recorded:
            status[key] = None
    return status


def status_patch(
    tj: TrainingJob,
    *,
    previous: TrainingJobStatus | None,
    observation: TrainingObservation,
    run: RunBinding | None,
    job_name: str | None,
    metrics: Mapping[str, float],
    now: datetime.datetime,
    run_url: str | None = None,
    gates: GateResult | None = None,
    registered_model_version: str | None = None,
) -> StatusPlan:
    """The status for `observation`, and Events for what changed since `previous`.

    Events are emitted for transitions only: a new phase, a gang restart, the run bound,
    the model registered or refused. A resync that observes the same state yields
    `changed=False` and no Events.
    """
    before = previous or TrainingJobStatus()
    phase = observation.phase
    conditions = ConditionSet(before.conditions, tj.metadata.generation, now)
    if run is not None:
        conditions.put(
            reasons.TRACKING_READY,
            True,
            reasons.RUN_BOUND,
            f"MLflow run {run.run_id} in experiment {run.experiment_name}",
        )
    if find_condition(conditions.conditions, reasons.CHILDREN_APPLIED) is not None:
        # Only after a refusal: a Job accepted at once needs no word about it.
        conditions.put(reasons.CHILDREN_APPLIED, True, reasons.APPLIED, "the Job was accepted")
    conditions.put(reasons.RUNNING, phase == "Running", observation.reason, observation.message)
    if phase == "Succeeded":
        conditions.put(reasons.COMPLETE, True, observation.reason, observation.message)
    if phase == "Failed":
        conditions.put(reasons.FAILED, True, observation.reason, observation.message)
    if phase == "Suspended":
        conditions.put(reasons.SUSPENDED, True, observation.reason, observation.message)
    elif find_condition(conditions.conditions, reasons.SUSPENDED) is not None:
        conditions.put(reasons.SUSPENDED, False, reasons.RESUMED, "the Job is not suspended")
    if tj.spec.queue_name is not None:
        waiting = phase == "Suspended" or observation.reason == reasons.PENDING
        if waiting:
            conditions.put(reasons.ADMITTED, False, observation.reason, observation.message)
        else:
            admitted = f"admitted by Kueue from queue {tj.spec.queue_name}"
            conditions.put(reasons.ADMITTED, True, reasons.ADMITTED, admitted)
    if gates is not None and not gates.passed:
        refused = "; ".join(gates.failures)
        conditions.put(reasons.MODEL_REGISTERED, False, gates.reason, refused)
    elif gates is not None and registered_model_version is not None:
        registered = f"registered as ModelVersion {registered_model_version}"
        conditions.put(reasons.MODEL_REGISTERED, True, reasons.MODEL_REGISTERED, registered)

    completion_time = None
    if observation.terminal:
        completion_time = before.completion_time or observation.completion_time or now
    failed = phase == "Failed"
    status = TrainingJobStatus(
        observed_generation=tj.metadata.generation,
        phase=phase,
        conditions=conditions.conditions,
        job_name=job_name or before.job_name,
        mlflow_run_id=run.run_id if run is not None else before.mlflow_run_id,
        mlflow_experiment_id=run.experiment_id if run is not None else before.mlflow_experiment_id,
        mlflow_run_url=run_url
        or (mlflow_run_url(run) if run is not None else None)
        or before.mlflow_run_url,
        start_time=before.start_time or observation.start_time,
        completion_time=completion_time,
        attempts=max(before.attempts or 0, observation.attempts),
        metrics=dict(metrics),
        primary_metric=primary_metric(tj, metrics),
        failure_reason=observation.reason if failed else None,
        failure_message=observation.message if failed else None,
        registered_model_version=registered_model_version or before.registered_model_version,
    )
    recorded = _recorded(before)
    desired = _with_cleared_fields(_recorded(status), recorded)

    events: list[EventIntent] = []
    if phase != before.phase:
        kind = "Warning" if failed else "Normal"
        events.append(EventIntent(kind, observation.reason, cap_message(observation.message)))
    elif observation.reason == reasons.GANG_RESTARTING:
        was = find_condition(before.conditions, reasons.RUNNING)
        if was is None or was.reason != reasons.GANG_RESTARTING:
            events.append(
                EventIntent("Warning", observation.reason, cap_message(observation.message))
            )
    for type_ in (reasons.TRACKING_READY, reasons.MODEL_REGISTERED):
        event = condition_event(before.conditions, conditions.conditions, type_)
        if event is not None:
            events.append(event)
    return StatusPlan(desired, events, status_changed(recorded, desired))


def primary_metric_name(tj: TrainingJob) -> str | None:
    if tj.spec.primary_metric is not None:
        return tj.spec.primary_metric
    registration = tj.spec.registration
    if registration is not None and registration.gates:
        return registration.gates[0].metric
    return None


def primary_metric(tj: TrainingJob, metrics: Mapping[str, float]) -> str | None:
    name = primary_metric_name(tj)
    if name is None or name not in metrics:
        return None
    # Four significant digits fit a column and still tell 0.9667 from 0.9633.
    return f"{name}={metrics[name]:.4g}"


def blocked_status(
    tj: TrainingJob,
    previous: TrainingJobStatus | None,
    reason: str,
    message: str,
    now: datetime.datetime,
    condition: str = reasons.TRACKING_READY,
) -> StatusPlan:
    """The training cannot proceed until MLflow is reachable (or configured), or the API
    server accepts its Job (`condition` CHILDREN_APPLIED): say so in a condition, keep the
    phase, and emit a Warning once per new reason."""
    before = previous or TrainingJobStatus()
    conditions = ConditionSet(before.conditions, tj.metadata.generation, now)
    conditions.put(condition, False, reason, message)
    status = before.model_copy(
        update={
            "observed_generation": tj.metadata.generation,
            "phase": before.phase or TrainingJob.initial_phase(),
            "conditions": conditions.conditions,
        }
    )
    recorded = _recorded(before)
    desired = {
        key: value
        for key, value in _recorded(status).items()
        if key in ("observedGeneration", "phase", "conditions")
    }
    was = find_condition(before.conditions, condition)
    events = []
    if was is None or was.status != "False" or was.reason != reason:
        events.append(EventIntent("Warning", reason, cap_message(message)))
    return StatusPlan(desired, events, status_changed(recorded, desired))
