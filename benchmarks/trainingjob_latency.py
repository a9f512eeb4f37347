"""TrainingJob latency on the full local stack: from `create` to the child Job existing
(the MLflow run is created first, so this includes the tracking calls), and from the Job's
Complete condition to the TrainingJob's status saying Succeeded (final metrics read and the
run closed in MLflow on the way).

Trainings are created one at a time at a steady pace, so the figures are the latency a
user sees, not a queue draining. Every instant is the arrival time of a watch event (or the
moment just before the create call) on one clock in this process.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from urllib3.exceptions import ProtocolError

from benchmarks.record import latency_summary, record, versions
from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.toolchain import pinned_versions

TRAININGS = int(os.environ.get("MLCYCLE_BENCH_TRAININGS", "120"))
PACE_SECONDS = 0.4
NAMESPACE = "bench-training"
TIMEOUT_SECONDS = 300


class _Timeline:
    """First arrival of each milestone per training, shared by the watch threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}
        self.job_seen: dict[str, float] = {}
        self.job_complete: dict[str, float] = {}
        self.status_succeeded: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.done = threading.Event()

    def mark(self, milestone: dict[str, float], name: str, at: float) -> None:
        with self.lock:
            milestone.setdefault(name, at)
            # The warm-up training finishes too, hence one more than those measured.
            if len(self.status_succeeded) + len(self.failed) > TRAININGS:
                self.done.set()


def _follow(
    list_call: Callable[..., Any], args: tuple[Any, ...], on_object: Callable[[Any, float], None]
) -> threading.Thread:
    def run() -> None:
        stream = watch.Watch()
        # The stream breaks when the stack stops at the end; nothing is lost by then.
        with contextlib.suppress(ProtocolError):
            for event in stream.stream(list_call, *args, timeout_seconds=TIMEOUT_SECONDS):
                on_object(event["object"], time.perf_counter())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-") as state_dir:
        stack = LocalStack(Path(state_dir))
        stack.up()
        try:
            results = _measure(stack)
        finally:
            stack.down()
    path = record(
        "trainingjob-latency",
        results,
        {
            "kubernetes_control_plane": pinned_versions()["KUBERNETES_VERSION"],
            **versions("mlflow"),
        },
    )
    print(path.read_text())


def _measure(stack: LocalStack) -> dict[str, Any]:
    stack.install_crds()
    stack.kubectl("create", "namespace", NAMESPACE)
    stack.start_operator(NAMESPACE)
    api = config.new_client_from_config(config_file=stack.env()["KUBECONFIG"])
    custom = client.CustomObjectsApi(api)
    batch = client.BatchV1Api(api)
    timeline = _Timeline()

    def on_job(job: Any, at: float) -> None:
        owner = (job.metadata.labels or {}).get("mlcycle.dev/trainingjob")
        if owner is None:
            return
        timeline.mark(timeline.job_seen, owner, at)
        for condition in (job.status and job.status.conditions) or []:
            if condition.type == "Complete" and condition.status == "True":
                timeline.mark(timeline.job_complete, owner, at)

    def on_training(training: dict[str, Any], at: float) -> None:
        name = training["metadata"]["name"]
        status = training.get("status") or {}
        if status.get("phase") == "Succeeded":
            timeline.mark(timeline.status_succeeded, name, at)
        elif status.get("phase") == "Failed":
            with timeline.lock:
                timeline.failed[name] = str(status.get("failureMessage"))

    _follow(batch.list_namespaced_job, (NAMESPACE,), on_job)
    _follow(
        custom.list_namespaced_custom_object,
        ("mlcycle.dev", "v1alpha1", NAMESPACE, "trainingjobs"),
        on_training,
    )
    time.sleep(1)  # both watches established before the first create

    # A warm-up training, not counted: the first MLflow experiment creation is one-off.
    _create(custom, "warmup")
    for index in range(TRAININGS):
        name = f"train-{index:04d}"
        time.sleep(PACE_SECONDS)
        timeline.created[name] = time.perf_counter()
        _create(custom, name)
    if not timeline.done.wait(timeout=TIMEOUT_SECONDS):
        raise TimeoutError(
            f"only {len(timeline.status_succeeded)} of {TRAININGS} trainings succeeded"
        )
    if timeline.failed:
        raise RuntimeError(f"trainings failed: {dict(list(timeline.failed.items())[:3])}")
    names = list(timeline.created)
    apply_to_job = latency_summary([timeline.job_seen[n] - timeline.created[n] for n in names])
    done_to_status = latency_summary(
        [timeline.status_succeeded[n] - timeline.job_complete[n] for n in names]
    )
    return {
        "apply_to_job_ms": {"p50": apply_to_job["p50_ms"], "p99": apply_to_job["p99_ms"]},
        "job_done_to_status_ms": {
            "p50": done_to_status["p50_ms"],
            "p99": done_to_status["p99_ms"],
        },
        "n": len(names),
        "detail": {
            "apply_to_job": apply_to_job,
            "job_done_to_status": done_to_status,
            "pace_seconds": PACE_SECONDS,
            "training_command": "python -c pass (one pod per training, run by the node agent)",
        },
    }


def _create(custom: client.CustomObjectsApi, name: str) -> None:
    body = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {"image": "bench", "command": ["python", "-c", "pass"], "backoffLimit": 0},
    }
    custom.create_namespaced_custom_object(
        "mlcycle.dev", "v1alpha1", NAMESPACE, "trainingjobs", body
    )


if __name__ == "__main__":
    main()
