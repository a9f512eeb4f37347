"""One container's state as the agent records it, written to and read back from the
pod's containerStatuses."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any, Literal

from mlcycle.dev.nodeagent.podspec import ContainerSpec, Json
from mlcycle.dev.nodeagent.timestamps import format_time, parse_time

# Container state reasons as the kubelet reports them; `kubectl get pods` shows them as is.
REASON_CONTAINER_CREATING = "ContainerCreating"
REASON_POD_INITIALIZING = "PodInitializing"
REASON_CREATE_CONTAINER_ERROR = "CreateContainerError"
REASON_CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
REASON_CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_OOM_KILLED = "OOMKilled"
REASON_START_ERROR = "StartError"


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: datetime.datetime
    started_at: datetime.datetime | None = None
    signal: int | None = None
    message: str = ""
    container_id: str = ""


@dataclass(frozen=True)
class ContainerRecord:
    """What the agent knows of one container right now; exactly one state applies."""

    name: str
    image: str
    state: Literal["waiting", "running", "terminated"] = "waiting"
    waiting_reason: str = REASON_CONTAINER_CREATING
    waiting_message: str = ""
    started_at: datetime.datetime | None = None
    container_id: str = ""
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0
    started: bool = False
    ready: bool = False

    def waiting(self, reason: str, message: str = "") -> ContainerRecord:
        return dataclasses.replace(
            self,
            state="waiting",
            waiting_reason=reason,
            waiting_message=message,
            started=False,
            ready=False,
        )

    def running(self, started_at: datetime.datetime, container_id: str) -> ContainerRecord:
        return dataclasses.replace(
            self,
            state="running",
            started_at=started_at,
            container_id=container_id,
            waiting_reason="",
            waiting_message="",
            terminated=None,
            started=False,
            ready=False,
        )

    def exited(self, terminated: Terminated) -> ContainerRecord:
        return dataclasses.replace(
            self, state="terminated", terminated=terminated, started=False, ready=False
        )

    def restarting(self, reason: str, message: str) -> ContainerRecord:
        """Terminated → waiting for a restart; the termination moves to lastState."""
        return dataclasses.replace(
            self,
            state="waiting",
            waiting_reason=reason,
            waiting_message=message,
            last_terminated=self.terminated or self.last_terminated,
            terminated=None,
            container_id="",
            started=False,
            ready=False,
        )


def _terminated_status(terminated: Terminated) -> dict[str, Any]:
    status: dict[str, Any] = {
        "exitCode": terminated.exit_code,
        "reason": terminated.reason,
        "finishedAt": format_time(terminated.finished_at),
    }
    if terminated.signal:
        status["signal"] = terminated.signal
    if terminated.message:
        status["message"] = terminated.message
    if terminated.started_at:
        status["startedAt"] = format_time(terminated.started_at)
    if terminated.container_id:
        status["containerID"] = terminated.container_id
    return status


def container_status(record: ContainerRecord) -> dict[str, Any]:
    if record.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": format_time(record.started_at)}}  # type: ignore[arg-type]
    elif record.state == "terminated" and record.terminated:
        state = {"terminated": _terminated_status(record.terminated)}
    else:
        waiting: dict[str, str] = {"reason": record.waiting_reason}
        if record.waiting_message:
            waiting["message"] = record.waiting_message
        state = {"waiting": waiting}
    status: dict[str, Any] = {
        "name": record.name,
        "image": record.image,
        "imageID": f"local://{record.image}" if record.image else "",
        "started": record.started,
        "ready": record.ready,
        "restartCount": record.restart_count,
        "state": state,
        "lastState": (
            {"terminated": _terminated_status(record.last_terminated)}
            if record.last_terminated
            else {}
        ),
    }
    if record.container_id and record.state != "waiting":
        status["containerID"] = record.container_id
    return status


# ---- recovery after an agent restart ----------------------------------------------------


def _terminated_from_status(raw: Json | None) -> Terminated | None:
    if not raw:
        return None
    finished = parse_time(raw.get("finishedAt")) or datetime.datetime.now(datetime.UTC)
    return Terminated(
        exit_code=int(raw.get("exitCode", 0)),
        reason=raw.get("reason", ""),
        finished_at=finished,
        started_at=parse_time(raw.get("startedAt")),
        signal=raw.get("signal"),
        message=raw.get("message", ""),
        container_id=raw.get("containerID", ""),
    )


LOST_PROCESS_MESSAGE = "the local node agent restarted and lost this container's process"


def recovered_record(
    container: ContainerSpec, reported: Json | None, now: datetime.datetime
) -> ContainerRecord:
    """A record rebuilt from the status a previous agent wrote. A container it reported as
    running had its process killed when this agent started, so it counts as having exited
    137 and is restarted (or not) per the restart policy like any other exit."""
    record = ContainerRecord(name=container.name, image=container.image)
    if not reported:
        return record
    record = dataclasses.replace(
        record,
        restart_count=int(reported.get("restartCount", 0)),
        last_terminated=_terminated_from_status(
            (reported.get("lastState") or {}).get("terminated")
        ),
    )
    state = reported.get("state") or {}
    if "running" in state:
        return record.exited(
            Terminated(
                exit_code=137,
                signal=9,
                reason=REASON_ERROR,
                message=LOST_PROCESS_MESSAGE,
                finished_at=now,
                started_at=parse_time(state["running"].get("startedAt")),
                container_id=reported.get("containerID", ""),
            )
        )
    if "terminated" in state:
        terminated = _terminated_from_status(state["terminated"])
        assert terminated is not None
        return record.exited(terminated)
    waiting = state.get("waiting") or {}
    return record.waiting(
        waiting.get("reason", REASON_CONTAINER_CREATING), waiting.get("message", "")
    )
