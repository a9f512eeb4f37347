"""InferenceService rollouts on the local stack with real processes: iris versions trained
and registered in the real MLflow, model servers and the router as pods, requests sent to
the router pod's address, the operator in-process.
"""

from __future__ import annotations

import datetime
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.harness import Kubectl, eventually, operator_in_thread

pytestmark = pytest.mark.integration

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
READY_TIMEOUT = 240  # two model servers load mlflow and sklearn on a busy 2-core machine

# A bad version: it answers like an iris classifier but fails on long petals (about half
# of the iris rows), as a model with a broken feature pipeline would.
BAD_MODEL_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Bad(PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["petal length (cm)"] > 4.0).any():
            raise ValueError("feature pipeline broke on long petals")
        return [0] * len(model_input)


mlflow.models.set_model(Bad())
"""


@dataclass(frozen=True)
class Iris:
    name: str
    rows: list[list[float]]


@pytest.fixture(scope="module")
def iris(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iris:
    """Versions 1 and 2 (good: logistic regressions) and 3 (bad) of one registered model."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    name = f"iris-isvc-{uuid.uuid4().hex[:6]}"
    mlflow.set_tracking_uri(stack.env()["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(name)
    features, labels = load_iris(return_X_y=True, as_frame=True)
    signature = infer_signature(features, labels)
    for regularisation in (1.0, 0.5):
        model = LogisticRegression(C=regularisation, max_iter=500).fit(features, labels)
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                model, name="model", signature=signature, registered_model_name=name
            )
    code = tmp_path_factory.mktemp("bad") / "bad_model.py"
    code.write_text(BAD_MODEL_CODE)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            signature=infer_signature(features, pd.Series([0] * len(features))),
            registered_model_name=name,
        )
    return Iris(name, features.to_numpy().tolist())


def _manifest(stack: Any, name: str, model: dict[str, Any], **spec: Any) -> str:
    document = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            # No service-account tokens on the local stack: the router reads the apiserver
            # with the stack's kubeconfig.
            "traffic": {
                "router": {"env": [{"name": "KUBECONFIG", "value": str(stack.kubeconfig)}]}
            },
            **spec,
        },
    }
    return yaml.safe_dump(document)


def _isvc(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        kubectl("get", "inferenceservice", name, "-n", namespace, "-o", "json").stdout
    )
    return found


def _status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = _isvc(kubectl, namespace, name).get("status") or {}
    return status


def _phase_is(kubectl: Kubectl, namespace: str, name: str, phase: str) -> dict[str, Any] | None:
    status = _status(kubectl, namespace, name)
    return status if status.get("phase") == phase else None


def _events(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    listed = json.loads(
        kubectl(
            "get", "events", "-n", namespace,
            "--field-selector", f"involvedObject.name={name}", "-o", "json",
        ).stdout
    )  # fmt: skip
    return [event["reason"] for event in listed["items"]]


def _router_address(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", namespace, "-o", "json",
            "-l", f"mlcycle.dev/inferenceservice={name},mlcycle.dev/component=router",
        ).stdout
    )["items"]  # fmt: skip
    for pod in pods:
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return f"http://{pod['status']['podIP']}:8080"
    return None


def _infer(
    url: str, model: str, rows: list[list[float]], headers: dict[str, str] | None = None
) -> requests.Response:
    tensor = {"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64"}
    tensor["data"] = [value for row in rows for value in row]
    return requests.post(
        f"{url}/v2/models/{model}/infer", json={"inputs": [tensor]}, headers=headers, timeout=10
    )


