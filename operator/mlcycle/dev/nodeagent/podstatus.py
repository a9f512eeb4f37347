"""A pod's status (phase, conditions, container statuses) computed from what its worker
observed, as the kubelet computes it (pkg/kubelet/kubelet_pods.go, pkg/kubelet/status).

Pure: the records, the previous conditions and the clock are arguments.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlcycle.dev.nodeagent.containerstatus import ContainerRecord, Terminated, container_status
from mlcycle.dev.nodeagent.podspec import Json, PodView
from mlcycle.dev.nodeagent.timestamps import format_time

# Condition types the kubelet writes; other controllers read these literally.
POD_READY_TO_START_CONTAINERS = "PodReadyToStartContainers"
INITIALIZED = "Initialized"
CONTAINERS_READY = "ContainersReady"
READY = "Ready"
AGENT_CONDITION_TYPES = (POD_READY_TO_START_CONTAINERS, INITIALIZED, CONTAINERS_READY, READY)


def _last_exit(record: ContainerRecord) -> Terminated | None:
    """The termination the kubelet's phase logic sees for a container waiting to restart."""
    return record.last_terminated if record.state == "waiting" else None


def compute_phase(
    restart_policy: str,
    init_records: Sequence[ContainerRecord],
    records: Sequence[ContainerRecord],
    pod_is_terminal: bool = False,
) -> str:
    """The kubelet's getPhase over our records (pkg/kubelet/kubelet_pods.go)."""
    pending_init = failed_init = 0
    for record in init_records:
        if record.state == "running":
            pending_init += 1
        elif record.state == "terminated" and record.terminated:
            failed_init += record.terminated.exit_code != 0
        elif (last := _last_exit(record)) is not None:
            failed_init += last.exit_code != 0
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"

    waiting = running = stopped = succeeded = 0
    for record in records:
        if record.state == "running":
            running += 1
        elif record.state == "terminated" and record.terminated:
            stopped += 1
            succeeded += record.terminated.exit_code == 0
        elif (last := _last_exit(record)) is not None:
            stopped += 1
            succeeded += last.exit_code == 0
        else:
            waiting += 1

    if pending_init or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if pod_is_terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    kind: str,
    is_true: bool,
    previous: Mapping[str, Json],
    now: datetime.datetime,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if is_true else "False"
    before = previous.get(kind)
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        transition = before["lastTransitionTime"]
    else:
        transition = format_time(now)
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastTransitionTime": transition,
    }
    if not is_true and reason:
        condition["reason"] = reason
    if not is_true and message:
        condition["message"] = message
    return condition


def _names(records: Iterable[ContainerRecord]) -> str:
    return "[" + " ".join(r.name for r in records) + "]"


@dataclass(frozen=True)
class PodRuntime:
    """The agent's view of one pod at a moment, the input to status building."""

    pod_ip: str
    host_ip: str
    start_time: datetime.datetime
    init_records: tuple[ContainerRecord, ...]
    records: tuple[ContainerRecord, ...]
    # Deletion finished: every process is gone and nothing will restart.
    terminal: bool = False


def build_pod_status(
    pod: PodView,
    runtime: PodRuntime,
    previous_conditions: Sequence[Json],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The pod's status as the agent would write it. `previous_conditions` are the ones this
    agent last wrote (or observed), so a condition keeps its lastTransitionTime while its
    status holds; conditions of other writers (PodScheduled, DisruptionTarget, readiness
    gates) are carried over from the pod unchanged."""
    phase = compute_phase(
        pod.restart_policy, runtime.init_records, runtime.records, runtime.terminal
    )
    previous = {c["type"]: c for c in previous_conditions if "type" in c}
    completed = phase in ("Succeeded", "Failed")

    incomplete_init = [
        r
        for r in runtime.init_records
        if not (r.state == "terminated" and r.terminated and r.terminated.exit_code == 0)
    ]
    initialized = not incomplete_init or completed
    unready = [r for r in runtime.records if not r.ready]
    foreign = {c["type"]: c for c in pod.conditions if c.get("type") not in AGENT_CONDITION_TYPES}
    gates_unready = [
        gate for gate in pod.readiness_gates if foreign.get(gate, {}).get("status") != "True"
    ]
    containers_ready = not unready and not completed

    if completed:
        reason = "PodCompleted"
        containers_message = ""
    else:
        reason = "ContainersNotReady"
        containers_message = f"containers with unready status: {_names(unready)}"
    ready_reason, ready_message = reason, containers_message
    if containers_ready and gates_unready:
        ready_reason = "ReadinessGatesNotReady"
        ready_message = (
            f"corresponding condition of pod readiness gate {gates_unready[0]!r} "
            "does not exist or is False"
        )

    conditions = [
        *foreign.values(),
        _condition(POD_READY_TO_START_CONTAINERS, not runtime.terminal, previous, now),
        _condition(
            INITIALIZED,
            initialized,
            previous,
            now,
            "ContainersNotInitialized",
            f"containers with incomplete status: {_names(incomplete_init)}",
        ),
        _condition(CONTAINERS_READY, containers_ready, previous, now, reason, containers_message),
        _condition(
            READY,
            containers_ready and not gates_unready,
            previous,
            now,
            ready_reason,
            ready_message,
        ),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": runtime.host_ip,
        "hostIPs": [{"ip": runtime.host_ip}],
        "podIP": runtime.pod_ip,
        "podIPs": [{"ip": runtime.pod_ip}],
        "startTime": format_time(runtime.start_time),
        "containerStatuses": [container_status(r) for r in runtime.records],
    }
    if runtime.init_records:
        status["initContainerStatuses"] = [container_status(r) for r in runtime.init_records]
    return status
