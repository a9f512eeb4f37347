"""Background processes of the local stack, tracked by pid files so `down` finds them again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_start_ticks(pid: int) -> str | None:
    """The kernel's start time of a pid: tells our process apart from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid: int
    start_ticks: str
    log: Path

    def alive(self) -> bool:
        return process_start_ticks(self.pid) == self.start_ticks


class ProcessGroup:
    """Starts daemons in their own sessions and stops each whole process group."""

    def __init__(self, state_dir: Path) -> None:
        self.pid_dir = state_dir / "pids"
        self.log_dir = state_dir / "logs"

    def _pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def find(self, name: str) -> ManagedProcess | None:
        try:
            record = json.loads(self._pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        return ManagedProcess(name, record["pid"], record["start_ticks"], Path(record["log"]))

    def running(self, name: str) -> bool:
        process = self.find(name)
        return process is not None and process.alive()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as log_file:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        ticks = process_start_ticks(popen.pid) or ""
        process = ManagedProcess(name, popen.pid, ticks, log)
        self._pid_file(name).write_text(
            json.dumps({"pid": popen.pid, "start_ticks": ticks, "log": str(log), "argv": argv})
        )
        return process

    def stop(self, name: str, *, grace_seconds: float = 10.0) -> None:
        process = self.find(name)
        if process is not None and process.alive():
            _signal_group(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_seconds
            while process.alive() and time.monotonic() < deadline:
                _reap(process.pid)
                time.sleep(0.1)
            if process.alive():
                _signal_group(process.pid, signal.SIGKILL)
                while process.alive():
                    _reap(process.pid)
                    time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(name).unlink()

    def names(self) -> list[str]:
        if not self.pid_dir.exists():
            return []
        return sorted(p.stem for p in self.pid_dir.glob("*.json"))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie that looks alive."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(
    what: str,
    probe: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.25,
    log_hint: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception as error:  # a probe failing is the normal "not yet"
            last_error = error
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    tail = ""
    if log_hint is not None and log_hint.exists():
        tail = "\n--- last lines of " + str(log_hint) + " ---\n"
        tail += "\n".join(log_hint.read_text(errors="replace").splitlines()[-30:])
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tail}")
