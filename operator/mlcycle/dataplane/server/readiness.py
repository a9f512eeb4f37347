"""Readiness across worker processes: a worker is ready when every worker has loaded the model.

With `--workers N` the kernel hands each new connection to any of N processes, and each
loads the model itself. Were each worker ready on its own model alone, a probe answered by
the fastest worker would let traffic in while the others still answer 503. So each worker
leaves a marker (its pid) in a directory the supervisor created, once loaded, and answers
ready only when N live workers have. A worker that died and was replaced is not counted:
its pid is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

READY_DIR_ENV = "MLCYCLE_SERVE_READY_DIR"
WORKERS_ENV = "MLCYCLE_SERVE_WORKERS"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class WorkerReadiness:
    directory: Path | None
    """None: a single process, ready on its own model."""
    workers: int = 1

    @classmethod
    def from_environment(cls) -> WorkerReadiness:
        directory = os.environ.get(READY_DIR_ENV)
        if not directory:
            return cls(None)
        return cls(Path(directory), int(os.environ.get(WORKERS_ENV, "1")))

    def loaded(self) -> None:
        """This worker has loaded the model."""
        if self.directory is not None:
            (self.directory / str(os.getpid())).touch()

    def forget(self) -> None:
        """This worker is stopping."""
        if self.directory is not None:
            (self.directory / str(os.getpid())).unlink(missing_ok=True)

    def loaded_workers(self) -> int:
        if self.directory is None:
            return 1
        pids = [int(entry.name) for entry in self.directory.iterdir() if entry.name.isdigit()]
        return sum(1 for pid in pids if _alive(pid))

    def all_loaded(self) -> bool:
        return self.directory is None or self.loaded_workers() >= self.workers

    def waiting_reason(self) -> str:
        return f"{self.loaded_workers()} of {self.workers} workers have loaded the model"
