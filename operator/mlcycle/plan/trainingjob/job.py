"""The batch/v1 Job running one attempt of a training, and the headless Service that gives
the ranks of a multi-worker Job their DNS names.

Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from mlcycle.api.v1alpha1.trainingjob import TrainingJob
from mlcycle.plan.ownership import controller_reference
from mlcycle.plan.trainingjob.manifests import spec_of
from mlcycle.plan.trainingjob.names import (
    ATTEMPT_LABEL,
    COMPLETION_INDEX_KEY,
    CONTAINER_NAME,
    TRAININGJOB_UID_LABEL,
    attempt_of,
    child_labels,
    job_name,
)
from mlcycle.plan.trainingjob.run import RunBinding
from mlcycle.plan.workload import merged_env, mlflow_env, secret_env, with_workload

MASTER_PORT: Final = 29500
# Kubernetes' own default; written out so the Job shows what the operator relies on.
DEFAULT_BACKOFF_LIMIT: Final = 6

KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"


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
    return bool(spec_of(job).get("suspend"))


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
    labels = child_labels(tj, attempt)
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
            "labels": child_labels(tj, attempt),
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