@dataclass
class Load:
    """A steady request stream through the router; what answered, by version, stamped with
    wall-clock time to compare with the times in status."""

    url: str
    model: str
    rows: list[list[float]]
    answers: list[tuple[float, str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        chooser = random.Random(7)
        while not self.stop.is_set():
            row = chooser.choice(self.rows)
            try:
                response = _infer(self.url, self.model, [row])
            except requests.RequestException:
                self.answers.append((time.time(), "?", 0))
                continue
            version = response.json().get("model_version", "?") if response.ok else "?"
            self.answers.append((time.time(), str(version), response.status_code))
            time.sleep(0.01)

    def since(self, start: float) -> list[tuple[float, str, int]]:
        return [answer for answer in self.answers if answer[0] >= start]

    def split(self, start: float) -> Counter[str]:
        return Counter(version for _, version, code in self.since(start) if code == 200)


@pytest.fixture
def load_threads() -> Iterator[list[tuple[Load, threading.Thread]]]:
    started: list[tuple[Load, threading.Thread]] = []
    yield started
    for load, thread in started:
        load.stop.set()
        thread.join(timeout=15)


def _start_load(threads: list[tuple[Load, threading.Thread]], url: str, iris: Iris) -> Load:
    load = Load(url, iris.name, iris.rows)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    threads.append((load, thread))
    return load


def _set_version(kubectl: Kubectl, namespace: str, name: str, version: int) -> None:
    patch = json.dumps({"spec": {"model": {"version": version}}})
    kubectl("patch", "inferenceservice", name, "-n", namespace, "--type=merge", "-p", patch)


def _version_tags(model: str, version: str) -> dict[str, str]:
    import mlflow

    return dict(mlflow.MlflowClient().get_model_version(model, version).tags)


def test_canary_follows_its_steps_promotes_and_a_bad_version_rolls_back(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    import mlflow

    name = "iris"
    manifest = _manifest(
        stack,
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [25, 50], "interval": "4s"},
        analysis={"minRequests": 10, "successRateMin": 0.95, "failureThreshold": 2},
        registry={"promoteAlias": "champion"},
    )
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)
        status = eventually(
            "version 1 Ready",
            lambda: _phase_is(kubectl, namespace, name, "Ready"),
            timeout=READY_TIMEOUT,
            interval=1,
        )
        assert status["stable"]["version"] == "1"
        assert status["url"] == f"http://{name}.{namespace}.svc.cluster.local"
        url = eventually("router pod ready", lambda: _router_address(kubectl, namespace, name))
        load = _start_load(load_threads, url, iris)
        eventually("requests answered", lambda: load.split(0)["1"] > 20)

        # Roll to version 2: each step's weight shows in what the router answers.
        _set_version(kubectl, namespace, name, 2)
        seen_weights: dict[int, Counter[str]] = {}
        deadline = time.time() + READY_TIMEOUT
        while time.time() < deadline:
            status = _status(kubectl, namespace, name)
            canary = status.get("canary") or {}
            if status.get("phase") == "Ready" and status["stable"]["version"] == "2":
                break
            weight = canary.get("weight")
            if canary.get("stepStartedAt") and weight in (25, 50) and weight not in seen_weights:
                start = time.time() + 0.5  # the router applies a ConfigMap in ms
                time.sleep(3)
                seen_weights[weight] = load.split(start)
            time.sleep(0.2)
        status = _status(kubectl, namespace, name)
        assert status["phase"] == "Ready", status
        assert status["stable"]["version"] == "2", status
        assert set(seen_weights) == {25, 50}, seen_weights
        for weight, split in seen_weights.items():
            total = split["1"] + split["2"]
            assert total >= 30, (weight, split)
            # Exact weights through the router; the window may straddle the next step.
            assert abs(100 * split["2"] / total - weight) <= 20, (weight, split)
        assert status.get("canary") is None
        assert status["history"][-1]["version"] == "2"
        assert status["history"][-1]["outcome"] == "Promoted"
        client = mlflow.MlflowClient()
        assert client.get_registered_model(iris.name).aliases["champion"] == "2"
        assert _version_tags(iris.name, "2")["rollout"] == "promoted"
        promoted_at = time.time()
        eventually(
            "only version 2 answers",
            lambda: (s := load.split(promoted_at + 1)) and set(s) == {"2"} and s["2"] > 20,
            timeout=30,
        )
        eventually(
            "version 1 scaled away",
            lambda: "iris-v1" not in kubectl("get", "deployments", "-n", namespace).stdout,
        )

        # Version 3 fails on half of its requests: rolled back, traffic back on 2.
        _set_version(kubectl, namespace, name, 3)
        status = eventually(
            "version 3 rolled back",
            lambda: _phase_is(kubectl, namespace, name, "RolledBack"),
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        rolled_back_at = time.time()
        assert status["stable"]["version"] == "2"
        assert status.get("canary") is None
        assert status["rejected"]["version"] == "3"
        assert "success rate" in status["rejected"]["reason"]
        record = status["history"][-1]
        assert (record["version"], record["outcome"]) == ("3", "RolledBack")
        rolled_back = next(c for c in status["conditions"] if c["type"] == "RolledBack")
        assert rolled_back["status"] == "True"
        tags = _version_tags(iris.name, "3")
        assert tags["rollout"] == "failed"
        assert "success rate" in tags["rollout.reason"]
        assert client.get_registered_model(iris.name).aliases["champion"] == "2"
        time.sleep(2)
        after = load.since(rolled_back_at + 0.5)
        assert len(after) > 20
        assert {version for _, version, _ in after} == {"2"}, Counter(v for _, v, _ in after)
        assert all(code == 200 for _, _, code in after)
        # The rejected version stays rejected: no new rollout while the spec is unchanged.
        time.sleep(3)
        assert _status(kubectl, namespace, name)["phase"] == "RolledBack"
        reasons = _events(kubectl, namespace, name)
        for reason in ("RolloutStarted", "StepStarted", "AnalysisPassed", "Promoted"):
            assert reason in reasons, reasons
        assert "AnalysisFailed" in reasons
        assert "RolledBack" in reasons


def test_idle_service_holds_resumes_after_restart_and_obeys_annotations(
    stack: Any, kubectl: Kubectl, namespace: str, iris: Iris
) -> None:
    name = "idle"
    manifest = _manifest(
        stack,
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [50], "interval": "2s"},
        analysis={"minRequests": 5, "successRateMin": 0.9, "failureThreshold": 1},
    )

    def annotate(key: str) -> None:
        kubectl("annotate", "inferenceservice", name, "-n", namespace, f"{key}=true")

    def annotations() -> dict[str, str]:
        found: dict[str, str] = _isvc(kubectl, namespace, name)["metadata"].get("annotations", {})
        return found

    def held() -> dict[str, Any] | None:
        canary = _status(kubectl, namespace, name).get("canary") or {}
        analysis = canary.get("lastAnalysis") or {}
        return canary if analysis.get("outcome") == "Held" else None

    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)
        eventually(
            "version 1 Ready",
            lambda: _phase_is(kubectl, namespace, name, "Ready"),
            timeout=READY_TIMEOUT,
            interval=1,
        )
        _set_version(kubectl, namespace, name, 2)
        canary = eventually("no traffic: step held", held, timeout=READY_TIMEOUT, interval=0.5)
        assert canary["failedChecks"] == 0
        assert _status(kubectl, namespace, name)["phase"] == "Progressing"
    # Another operator takes over mid-canary: same rollout, same step, no new start.
    with operator_in_thread([namespace]):
        time.sleep(5)
        resumed = _status(kubectl, namespace, name)["canary"]
        assert resumed["startedAt"] == canary["startedAt"]
        assert (resumed["version"], resumed["step"], resumed["weight"]) == ("2", 0, 50)
        assert resumed["failedChecks"] == 0
        assert resumed["lastAnalysis"]["outcome"] == "Held"
        assert _events(kubectl, namespace, name).count("RolloutStarted") == 1

        annotate("mlcycle.dev/abort")
        status = eventually(
            "aborted", lambda: _phase_is(kubectl, namespace, name, "RolledBack"), timeout=30
        )
        assert status["history"][-1]["outcome"] == "Aborted"
        assert status["rejected"]["version"] == "2"
        eventually("abort annotation removed", lambda: "mlcycle.dev/abort" not in annotations())

        annotate("mlcycle.dev/retry")
        eventually(
            "rollout again after retry",
            lambda: (_status(kubectl, namespace, name).get("canary") or {}).get("version") == "2",
            timeout=30,
        )
        eventually("retry annotation removed", lambda: "mlcycle.dev/retry" not in annotations())
        annotate("mlcycle.dev/promote")
        status = eventually(
            "promoted by annotation",
            lambda: (
                (s := _phase_is(kubectl, namespace, name, "Ready"))
                and s["stable"]["version"] == "2"
                and s
            ),
            timeout=READY_TIMEOUT,
        )
        assert status["history"][-1]["outcome"] == "Promoted"
        assert status.get("rejected") is None
        eventually("promote annotation removed", lambda: "mlcycle.dev/promote" not in annotations())


