"""Real router and backend processes for the router's tests and benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcycle.dev.processes import free_port
from tests.harness import eventually

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKEND_SCRIPT = REPO_ROOT / "tests" / "dataplane_backend.py"
BIN = Path(sys.executable).parent


def wait_for(what: str, probe: Any, timeout: float = 30, interval: float = 0.1) -> Any:
    return eventually(what, probe, timeout=timeout, interval=interval)


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _spawn(
    name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
        )
    return Process(name, popen, log)


@dataclass
class Backend:
    name: str
    port: int
    process: Process

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_backend(
    name: str, log_dir: Path, *, prediction: str = "0", delay_ms: float = 0
) -> Backend:
    port = free_port()
    process = _spawn(
        f"backend-{name}",
        [sys.executable, str(BACKEND_SCRIPT), "--name", name, "--host", "127.0.0.1",
         "--port", str(port), "--prediction", prediction, "--delay-ms", str(delay_ms)],
        log_dir,
    )  # fmt: skip
    wait_for(
        f"backend {name} on {port}", lambda: http_get(f"http://127.0.0.1:{port}/ping")[0] == 200
    )
    return Backend(name, port, process)


@dataclass
class Router:
    port: int
    admin_port: int
    process: Process
    config_file: Path | None = None
    grpc_port: int = 0
    _reloads: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.admin_port}/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Write a new configuration file and signal the router to read it."""
        assert self.config_file is not None
        before = self.metric("mlcycle_router_config_reloads_total", result="applied")
        self.config_file.write_text(json.dumps(config))
        self.process.popen.send_signal(signal.SIGHUP)
        wait_for(
            "configuration reload",
            lambda: self.metric("mlcycle_router_config_reloads_total", result="applied") > before,
        )


def start_router(
    log_dir: Path,
    *,
    config: Mapping[str, Any] | None = None,
    extra_args: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
) -> Router:
    port, grpc_port, admin_port = free_port(), free_port(), free_port()
    argv = [
        *(str(BIN / "mlcycle"), "router", "--host", "127.0.0.1", "--port", str(port)),
        *("--grpc-port", str(grpc_port)),
        *("--admin-host", "127.0.0.1", "--admin-port", str(admin_port)),
        *("--drain-seconds", "10"),
    ]
    config_file = None
    if config is not None:
        config_file = log_dir / f"router-{port}.json"
        log_dir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config))
        argv += ["--config-file", str(config_file)]
    process = _spawn(f"router-{port}", argv + (extra_args or []), log_dir, env)
    router = Router(port, admin_port, process, config_file, grpc_port)
    if wait_ready:
        wait_for(
            f"router on {port} ready",
            lambda: process.alive() and http_get(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200,
        )
    return router


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total


@contextlib.contextmanager
def stopped_at_exit(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()
