"""What the training Job and its pods say: how the latest pod failed, why a pod cannot
start, which rank a pod is, and which pods belong to the Job's current attempt."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlcycle.plan import reasons
from mlcycle.plan.conditions import MESSAGE_LIMIT, cap_message
from mlcycle.plan.trainingjob.manifests import (
    labels_of,
    metadata_of,
    status_of,
    timestamp,
    true_condition,
)
from mlcycle.plan.trainingjob.names import (
    ATTEMPT_LABEL,
    COMPLETION_INDEX_KEY,
    CONTAINER_NAME,
    attempt_of_job,
)

_PENDING_CONTAINER_REASONS: Final = frozenset(
    {
        reasons.IMAGE_PULL_BACK_OFF,
        reasons.ERR_IMAGE_PULL,
        reasons.INVALID_IMAGE_NAME,
        reasons.CREATE_CONTAINER_CONFIG_ERROR,
        reasons.CREATE_CONTAINER_ERROR,
    }
)


def job_failed_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # FailureTarget (Kubernetes 1.31+) comes first; Failed follows once pods terminated.
    return true_condition(job, "Failed") or true_condition(job, "FailureTarget")


def pod_name(pod: Mapping[str, Any]) -> str:
    return str(metadata_of(pod).get("name", "?"))


def pod_terminating(pod: Mapping[str, Any]) -> bool:
    return metadata_of(pod).get("deletionTimestamp") is not None


def pod_phase(pod: Mapping[str, Any]) -> str:
    return str(status_of(pod).get("phase", "Pending"))


def _trainer_terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in status_of(pod).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            terminated: Mapping[str, Any] | None = (status.get("state") or {}).get("terminated")
            return terminated
    return None


def rank_of(pod: Mapping[str, Any]) -> int | None:
    metadata = metadata_of(pod)
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
        timestamp(terminated.get("finishedAt"))
        or timestamp(status_of(pod).get("startTime"))
        or timestamp(metadata_of(pod).get("creationTimestamp"))
    )
    return moment or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def latest_pod_failure(pods: Sequence[Mapping[str, Any]]) -> PodFailure | None:
    failed = [pod for pod in pods if pod_phase(pod) == "Failed"]
    if not failed:
        return None
    pod = max(failed, key=_finished_at)
    name = pod_name(pod)
    terminated = _trainer_terminated(pod)
    if terminated is None:
        # Evicted or rejected by the kubelet before the container ran.
        status = status_of(pod)
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


def pending_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a Pending pod cannot start, when the kubelet or the scheduler said so."""
    status = status_of(pod)
    name = pod_name(pod)
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


def current_attempt_pods(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    attempt = str(attempt_of_job(job))
    return [pod for pod in pods if labels_of(pod).get(ATTEMPT_LABEL, attempt) == attempt]