def test_alias_is_followed_and_an_unapproved_modelversion_is_not_deployed(
    stack: Any, kubectl: Kubectl, namespace: str, iris: Iris, tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    alias = f"live{uuid.uuid4().hex[:4]}"
    client.set_registered_model_alias(iris.name, alias, "1")
    follower = _manifest(
        stack, "follower", {"name": iris.name, "alias": alias}, rollout={"strategy": "Immediate"}
    )
    gated = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "gated"},
        "spec": {
            "modelName": iris.name,
            "source": {"version": 2},
            "approval": {"required": True},
        },
    }
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=follower)
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(gated))
        kubectl(
            "apply", "-n", namespace, "-f", "-",
            input_text=_manifest(stack, "gated", {"modelVersionRef": {"name": "gated"}}),
        )  # fmt: skip
        eventually(
            "follower serves version 1",
            lambda: (
                (s := _phase_is(kubectl, namespace, "follower", "Ready"))
                and s["stable"]["version"] == "1"
            ),
            timeout=READY_TIMEOUT,
            interval=1,
        )

        def not_deployed() -> dict[str, Any] | None:
            status = _status(kubectl, namespace, "gated")
            resolved = next(
                (c for c in status.get("conditions", []) if c["type"] == "ModelResolved"), None
            )
            return resolved if resolved and resolved["reason"] == "AwaitingApproval" else None

        resolved = eventually("unapproved version not deployed", not_deployed, timeout=60)
        assert resolved["status"] == "False"
        assert "approval" in resolved["message"]
        assert "gated-v2" not in kubectl("get", "deployments", "-n", namespace).stdout

        client.set_registered_model_alias(iris.name, alias, "2")
        eventually(
            "follower moved to version 2 with the alias",
            lambda: (
                (s := _phase_is(kubectl, namespace, "follower", "Ready"))
                and s["stable"]["version"] == "2"
            ),
            timeout=READY_TIMEOUT,
            interval=1,
        )


