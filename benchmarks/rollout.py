"""InferenceService rollouts on the full local stack (operator, router and model servers as
real processes, MLflow and S3):

- `promotion_3_steps_10s_s`: from the spec naming a new good version to the status saying
  it is stable, for a 3-step canary (10, 25, 50 %) with a 10 s interval under steady load.
  The floor is the candidate's start-up plus 3 intervals.
- `decision_to_stable_s`: from the rollback decision (the RolledBack record's end time) to
  the last request answered by (or failed on) the bad candidate: how long clients still
  meet it once the operator has decided. Target: within 2 s.
- `decision_after_threshold_s`: from the end of the interval in which the failing check
  reached `failureThreshold` to the decision; target: within one interval.
- `decision_to_stable_mlflow_down_s`: `decision_to_stable_s` again (the bad version retried
  with `mlcycle.dev/retry`) with the MLflow server stopped once the candidate is live:
  traffic must not wait for the registry (goal under 1 s). `registry_written_after_mlflow_back_s`:
  from MLflow answering again to the pending write-back leaving the status.

Requests go to the router pod's address, as in the integration tests; every instant is wall
clock time in this process or in the operator's status (same machine, same clock).
"""

from __future__ import annotations

import datetime
import json
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.record import record
from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.iris_versions import register_iris_versions
from mlcycle.dev.toolchain import pinned_versions

NAMESPACE = "bench-rollout"
NAME = "iris"
INTERVAL_S = 10
TIMEOUT_S = 300


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-") as state_dir:
        stack = LocalStack(Path(state_dir))
        stack.up()
        try:
            results = _measure(stack, Path(state_dir))
        finally:
            stack.down()
    path = record(
        "rollout", results, {"kubernetes_control_plane": pinned_versions()["KUBERNETES_VERSION"]}
    )
    print(path.read_text())


def _register(stack: LocalStack, workdir: Path) -> tuple[str, list[list[float]]]:
    name = f"iris-bench-{uuid.uuid4().hex[:6]}"
    return name, register_iris_versions(stack.env()["MLFLOW_TRACKING_URI"], name, workdir)


