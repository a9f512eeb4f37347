"""Model servers as the tests run them: `mlcycle serve` and, as the reference it must match,
`mlflow models serve`, each its own process on a free port, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from mlcycle.dev.processes import free_port
from tests.harness import REPO_ROOT, eventually

LOAD_TIMEOUT = 180  # mlflow and sklearn imports alone take ~10 s on a busy 2-core machine


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=30)

    def post(self, path: str, document: Any) -> requests.Response:
        return requests.post(self.url + path, json=document, timeout=30)

    def post_raw(self, path: str, body: bytes | str, content_type: str) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        return requests.post(
            self.url + path, data=data, headers={"Content-Type": content_type}, timeout=30
        )

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        found: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append((sample.labels, sample.value))
        return found

    def metric(self, name: str, **labels: str) -> float:
        return sum(
            value
            for sample_labels, value in self.metrics().get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )


@contextmanager
def _process(
    command: list[str], log: Path, env: Mapping[str, str], url: str, ready_path: str | None
) -> Iterator[Server]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=output, stderr=output, cwd=REPO_ROOT
        )
    server = Server(url, process, log)
    try:
        if ready_path is not None:
            eventually(
                f"{command[:6]} ready (log {log})",
                lambda: process.poll() is None and server.get(ready_path).ok,
                timeout=LOAD_TIMEOUT,
                interval=0.5,
            )
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def mlcycle_serving(
    model_uri: str,
    tmp_path: Path,
    *flags: str,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
) -> Iterator[Server]:
    """`mlcycle serve` on 127.0.0.1; ready (model loaded) unless wait_ready is False."""
    port = free_port()
    command = [sys.executable, "-m", "mlcycle.cli", "serve", "--model-uri", model_uri]
    command += ["--host", "127.0.0.1", "--port", str(port), *flags]
    if "--grpc-port" not in flags and "--no-grpc" not in flags:
        # A free gRPC port too: the default (8081) would clash with the next server started.
        command += ["--grpc-port", str(free_port())]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / f"serve-{port}.log"
    with _process(command, log, env or {}, url, None) as server:
        eventually(
            f"{model_uri} server live",
            lambda: server.get("/v2/health/live").ok,
            timeout=LOAD_TIMEOUT,
        )
        if wait_ready:
            eventually(
                f"{model_uri} loaded (log {log})",
                lambda: server.get("/v2/health/ready").ok,
                timeout=LOAD_TIMEOUT,
                interval=0.5,
            )
        yield server


@contextmanager
def mlflow_serving(model_dir: Path, tmp_path: Path) -> Iterator[Server]:
    """The reference: `mlflow models serve` on the same model, in this environment."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1"]
    log = tmp_path / f"mlflow-serve-{port}.log"
    # MLflow starts `uvicorn` by name: the environment's scripts must be on PATH even when
    # the tests run without activating it (as `make test` runs them).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    with _process(command, log, {"PATH": path}, f"http://127.0.0.1:{port}", "/ping") as server:
        yield server
