"""Local processes standing in for containers: start, signal, measure and find them again.

Each container runs as the leader of its own session and process group, so the agent can
signal everything it spawned at once, and a pid file (pid plus the kernel's start time, to
tell it apart from a recycled pid) lets a restarted agent kill what a previous one left.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlcycle.dev.processes import process_start_ticks

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the child
    # Without this a SIGKILLed agent leaves its pods running with nobody to stop them. The
    # kernel sends the signal when the *thread* that forked us exits, so callers spawn from
    # a thread that outlives the process.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # the agent died before prctl took effect


def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            close_fds=True,
        )


def run_with_timeout(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float
) -> tuple[int | None, bytes]:
    """Run a probe command; (exit code or None on timeout, combined output)."""
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=functools.partial(_die_with_parent, os.getpid()),
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        process.communicate()
        return None, b""
    return process.returncode, output


def signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def rss_by_process_group() -> dict[int, int]:
    """Resident memory in bytes summed per process group, from one pass over /proc.

    There are no cgroups for local processes, so this is how memory limits are enforced:
    a group's RSS is the closest cheap stand-in for a container's memory.current.
    """
    totals: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                fields = stat_file.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state ppid pgrp ... rss is field 24 of stat (index 21 here)
        pgid = int(fields[2])
        rss_pages = int(fields[21])
        totals[pgid] = totals.get(pgid, 0) + rss_pages * _PAGE_SIZE
    return totals


class MemorySampler:
    """One /proc scan shared by every pod per interval, however many containers have limits."""

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._taken_at = 0.0
        self._sample: dict[int, int] = {}

    def rss_of_group(self, pgid: int) -> int:
        with self._lock:
            if time.monotonic() - self._taken_at >= self._interval:
                self._sample = rss_by_process_group()
                self._taken_at = time.monotonic()
            return self._sample.get(pgid, 0)


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: str


def write_pid_file(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "start_ticks": process_start_ticks(pid) or ""}))


def remove_pid_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def kill_recorded_groups(root: Path, pid_file_name: str) -> list[int]:
    """Kill every process group recorded under `root` whose leader is still the process we
    started (same kernel start time); remove the pid files. Returns the killed pids."""
    killed: list[int] = []
    for path in root.rglob(pid_file_name):
        try:
            record = json.loads(path.read_text())
            pid, ticks = int(record["pid"]), str(record["start_ticks"])
        except (OSError, ValueError, KeyError):
            remove_pid_file(path)
            continue
        leader_ticks = process_start_ticks(pid)
        # A group whose leader is gone may still hold its children; the kernel does not
        # reuse a pid as long as a group of that id exists, so such a group is ours.
        ours = leader_ticks == ticks if leader_ticks is not None else bool(ticks)
        if ours and signal_group(pid, signal.SIGKILL):
            killed.append(pid)
        remove_pid_file(path)
    return killed