class _Load:
    def __init__(self, url: str, model: str, rows: list[list[float]]) -> None:
        self.url, self.model, self.rows = url, model, rows
        self.answers: list[tuple[float, str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        chooser = random.Random(7)
        session = requests.Session()
        while not self.stop.is_set():
            tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64"}
            tensor["data"] = chooser.choice(self.rows)
            try:
                response = session.post(
                    f"{self.url}/v2/models/{self.model}/infer",
                    json={"inputs": [tensor]},
                    timeout=10,
                )
                version = str(response.json().get("model_version")) if response.ok else "?"
                self.answers.append((time.time(), version, response.status_code))
            except requests.RequestException:
                self.answers.append((time.time(), "?", 0))
            time.sleep(0.01)


def _status(stack: LocalStack) -> dict[str, Any]:
    found = json.loads(stack.kubectl("get", "mlisvc", NAME, "-n", NAMESPACE, "-o", "json"))
    status: dict[str, Any] = found.get("status") or {}
    return status


def _wait(stack: LocalStack, what: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        status = _status(stack)
        if done(status):
            return status
        time.sleep(0.2)
    raise TimeoutError(f"{what}: last status {json.dumps(_status(stack))[:2000]}")


def _router_url(stack: LocalStack) -> str:
    pods = json.loads(
        stack.kubectl(
            "get", "pods", "-n", NAMESPACE, "-o", "json",
            "-l", f"mlcycle.dev/inferenceservice={NAME},app.kubernetes.io/component=router",
        )
    )["items"]  # fmt: skip
    return f"http://{pods[0]['status']['podIP']}:8080"


def _set_version(stack: LocalStack, version: int) -> float:
    patch = json.dumps({"spec": {"model": {"version": version}}})
    before = time.time()
    stack.kubectl("patch", "mlisvc", NAME, "-n", NAMESPACE, "--type=merge", "-p", patch)
    return before


def _timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _measure(stack: LocalStack, workdir: Path) -> dict[str, Any]:
    model, rows = _register(stack, workdir)
    stack.install_crds()
    stack.kubectl("create", "namespace", NAMESPACE)
    stack.start_operator(NAMESPACE)
    manifest = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": model, "version": 1},
            "rollout": {"steps": [10, 25, 50], "interval": f"{INTERVAL_S}s"},
            "analysis": {"minRequests": 10, "successRateMin": 0.95, "failureThreshold": 1},
        },
    }
    path = workdir / "isvc.yaml"
    path.write_text(yaml.safe_dump(manifest))
    stack.kubectl("apply", "-f", str(path))
    _wait(stack, "version 1 Ready", lambda s: s.get("phase") == "Ready")
    load = _Load(_router_url(stack), model, rows)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        time.sleep(2)
        asked = _set_version(stack, 2)
        promoted = _wait(
            stack,
            "version 2 promoted",
            lambda s: s.get("phase") == "Ready" and (s.get("stable") or {}).get("version") == "2",
        )
        promoted_at = time.time()
        record_2 = promoted["history"][-1]
        candidate_started = _timestamp(record_2["startTime"])
        time.sleep(2)
        asked_bad = _set_version(stack, 3)
        step_starts: list[str] = []

        def rolled_back(status: dict[str, Any]) -> bool:
            started = (status.get("canary") or {}).get("stepStartedAt")
            if started:
                step_starts.append(started)
            return status.get("phase") == "RolledBack"

        rolled = _wait(stack, "version 3 rolled back", rolled_back)
        record_3 = rolled["history"][-1]
        decided_at = _timestamp(record_3["endTime"])
        time.sleep(5)
        # The outage case retries version 3: its answers from then on belong to that case.
        outage_started = time.time()
        outage = _rollback_with_mlflow_down(stack, load, len(rolled["history"]))
    finally:
        load.stop.set()
        thread.join(timeout=15)
    answers = [answer for answer in load.answers if answer[0] < outage_started]
    bad_answers = [at for at, version, code in answers if version == "3" or code != 200]
    last_bad = max((at for at in bad_answers if at >= asked_bad), default=decided_at)
    # The interval whose analysis failed began at the last step start seen.
    interval_end = _timestamp(step_starts[-1]) + INTERVAL_S if step_starts else None
    after = [a for a in answers if a[0] > decided_at + 2]
    return {
        "promotion_3_steps_10s_s": round(promoted_at - asked, 2),
        "promotion_from_rollout_start_s": round(
            _timestamp(record_2["endTime"]) - candidate_started, 2
        ),
        "decision_to_stable_s": round(max(0.0, last_bad - decided_at), 3),
        "rollback_from_spec_change_s": round(decided_at - asked_bad, 2),
        "requests_after_decision_plus_2s": len(after),
        "requests_after_decision_plus_2s_not_on_stable": sum(
            1 for _, version, code in after if version != "2" or code != 200
        ),
        "decision_after_threshold_s": (
            round(decided_at - interval_end, 3) if interval_end is not None else None
        ),
        "interval_s": INTERVAL_S,
        **outage,
    }


def _rollback_with_mlflow_down(stack: LocalStack, load: _Load, records: int) -> dict[str, Any]:
    """The bad version once more, MLflow stopped while it is live: the decision to 100 %
    stable, then the write-back once MLflow is back."""
    stack.kubectl("annotate", "mlisvc", NAME, "-n", NAMESPACE, "mlcycle.dev/retry=outage")
    _wait(
        stack,
        "version 3 live again",
        lambda s: (
            (s.get("canary") or {}).get("version") == "3"
            and bool((s.get("canary") or {}).get("stepStartedAt"))
        ),
    )
    stack.stop_mlflow()
    try:
        stopped_at = time.time()
        rolled = _wait(
            stack,
            "version 3 rolled back with MLflow down",
            lambda s: s.get("phase") == "RolledBack" and len(s.get("history") or []) > records,
        )
        decided_at = _timestamp(rolled["history"][-1]["endTime"])
        pending = len(rolled.get("pendingRegistryWrites") or [])
        time.sleep(5)
    finally:
        stack.start_mlflow()
    back_at = time.time()
    _wait(stack, "write-back landed", lambda s: not s.get("pendingRegistryWrites"))
    written_at = time.time()
    bad = [
        at
        for at, version, code in load.answers
        if at >= stopped_at and (version == "3" or code != 200)
    ]
    after = [a for a in load.answers if decided_at + 1 < a[0] < decided_at + 5]
    return {
        "decision_to_stable_mlflow_down_s": round(
            max(0.0, max(bad, default=decided_at) - decided_at), 3
        ),
        "pending_writes_at_rollback_mlflow_down": pending,
        "requests_1s_to_5s_after_decision_mlflow_down_not_on_stable": sum(
            1 for _, version, code in after if version != "2" or code != 200
        ),
        "registry_written_after_mlflow_back_s": round(written_at - back_at, 2),
    }


if __name__ == "__main__":
    main()
