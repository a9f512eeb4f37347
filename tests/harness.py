"""Helpers the integration tests share: waits with deadlines, kubectl, an in-process operator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from mlcycle.config import OperatorConfig
from mlcycle.dev.processes import free_port
from mlcycle.dev.toolchain import binaries
from mlcycle.runtime import run_operator

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


def eventually(
    what: str,
    probe: Callable[[], T | Literal[False] | None],
    *,
    timeout: float = 60,
    interval: float = 0.25,
) -> T:
    """Poll until `probe` returns something truthy and return that; fail saying what was
    awaited and what was seen last. A probe may answer `condition and value`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as error:  # not ready yet is an exception for many probes
            last = error
        else:
            if result:
                return result
            last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


@dataclass
class Kubectl:
    kubeconfig: Path

    def __call__(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run(
            [str(binaries().kubectl), *args],
            input=input_text,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result


def event_reasons(kubectl: Kubectl, namespace: str, kind: str, name: str) -> Counter[str]:
    """How often each Event reason was posted for one object."""
    listing = kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        f"involvedObject.kind={kind},involvedObject.name={name}", "-o", "json",
    )  # fmt: skip
    reasons: Counter[str] = Counter()
    for event in json.loads(listing.stdout)["items"]:
        reasons[event["reason"]] += event.get("count") or 1
    return reasons


def scrape(url: str) -> str:
    """A Prometheus exposition, as text."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


@dataclass
class RunningOperator:
    config: OperatorConfig
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.http_port}"


@contextmanager
def operator_in_thread(namespaces: list[str], **overrides: object) -> Iterator[RunningOperator]:
    """The real operator runtime on its own event loop, stopped and joined afterwards."""
    settings: dict[str, object] = {
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "mlflow_tracking_uri": os.environ.get("MLFLOW_TRACKING_URI"),
        **overrides,
    }
    config = OperatorConfig(namespaces=namespaces, **settings)
    stop_flag = threading.Event()
    ready_flag = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(run_operator(config, stop_flag=stop_flag, ready_flag=ready_flag))
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target, name="mlcycle-operator", daemon=True)
    thread.start()
    try:
        eventually("operator ready", lambda: ready_flag.is_set() or failure, timeout=60)
        if failure:
            raise failure[0]
        yield RunningOperator(config=config, thread=thread)
    finally:
        stop_flag.set()
        thread.join(timeout=30)
        if thread.is_alive():
            raise AssertionError("operator thread did not stop within 30s")
