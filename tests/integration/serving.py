"""Requests to a served InferenceService on the test cluster: its manifest, its router
pod's address, OIP infers, and a steady load whose answers are recorded by version."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import yaml

from tests.builders import an_inference_service
from tests.harness import Kubectl, eventually
from tests.integration.objects import in_phase

READY_TIMEOUT = 240  # two model servers load mlflow and sklearn on a busy 2-core machine


@dataclass(frozen=True)
class Iris:
    """A registered iris model and rows of four features to send it."""

    name: str
    rows: list[list[float]]


def service_manifest(name: str, model: dict[str, Any], **spec: Any) -> str:
    """An InferenceService serving `model` (`spec.model`), as YAML to apply."""
    return yaml.safe_dump(an_inference_service(name).spec(model=model, **spec).manifest())


def apply_and_serve(kubectl: Kubectl, namespace: str, name: str, manifest: str) -> dict[str, Any]:
    """Applies the InferenceService and waits until its first version serves."""
    kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)
    status: dict[str, Any] = eventually(
        "version 1 Ready",
        lambda: in_phase(kubectl, namespace, "inferenceservice", name, "Ready"),
        timeout=READY_TIMEOUT,
        interval=1,
    )
    return status


def set_version(kubectl: Kubectl, namespace: str, name: str, version: int) -> None:
    patch = json.dumps({"spec": {"model": {"version": version}}})
    kubectl("patch", "inferenceservice", name, "-n", namespace, "--type=merge", "-p", patch)


def router_address(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    """The HTTP address of a ready router pod of the InferenceService, if there is one."""
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", namespace, "-o", "json",
            "-l", f"mlcycle.dev/inferenceservice={name},app.kubernetes.io/component=router",
        ).stdout
    )["items"]  # fmt: skip
    for pod in pods:
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return f"http://{pod['status']['podIP']}:8080"
    return None


def infer(
    url: str, model: str, rows: list[list[float]], headers: dict[str, str] | None = None
) -> requests.Response:
    """One OIP v2 infer over HTTP of `rows` (four FP64 features each)."""
    tensor = {"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64"}
    tensor["data"] = [value for row in rows for value in row]
    return requests.post(
        f"{url}/v2/models/{model}/infer", json={"inputs": [tensor]}, headers=headers, timeout=10
    )


@dataclass
class Load:
    """A steady request stream; what answered, by version, stamped with wall-clock time to
    compare with the times in status. `url` picks the address of each request: the router
    pod's, or an endpoint chosen as a gateway or kube-proxy would (neither runs here)."""

    url: Callable[[random.Random], str | None]
    model: str
    rows: list[list[float]]
    answers: list[tuple[float, str, int]] = field(default_factory=list)
    error_bodies: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        chooser = random.Random(7)
        while not self.stop.is_set():
            row = chooser.choice(self.rows)
            url = self.url(chooser)
            if url is None:
                time.sleep(0.05)
                continue
            try:
                response = infer(url, self.model, [row])
            except requests.RequestException:
                self.answers.append((time.time(), "?", 0))
                continue
            version = response.json().get("model_version", "?") if response.ok else "?"
            if not response.ok:
                self.error_bodies.append(response.text)
            self.answers.append((time.time(), str(version), response.status_code))
            time.sleep(0.01)

    def since(self, start: float) -> list[tuple[float, str, int]]:
        return [answer for answer in self.answers if answer[0] >= start]

    def split(self, start: float) -> Counter[str]:
        return Counter(version for _, version, code in self.since(start) if code == 200)


def start_load(
    threads: list[tuple[Load, threading.Thread]],
    url: str | Callable[[random.Random], str | None],
    iris: Iris,
) -> Load:
    """Starts a Load on its own thread, recorded in `threads` (the `load_threads` fixture
    stops it after the test)."""
    load = Load(url if callable(url) else lambda _chooser: url, iris.name, iris.rows)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    threads.append((load, thread))
    return load