def test_shadow_promotes_on_agreement_then_an_ab_test_pins_its_header(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    name = "shadowed"
    manifest = _manifest(
        stack,
        name,
        {"name": iris.name, "version": 1},
        rollout={"strategy": "Shadow", "steps": [100], "interval": "4s"},
        analysis={"minRequests": 10, "shadowAgreementMin": 0.8, "failureThreshold": 1},
    )
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)
        eventually(
            "version 1 Ready",
            lambda: _phase_is(kubectl, namespace, name, "Ready"),
            timeout=READY_TIMEOUT,
            interval=1,
        )
        url = eventually("router pod ready", lambda: _router_address(kubectl, namespace, name))
        load = _start_load(load_threads, url, iris)
        _set_version(kubectl, namespace, name, 2)

        def mirroring() -> bool:
            canary = _status(kubectl, namespace, name).get("canary") or {}
            return bool(canary.get("stepStartedAt"))

        eventually("mirroring to version 2", mirroring, timeout=READY_TIMEOUT, interval=0.5)
        mirrored_from = time.time()
        status = eventually(
            "version 2 promoted after agreeing",
            lambda: (
                (s := _phase_is(kubectl, namespace, name, "Ready"))
                and s["stable"]["version"] == "2"
                and s
            ),
            timeout=60,
            interval=0.5,
        )
        analysis = status["stable"]["lastAnalysis"]
        assert analysis["outcome"] == "Passed"
        assert analysis["shadowAgreement"] >= 0.8
        assert analysis["requests"] >= 10
        # While mirrored (until the promotion decision), clients only got version 1's answers.
        decided = datetime.datetime.fromisoformat(status["history"][-1]["endTime"]).timestamp()
        answered = {version for at, version, _ in load.since(mirrored_from) if at < decided}
        assert answered == {"1"}, answered

        # A/B: the header pins version 1 (now the candidate); everyone else stays on 2.
        ab = {"strategy": "ABTest", "interval": "4s",
              "abTest": {"headerName": "x-group", "headerValue": "b", "weight": 0}}  # fmt: skip
        patch = json.dumps({"spec": {"model": {"version": 1}, "rollout": ab}})
        kubectl("patch", "inferenceservice", name, "-n", namespace, "--type=merge", "-p", patch)
        eventually(
            "A/B test running",
            lambda: (_status(kubectl, namespace, name).get("canary") or {}).get("stepStartedAt"),
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        time.sleep(1)
        pinned = Counter(
            _infer(url, iris.name, [iris.rows[0]], headers={"x-group": "b"}).json()["model_version"]
            for _ in range(20)
        )
        assert pinned == {"1": 20}
        start = time.time()
        time.sleep(2)
        assert set(load.split(start)) == {"2"}
        assert _status(kubectl, namespace, name)["phase"] == "Progressing"
        kubectl("annotate", "inferenceservice", name, "-n", namespace, "mlcycle.dev/promote=1")
        eventually(
            "A/B candidate promoted by annotation",
            lambda: (
                (s := _phase_is(kubectl, namespace, name, "Ready"))
                and s["stable"]["version"] == "1"
            ),
            timeout=60,
        )
