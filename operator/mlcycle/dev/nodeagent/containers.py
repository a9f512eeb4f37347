"""One container's live state in a process-based pod worker, and what its process's exit
makes of it: the termination it reports and when (or whether) it starts again."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mlcycle.dev.nodeagent import exits
from mlcycle.dev.nodeagent.containerstatus import (
    REASON_CRASH_LOOP_BACK_OFF,
    ContainerRecord,
    Terminated,
)
from mlcycle.dev.nodeagent.podspec import ContainerSpec, PodView
from mlcycle.dev.nodeagent.probes import ProbeLoop
from mlcycle.dev.nodeagent.timestamps import utcnow

PID_FILE = "pid"
TERMINATION_MESSAGE_FILE = "termination-log"


@dataclass
class ContainerSlot:
    """One container's live state, owned by its pod's worker thread (probe threads only set
    the three flags)."""

    spec: ContainerSpec
    is_init: bool
    record: ContainerRecord
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    started_monotonic: float = 0.0
    next_start_at: float = 0.0
    consecutive_restarts: int = 0
    # Terminated and will not run again.
    final: bool = False
    oom_killed: bool = False
    kill_at: float | None = None
    kill_message: str = ""
    probes: list[ProbeLoop] = field(default_factory=list)
    startup_passed: bool = False
    readiness_passed: bool = False
    liveness_failed: str = ""

    @property
    def succeeded(self) -> bool:
        terminated = self.record.terminated
        return (
            self.record.state == "terminated"
            and terminated is not None
            and terminated.exit_code == 0
        )

    def termination(self, returncode: int) -> Terminated:
        """How the container ended, from its process's return code and what it left."""
        exit_code, signum = exits.exit_code_and_signal(returncode)
        if self.oom_killed:
            exit_code, signum = 137, None
        message = exits.termination_message(
            self._read_message_file(),
            self._read_log_end(),
            self.spec.termination_message_policy,
            exit_code,
        )
        if self.kill_message and not message:
            message = self.kill_message
        return Terminated(
            exit_code=exit_code,
            signal=signum,
            reason=exits.terminated_reason(exit_code, self.oom_killed),
            message=message,
            started_at=self.record.started_at,
            finished_at=utcnow(),
            container_id=self.record.container_id,
        )

    def decide_after_exit(self, pod: PodView, pod_finished: bool, now: float) -> None:
        """Per the pod's restart policy: final, or waiting to start again after a back-off."""
        terminated = self.record.terminated
        assert terminated is not None
        policy = pod.restart_policy
        if pod_finished:
            self.final = True
            return
        if self.is_init:
            restart = exits.init_should_restart(policy, terminated.exit_code)
            if terminated.exit_code == 0:
                self.final = True
                return
        else:
            restart = exits.should_restart(policy, terminated.exit_code)
        if not restart:
            self.final = True
            return
        if (
            self.started_monotonic
            and now - self.started_monotonic >= exits.BACKOFF_RESET_AFTER_SECONDS
        ):
            self.consecutive_restarts = 0
        self.consecutive_restarts += 1
        delay = exits.restart_backoff_seconds(self.consecutive_restarts)
        self.next_start_at = now + delay
        self.record = self.record.restarting(
            REASON_CRASH_LOOP_BACK_OFF,
            f"back-off {delay:g}s restarting failed container={self.spec.name} "
            f"pod={pod.name}_{pod.namespace}({pod.uid})",
        )

    def _read_message_file(self) -> bytes:
        try:
            with (self.directory / TERMINATION_MESSAGE_FILE).open("rb") as message_file:
                return message_file.read(exits.TERMINATION_MESSAGE_MAX_BYTES)
        except OSError:
            return b""

    def _read_log_end(self) -> bytes:
        try:
            with (self.directory / f"{self.record.restart_count}.log").open("rb") as log_file:
                log_file.seek(0, os.SEEK_END)
                size = log_file.tell()
                log_file.seek(max(0, size - 4 * exits.LOG_FALLBACK_MAX_BYTES))
                return log_file.read()
        except OSError:
            return b""
