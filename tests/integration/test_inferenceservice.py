"""InferenceService rollouts on the local stack with real processes: iris versions trained
and registered in the real MLflow, model servers and the router as pods, requests sent to
the router pod's address, the operator in-process.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mlcycle.dev.iris_versions import register_iris_versions, register_misbehaving_versions
from tests.harness import REPO_ROOT, Kubectl, event_reasons, eventually, operator_in_thread
from tests.integration.objects import condition, get, in_phase, status_of
from tests.integration.serving import (
    READY_TIMEOUT,
    Iris,
    Load,
    apply_and_serve,
    infer,
    router_address,
    service_manifest,
    set_version,
    start_load,
)

pytestmark = pytest.mark.integration

# A pending registry write is retried with the shared backoff (at most 5 min between tries):
# after a long outage (MLflow restarting on a busy machine) the next try can be minutes away.
LANDING_TIMEOUT = 330


def _status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The InferenceService's status."""
    return status_of(kubectl, namespace, "inferenceservice", name)


@pytest.fixture(scope="module")
def iris(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iris:
    """Versions 1 and 2 (good) and 3 (bad: fails on long petals) of one registered model."""
    name = f"iris-isvc-{uuid.uuid4().hex[:6]}"
    tracking_uri = stack.env()["MLFLOW_TRACKING_URI"]
    return Iris(name, register_iris_versions(tracking_uri, name, tmp_path_factory.mktemp("bad")))


@pytest.fixture(scope="module")
def misbehaving(
    stack: Any, iris: Iris, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """Two more versions of the iris model: (slow: 0.3 s per request, strict: refuses the
    clients' 4-feature rows with a 400)."""
    tracking_uri = stack.env()["MLFLOW_TRACKING_URI"]
    # An operator run in this process earlier set MLflow's client timeout and retries
    # process-wide for its own calls (5 s, none); uploads get MLflow's defaults back.
    saved = {key: os.environ.pop(key, None) for key in _MLFLOW_CLIENT_SETTINGS}
    try:
        return register_misbehaving_versions(
            tracking_uri, iris.name, tmp_path_factory.mktemp("misbehaving")
        )
    finally:
        os.environ.update({key: value for key, value in saved.items() if value is not None})


_MLFLOW_CLIENT_SETTINGS = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


def _serving(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    version: str,
    what: str,
    *,
    timeout: float,
    interval: float = 0.25,
) -> dict[str, Any]:
    """Waits for `version` to be the stable version of a Ready service; returns the status."""
    return eventually(
        what,
        lambda: (
            (s := in_phase(kubectl, namespace, "inferenceservice", name, "Ready"))
            and s["stable"]["version"] == version
            and s
        ),
        timeout=timeout,
        interval=interval,
    )


def _events(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    listed = json.loads(
        kubectl(
            "get", "events", "-n", namespace,
            "--field-selector", f"involvedObject.name={name}", "-o", "json",
        ).stdout
    )  # fmt: skip
    return [event["reason"] for event in listed["items"]]


def _grpc_versions(
    url: str, model: str, row: list[float], headers: dict[str, str], calls: int
) -> list[str]:
    """The model_version each of `calls` OIP gRPC infers through the router's gRPC port got."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    host = url.removeprefix("http://").rsplit(":", 1)[0]
    client = grpcclient.InferenceServerClient(f"{host}:8081")
    try:
        tensor = grpcclient.InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([row], dtype=np.float64))
        return [
            client.infer(model, [tensor], headers=headers).get_response().model_version
            for _ in range(calls)
        ]
    finally:
        client.close()


def _follow_steps(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    load: Load,
    live_weight: Callable[[], int | None],
    settle: float,
) -> dict[str, Any]:
    """Follows the rollout of version 2 in steps of 25 and 50 % to its promotion; at each
    step, what answered the load must match the weight. Returns the final status."""
    seen: dict[int, Counter[str]] = {}
    deadline = time.time() + READY_TIMEOUT
    while time.time() < deadline:
        status = _status(kubectl, namespace, name)
        if status.get("phase") == "Ready" and status["stable"]["version"] == "2":
            break
        weight = live_weight()
        if weight in (25, 50) and weight not in seen:
            start = time.time() + settle
            time.sleep(3)
            seen[weight] = load.split(start)
        time.sleep(0.2)
    status = _status(kubectl, namespace, name)
    assert (status["phase"], status["stable"]["version"]) == ("Ready", "2"), status
    assert set(seen) == {25, 50}, seen
    for weight, split in seen.items():
        total = split["1"] + split["2"]
        assert total >= 30, (weight, split)
        # The split is exact; the window may straddle the next step.
        assert abs(100 * split["2"] / total - weight) <= 20, (weight, split)
    return status


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
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [25, 50], "interval": "4s"},
        analysis={"minRequests": 10, "successRateMin": 0.95, "failureThreshold": 2},
        registry={"promoteAlias": "champion"},
    )
    with operator_in_thread([namespace]):
        status = apply_and_serve(kubectl, namespace, name, manifest)
        assert status["stable"]["version"] == "1"
        assert status["url"] == f"http://{name}.{namespace}.svc.cluster.local"
        url = eventually("router pod ready", lambda: router_address(kubectl, namespace, name))
        load = start_load(load_threads, url, iris)
        eventually("requests answered", lambda: load.split(0)["1"] > 20)

        # Roll to version 2: each step's weight shows in what the router answers.
        set_version(kubectl, namespace, name, 2)

        def live_weight() -> int | None:
            canary = _status(kubectl, namespace, name).get("canary") or {}
            return canary.get("weight") if canary.get("stepStartedAt") else None

        # The router applies a ConfigMap within milliseconds.
        status = _follow_steps(kubectl, namespace, name, load, live_weight, settle=0.5)
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
        set_version(kubectl, namespace, name, 3)
        status = eventually(
            "version 3 rolled back",
            lambda: in_phase(kubectl, namespace, "inferenceservice", name, "RolledBack"),
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        rolled_back_at = time.time()
        # While it was live, only its 25 % share could fail (about half of that here).
        record = status["history"][-1]
        live_from, decided = (
            datetime.datetime.fromisoformat(record[key]).timestamp()
            for key in ("startTime", "endTime")
        )
        during = [answer for answer in load.since(live_from) if answer[0] <= decided]
        failed = sum(1 for _, _, code in during if code != 200)
        assert during, "no requests while version 3 was live"
        assert failed / len(during) <= 0.25, (failed, len(during))
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


def _timestamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _canary_live(kubectl: Kubectl, namespace: str, name: str, version: str) -> dict[str, Any]:
    """Waits for `version`'s first step to start (its pods ready, its weight applied)."""
    canary: dict[str, Any] = eventually(
        f"version {version} live",
        lambda: (
            (c := _status(kubectl, namespace, name).get("canary") or {}).get("version") == version
            and c.get("stepStartedAt")
            and c
        ),
        timeout=READY_TIMEOUT,
        interval=0.2,
    )
    return canary


@pytest.mark.timeout(1200)  # two MLflow outages and restarts, and the retries' backoff
def test_rollback_and_promotion_move_traffic_while_mlflow_is_down(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    """Traffic is the safety action: with MLflow down, a failing candidate goes to 0 % as
    fast as with MLflow up, and a passing one is promoted; the tags and alias are kept in
    status and land once MLflow is back, across an operator restart, once each."""
    import mlflow

    name = "outage"
    alias = f"champ{uuid.uuid4().hex[:4]}"
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [50], "interval": "4s"},
        analysis={"minRequests": 10, "successRateMin": 0.95, "failureThreshold": 1},
        registry={"promoteAlias": alias},
    )

    def reasons() -> Counter[str]:
        return event_reasons(kubectl, namespace, "InferenceService", name)

    def pending() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _status(kubectl, namespace, name).get(
            "pendingRegistryWrites", []
        )
        return found

    try:
        with operator_in_thread([namespace]):
            apply_and_serve(kubectl, namespace, name, manifest)
            url = eventually("router ready", lambda: router_address(kubectl, namespace, name))
            load = start_load(load_threads, url, iris)
            eventually("requests answered", lambda: load.split(0)["1"] > 20)

            # Version 3 fails on half of its requests; MLflow goes down once it is live.
            set_version(kubectl, namespace, name, 3)
            canary = _canary_live(kubectl, namespace, name, "3")
            stack.stop_mlflow()
            status = eventually(
                "version 3 rolled back with MLflow down",
                lambda: in_phase(kubectl, namespace, "inferenceservice", name, "RolledBack"),
                timeout=60,
                interval=0.2,
            )
            decided = _timestamp(status["history"][-1]["endTime"])
            # Same timing as with MLflow up: decided within a tick of the interval's end
            # (the step may have restarted on a held interval before MLflow went down).
            interval_end = _timestamp(canary["stepStartedAt"]) + 4
            assert decided - interval_end <= 4 + 2, (decided, canary)
            time.sleep(3)
            bad = [at for at, version, code in load.since(decided) if version == "3" or code != 200]
            assert max(bad, default=decided) - decided <= 2, bad
            after = load.since(decided + 2)
            assert len(after) > 10
            assert {version for _, version, _ in after} == {"1"}
            writes = pending()
            assert [(w["version"], w["tags"]["rollout"]) for w in writes] == [("3", "failed")]
            assert writes[0]["attempts"] >= 1
            time.sleep(5)  # retries back off; no Event per retry
            seen = reasons()
            assert seen["RegistryWritePending"] == 1, seen
            assert seen["RegistryWritten"] == 0, seen

        # Another operator takes over while MLflow is still down; MLflow comes back.
        with operator_in_thread([namespace]):
            time.sleep(2)
            assert len(pending()) == 1
            stack.start_mlflow()
            eventually("the write-back landed", lambda: not pending(), timeout=LANDING_TIMEOUT)
            tags = _version_tags(iris.name, "3")
            assert tags["rollout"] == "failed"
            assert "success rate" in tags["rollout.reason"]
            time.sleep(3)
            seen = reasons()
            assert (seen["RegistryWritePending"], seen["RegistryWritten"]) == (1, 1), seen

            # Promotion: traffic first, the alias and tag after.
            set_version(kubectl, namespace, name, 2)
            _canary_live(kubectl, namespace, name, "2")
            stack.stop_mlflow()
            status = _serving(
                kubectl,
                namespace,
                name,
                "2",
                "version 2 promoted with MLflow down",
                timeout=60,
                interval=0.2,
            )
            promoted = _timestamp(status["history"][-1]["endTime"])
            assert [(w["version"], w.get("alias")) for w in pending()] == [("2", alias)]
            eventually(
                "only version 2 answers",
                lambda: (s := load.split(promoted + 2)) and set(s) == {"2"} and s["2"] > 10,
                timeout=30,
            )
            stack.start_mlflow()
            eventually("the alias write landed", lambda: not pending(), timeout=LANDING_TIMEOUT)
            client = mlflow.MlflowClient()
            assert client.get_registered_model(iris.name).aliases[alias] == "2"
            assert _version_tags(iris.name, "2")["rollout"] == "promoted"
            time.sleep(3)
            seen = reasons()
            assert (seen["RegistryWritePending"], seen["RegistryWritten"]) == (2, 2), seen
            assert "RegistryWriteFailed" not in seen
    finally:
        stack.start_mlflow()


def test_idle_service_holds_resumes_after_restart_and_obeys_annotations(
    stack: Any, kubectl: Kubectl, namespace: str, iris: Iris
) -> None:
    name = "idle"
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [50], "interval": "2s"},
        analysis={"minRequests": 5, "successRateMin": 0.9, "failureThreshold": 1},
    )

    def annotate(key: str) -> None:
        kubectl("annotate", "inferenceservice", name, "-n", namespace, f"{key}=true")

    def annotations() -> dict[str, str]:
        found: dict[str, str] = get(kubectl, namespace, "inferenceservice", name)["metadata"].get(
            "annotations", {}
        )
        return found

    def held() -> dict[str, Any] | None:
        canary = _status(kubectl, namespace, name).get("canary") or {}
        analysis = canary.get("lastAnalysis") or {}
        return canary if analysis.get("outcome") == "Held" else None

    with operator_in_thread([namespace]):
        apply_and_serve(kubectl, namespace, name, manifest)
        set_version(kubectl, namespace, name, 2)
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
            "aborted",
            lambda: in_phase(kubectl, namespace, "inferenceservice", name, "RolledBack"),
            timeout=30,
        )
        assert status["history"][-1]["outcome"] == "Aborted"
        assert status["rejected"]["version"] == "2"
        # The annotations stay (the user owns them); each value acted once.
        assert annotations()["mlcycle.dev/abort"] == "true"

        annotate("mlcycle.dev/retry")
        eventually(
            "rollout again after retry",
            lambda: (_status(kubectl, namespace, name).get("canary") or {}).get("version") == "2",
            timeout=30,
        )
        assert annotations()["mlcycle.dev/retry"] == "true"
        paused = json.dumps({"spec": {"paused": True}})
        kubectl("patch", "inferenceservice", name, "-n", namespace, "--type=merge", "-p", paused)
        held_at = eventually(
            "paused",
            lambda: in_phase(kubectl, namespace, "inferenceservice", name, "Paused"),
            timeout=30,
        )["canary"]
        time.sleep(3)  # longer than the interval: no analysis while paused
        assert _status(kubectl, namespace, name)["canary"].get("lastAnalysis") == held_at.get(
            "lastAnalysis"
        )
        annotate("mlcycle.dev/promote")  # a person may still promote a paused rollout
        status = _serving(
            kubectl, namespace, name, "2", "promoted by annotation", timeout=READY_TIMEOUT
        )
        assert status["history"][-1]["outcome"] == "Promoted"
        assert status.get("rejected") is None
        assert _status(kubectl, namespace, name)["handledAnnotations"] == {
            key: "true" for key in ("mlcycle.dev/abort", "mlcycle.dev/retry", "mlcycle.dev/promote")
        }


def test_an_action_annotation_acts_once_per_value_and_stays(
    stack: Any, kubectl: Kubectl, namespace: str, iris: Iris
) -> None:
    """GitOps owns the annotations: the operator never deletes them, so a tool that keeps
    re-applying the same manifest (Argo CD self-heal) does not promote again; a new value
    does."""
    name = "gitops"
    document = yaml.safe_load(
        service_manifest(
            name,
            {"name": iris.name, "version": 1},
            rollout={"steps": [50], "interval": "2s"},
            analysis={"minRequests": 5, "successRateMin": 0.9, "failureThreshold": 1},
        )
    )

    def sync(version: int, promote: str | None) -> None:
        """What Argo CD applies from Git: the whole manifest, annotations included."""
        document["spec"]["model"]["version"] = version
        if promote is not None:
            document["metadata"]["annotations"] = {"mlcycle.dev/promote": promote}
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(document))

    def held(version: str) -> dict[str, Any] | None:
        canary = _status(kubectl, namespace, name).get("canary") or {}
        analysis = canary.get("lastAnalysis") or {}
        return canary if canary.get("version") == version and analysis.get("outcome") else None

    def stable_is(version: str) -> dict[str, Any] | None:
        status = in_phase(kubectl, namespace, "inferenceservice", name, "Ready")
        return status if status and status["stable"]["version"] == version else None

    def promotions() -> int:
        return event_reasons(kubectl, namespace, "InferenceService", name)["PromotionRequested"]

    with operator_in_thread([namespace]):
        apply_and_serve(kubectl, namespace, name, yaml.safe_dump(document))
        sync(2, None)
        eventually("idle canary of version 2", lambda: held("2"), timeout=READY_TIMEOUT)
        sync(2, "1")
        eventually("promoted by annotation", lambda: stable_is("2"), timeout=READY_TIMEOUT)
        annotations = get(kubectl, namespace, "inferenceservice", name)["metadata"]["annotations"]
        assert annotations["mlcycle.dev/promote"] == "1"
        assert _status(kubectl, namespace, name)["handledAnnotations"] == {
            "mlcycle.dev/promote": "1"
        }
        assert promotions() == 1

        # Git moves back to version 1 with the same annotation, re-applied on every sync.
        sync(1, "1")
        eventually("canary of version 1 analysed", lambda: held("1"), timeout=READY_TIMEOUT)
        for _ in range(3):
            sync(1, "1")
            time.sleep(1.5)
        status = _status(kubectl, namespace, name)
        assert (status["canary"]["version"], status["stable"]["version"]) == ("1", "2")
        assert promotions() == 1

        # A new value is a new request.
        sync(1, "2")
        eventually("promoted by the new value", lambda: stable_is("1"), timeout=READY_TIMEOUT)
        assert promotions() == 2
        annotations = get(kubectl, namespace, "inferenceservice", name)["metadata"]["annotations"]
        assert annotations["mlcycle.dev/promote"] == "2"


def test_alias_is_followed_and_an_unapproved_version_is_not_deployed_by_either_path(
    stack: Any, kubectl: Kubectl, namespace: str, iris: Iris, tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    alias = f"live{uuid.uuid4().hex[:4]}"
    client.set_registered_model_alias(iris.name, alias, "1")
    follower = service_manifest(
        "follower", {"name": iris.name, "alias": alias}, rollout={"strategy": "Immediate"}
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
            input_text=service_manifest("gated", {"modelVersionRef": {"name": "gated"}}),
        )  # fmt: skip
        eventually(
            "follower serves version 1",
            lambda: (
                (s := in_phase(kubectl, namespace, "inferenceservice", "follower", "Ready"))
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
            return resolved if resolved and resolved["reason"] == "NotApproved" else None

        resolved = eventually("unapproved version not deployed", not_deployed, timeout=60)
        assert resolved["status"] == "False"
        assert "approval" in resolved["message"]
        assert "gated-v2" not in kubectl("get", "deployments", "-n", namespace).stdout

        # The alias reaches the same unapproved version: no way around the approval.
        client.set_registered_model_alias(iris.name, alias, "2")

        def follower_held() -> dict[str, Any] | None:
            status = _status(kubectl, namespace, "follower")
            resolved = next(
                (c for c in status.get("conditions", []) if c["type"] == "ModelResolved"), None
            )
            held = resolved and resolved["reason"] == "NotApproved"
            return status if held and status["stable"]["version"] == "1" else None

        eventually("follower held on version 1, version 2 not approved", follower_held, timeout=60)
        kubectl(
            "patch", "modelversion", "gated", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"approval": {"required": True, "approvedBy": "admin"}}}),
        )  # fmt: skip
        eventually(
            "follower moved to version 2 with the alias once approved",
            lambda: (
                (s := in_phase(kubectl, namespace, "inferenceservice", "follower", "Ready"))
                and s["stable"]["version"] == "2"
            ),
            timeout=READY_TIMEOUT,
            interval=1,
        )


def _train_and_register(kubectl: Kubectl, namespace: str, name: str, model: str) -> str:
    """Runs the iris example as TrainingJob `name` registering to `model`; returns the name
    of its ModelVersion once that is Ready."""
    training = yaml.safe_load((REPO_ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    training["metadata"]["name"] = name
    training["spec"]["register"]["modelName"] = model
    kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(training))

    def registered() -> str | None:
        found = json.loads(
            kubectl("get", "trainingjob", name, "-n", namespace, "-o", "json").stdout
        )
        status = found.get("status") or {}
        assert status.get("phase") != "Failed", status
        return status.get("registeredModelVersion")

    version_name = eventually(f"TrainingJob {name} registered", registered, timeout=240)
    eventually(
        f"ModelVersion {version_name} Ready",
        lambda: status_of(kubectl, namespace, "modelversion", version_name).get("phase") == "Ready",
        timeout=90,
    )
    return version_name


@pytest.mark.timeout(1200)  # three model versions roll out, and two trainings run, in turn
def test_each_retraining_moves_the_alias_and_the_service_rolls_it_out(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    tmp_path: Path,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    """The newest gated registration holds `challenger`: a second training reaches the
    InferenceService following it, which promotes it to `champion` by itself; the first
    version gives the alias up for good (no flip-flop)."""
    import mlflow

    model = f"iris-retrain-{uuid.uuid4().hex[:6]}"
    rows = register_iris_versions(stack.env()["MLFLOW_TRACKING_URI"], model, tmp_path)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model, "challenger", "1")  # the first model, by hand
    name = "follower"
    manifest = service_manifest(
        name,
        {"name": model, "alias": "challenger"},
        rollout={"steps": [50], "interval": "2s"},
        analysis={"minRequests": 1, "successRateMin": 0.9},
        registry={"promoteAlias": "champion"},
    )

    def promoted(version: str) -> None:
        _serving(
            kubectl,
            namespace,
            name,
            version,
            f"version {version} promoted",
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        eventually(
            f"champion on version {version}",
            lambda: client.get_registered_model(model).aliases.get("champion") == version,
            timeout=30,
        )

    with operator_in_thread([namespace], drift_check_seconds=2):
        apply_and_serve(kubectl, namespace, name, manifest)
        url = eventually("router pod ready", lambda: router_address(kubectl, namespace, name))
        start_load(load_threads, url, Iris(model, rows))

        first = _train_and_register(kubectl, namespace, "first", model)
        first_version = status_of(kubectl, namespace, "modelversion", first)["version"]
        assert client.get_registered_model(model).aliases["challenger"] == first_version
        promoted(first_version)

        second = _train_and_register(kubectl, namespace, "second", model)
        second_version = status_of(kubectl, namespace, "modelversion", second)["version"]
        assert int(second_version) > int(first_version)
        eventually(
            "challenger moved to the second training's version",
            lambda: client.get_registered_model(model).aliases["challenger"] == second_version,
            timeout=30,
        )
        promoted(second_version)

        def superseded() -> dict[str, Any] | None:
            status = status_of(kubectl, namespace, "modelversion", first)
            synced = next(c for c in status["conditions"] if c["type"] == "AliasesSynced")
            return status if synced["reason"] == "AliasSuperseded" else None

        status = eventually("the first version superseded", superseded, timeout=30)
        synced = next(c for c in status["conditions"] if c["type"] == "AliasesSynced")
        assert synced["status"] == "True", synced
        assert second in synced["message"]
        assert status["aliases"] == []
        time.sleep(5)  # both ModelVersions resync: the alias stays with the newer one
        assert client.get_registered_model(model).aliases["challenger"] == second_version
        assert status_of(kubectl, namespace, "modelversion", second)["aliases"] == ["challenger"]
        assert "AliasConflict" not in _events(kubectl, namespace, first)
        assert "AliasConflict" not in _events(kubectl, namespace, second)


def test_shadow_promotes_on_agreement_then_an_ab_test_pins_its_header(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    name = "shadowed"
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        rollout={"strategy": "Shadow", "steps": [100], "interval": "4s"},
        analysis={"minRequests": 10, "shadowAgreementMin": 0.8, "failureThreshold": 1},
    )
    with operator_in_thread([namespace]):
        apply_and_serve(kubectl, namespace, name, manifest)
        url = eventually("router pod ready", lambda: router_address(kubectl, namespace, name))
        load = start_load(load_threads, url, iris)
        set_version(kubectl, namespace, name, 2)

        def mirroring() -> bool:
            canary = _status(kubectl, namespace, name).get("canary") or {}
            return bool(canary.get("stepStartedAt"))

        eventually("mirroring to version 2", mirroring, timeout=READY_TIMEOUT, interval=0.5)
        mirrored_from = time.time()
        status = _serving(
            kubectl,
            namespace,
            name,
            "2",
            "version 2 promoted after agreeing",
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
            infer(url, iris.name, [iris.rows[0]], headers={"x-group": "b"}).json()["model_version"]
            for _ in range(20)
        )
        assert pinned == {"1": 20}
        # gRPC clients (tritonclient's) reach the router's gRPC port with the same pinning.
        grpc_answered = _grpc_versions(url, iris.name, iris.rows[0], {"x-group": "b"}, 10)
        grpc_answered += _grpc_versions(url, iris.name, iris.rows[0], {}, 10)
        assert Counter(grpc_answered) == {"1": 10, "2": 10}, grpc_answered
        start = time.time()
        time.sleep(2)
        assert set(load.split(start)) == {"2"}
        assert _status(kubectl, namespace, name)["phase"] == "Progressing"
        kubectl("annotate", "inferenceservice", name, "-n", namespace, "mlcycle.dev/promote=1")
        _serving(kubectl, namespace, name, "1", "A/B candidate promoted by annotation", timeout=60)


class ClientSideRouting:
    """Picks each request's endpoint as the data plane of a mode without mlcycle's router
    would: a gateway controller by the HTTPRoute's split-rule weights (`route`), kube-proxy
    evenly over the ready endpoints of one Service (`service`). Neither runs on the local
    stack; what the operator wrote is read back every half second, as they would."""

    def __init__(
        self, api_client: Any, namespace: str, *, route: str | None = None, service: str = ""
    ) -> None:
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self._namespace, self._route, self._service = namespace, route, service
        self._read_at = 0.0
        self.weights: dict[str, int] = {}
        self._endpoints: dict[str, list[str]] = {}

    def route_weights(self) -> dict[str, int]:
        assert self._route is not None
        route = self._custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self._namespace, "httproutes", self._route
        )
        split = route["spec"]["rules"][-1]
        return {ref["name"]: int(ref["weight"]) for ref in split["backendRefs"]}

    def endpoints(self, service: str) -> list[str]:
        slices = self._discovery.list_namespaced_endpoint_slice(
            self._namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        return [
            f"http://{address}:{endpoint_slice.ports[0].port}"
            for endpoint_slice in slices
            for endpoint in endpoint_slice.endpoints or []
            if endpoint.conditions is not None and endpoint.conditions.ready
            for address in endpoint.addresses
        ]

    def _refresh(self) -> None:
        self.weights = self.route_weights() if self._route else {self._service: 1}
        self._endpoints = {service: self.endpoints(service) for service in self.weights}
        self._read_at = time.monotonic()

    def __call__(self, chooser: random.Random) -> str | None:
        if time.monotonic() - self._read_at > 0.5:
            self._refresh()
        live = [(s, w) for s, w in self.weights.items() if w > 0 and self._endpoints.get(s)]
        if not live:
            return None
        [service] = chooser.choices([s for s, _ in live], weights=[w for _, w in live])
        return chooser.choice(self._endpoints[service])


def test_gateway_api_mode_rolls_out_by_the_httproute_and_rolls_back(
    stack: Any,
    kubectl: Kubectl,
    kube_client: Any,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    name = "routed"
    # A cluster without the Gateway API first: a condition, not a crash loop.
    kubectl("delete", "crd", "httproutes.gateway.networking.k8s.io", "--ignore-not-found")
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        traffic={"mode": "gateway-api", "gateway": {"parentRef": {"name": "public"}}},
        rollout={"steps": [25, 50], "interval": "4s"},
        analysis={"minRequests": 10, "successRateMin": 0.95, "failureThreshold": 1},
    )
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=manifest)
        refused = eventually(
            "HTTPRoute refused: no Gateway API",
            lambda: (
                (c := condition(_status(kubectl, namespace, name), "ChildrenApplied"))
                and c["status"] == "False"
                and c
            ),
            timeout=60,
        )
        assert refused["reason"] == "TrafficKindNotServed"
        assert "HTTPRoute" in refused["message"]
        # Events follow the status write that announced the transition.
        eventually(
            "a TrafficKindNotServed Event",
            lambda: "TrafficKindNotServed" in _events(kubectl, namespace, name),
            timeout=30,
        )
        stack.install_gateway_api_crds()
        status = eventually(
            "version 1 Ready behind its route",
            lambda: in_phase(kubectl, namespace, "inferenceservice", name, "Ready"),
            timeout=READY_TIMEOUT,
            interval=1,
        )
        assert condition(status, "ChildrenApplied")["status"] == "True"
        gateway = ClientSideRouting(kube_client, namespace, route=name)
        assert gateway.route_weights() == {f"{name}-v1": 100}
        load = start_load(load_threads, gateway, iris)
        eventually("requests answered", lambda: load.split(0)["1"] > 20)

        set_version(kubectl, namespace, name, 2)
        # The load reads the route every half second.
        status = _follow_steps(
            kubectl,
            namespace,
            name,
            load,
            lambda: gateway.route_weights().get(f"{name}-v2"),
            settle=0.6,
        )
        # Judged on the candidate's own servers: no router in this mode.
        analysis = status["stable"]["lastAnalysis"]
        assert analysis["outcome"] == "Passed"
        assert analysis["requests"] >= 10
        assert gateway.route_weights() == {f"{name}-v2": 100}

        set_version(kubectl, namespace, name, 3)
        status = eventually(
            "version 3 rolled back",
            lambda: in_phase(kubectl, namespace, "inferenceservice", name, "RolledBack"),
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        assert status["stable"]["version"] == "2"
        assert "success rate" in status["rejected"]["reason"]
        assert gateway.route_weights() == {f"{name}-v2": 100}


def test_replicas_mode_splits_by_ready_pods_and_promotes(
    stack: Any,
    kubectl: Kubectl,
    kube_client: Any,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    name = "spread"
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        server={"replicas": 2},
        traffic={"mode": "replicas"},
        rollout={"steps": [50], "interval": "6s", "capacity": "neutral"},
        analysis={"minRequests": 10, "successRateMin": 0.95},
    )
    with operator_in_thread([namespace]):
        status = apply_and_serve(kubectl, namespace, name, manifest)
        assert status["url"] == f"http://{name}.{namespace}.svc.cluster.local"
        proxy = ClientSideRouting(kube_client, namespace, service=name)
        eventually(
            "both pods of version 1 behind the Service", lambda: len(proxy.endpoints(name)) == 2
        )
        load = start_load(load_threads, proxy, iris)
        eventually("requests answered", lambda: load.split(0)["1"] > 20)

        set_version(kubectl, namespace, name, 2)

        def step_running() -> dict[str, Any] | None:
            canary = _status(kubectl, namespace, name).get("canary") or {}
            return canary if canary.get("stepStartedAt") and canary.get("readyReplicas") else None

        canary = eventually("one pod each", step_running, timeout=READY_TIMEOUT, interval=0.5)
        # neutral: the budget stays 2 pods, one per version, so half the requests each.
        assert (canary["replicas"], canary["weight"]) == (1, 50)
        stable = _status(kubectl, namespace, name)["stable"]
        assert (stable["replicas"], stable["weight"]) == (1, 50)
        start = time.time() + 1
        time.sleep(4)
        split = load.split(start)
        assert split["1"] + split["2"] >= 30, split
        assert abs(100 * split["2"] / (split["1"] + split["2"]) - 50) <= 20, split

        status = _serving(
            kubectl, namespace, name, "2", "version 2 promoted", timeout=READY_TIMEOUT, interval=0.5
        )
        assert status["stable"]["lastAnalysis"]["requests"] >= 10
        promoted_at = time.time()
        eventually(
            "only version 2 answers, from both its pods",
            lambda: (
                (s := load.split(promoted_at + 1))
                and set(s) == {"2"}
                and s["2"] > 20
                and len(proxy.endpoints(name)) == 2
            ),
            timeout=60,
        )


def test_a_prometheus_check_rolls_back_and_passes_after_retry(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    """The operator runs `analysis.prometheus` through a real Prometheus server, scraping
    an exporter whose value the test sets (a stand-in for an SLO recording rule)."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from mlcycle.dev.processes import free_port

    registry = CollectorRegistry()
    error_ratio = Gauge("mlcycle_test_slo_error_ratio", "SLO error ratio", registry=registry)
    error_ratio.set(0.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus_url = stack.start_prometheus([f"127.0.0.1:{port}"])
    name = "slo"
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [50], "interval": "4s"},
        analysis={
            "minRequests": 5,
            "failureThreshold": 1,
            "prometheus": [
                {"name": "error-ratio", "query": "max(mlcycle_test_slo_error_ratio)", "max": 0.05}
            ],
        },
    )
    try:
        with operator_in_thread([namespace], prometheus_url=prometheus_url):
            apply_and_serve(kubectl, namespace, name, manifest)
            url = eventually("router ready", lambda: router_address(kubectl, namespace, name))
            start_load(load_threads, url, iris)
            set_version(kubectl, namespace, name, 2)
            status = eventually(
                "rolled back on the Prometheus check",
                lambda: in_phase(kubectl, namespace, "inferenceservice", name, "RolledBack"),
                timeout=READY_TIMEOUT,
                interval=0.5,
            )
            assert "Prometheus check error-ratio=0.5 above max 0.05" in status["rejected"]["reason"]

            error_ratio.set(0.0)
            eventually(
                "Prometheus has the new value",
                lambda: (
                    requests.get(
                        f"{prometheus_url}/api/v1/query",
                        params={"query": "max(mlcycle_test_slo_error_ratio)"},
                        timeout=5,
                    ).json()["data"]["result"][0]["value"][1]
                    == "0"
                ),
            )
            kubectl("annotate", "inferenceservice", name, "-n", namespace, "mlcycle.dev/retry=1")
            status = _serving(
                kubectl,
                namespace,
                name,
                "2",
                "promoted once the check passes",
                timeout=READY_TIMEOUT,
                interval=0.5,
            )
            assert status["stable"]["lastAnalysis"]["queries"] == {"error-ratio": 0.0}
    finally:
        stack.stop_prometheus()
        server.shutdown()
        thread.join(timeout=10)


def test_a_promotion_leaves_an_alias_a_modelversion_owns(
    stack: Any, kubectl: Kubectl, namespace: str, iris: Iris
) -> None:
    """One owner per alias: the ModelVersion declaring it keeps it; the InferenceService
    promoting to it says so instead of moving it (no flip-flop between the two)."""
    import mlflow

    alias = f"prod{uuid.uuid4().hex[:4]}"
    owner = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "owner"},
        "spec": {"modelName": iris.name, "source": {"version": 1}, "aliases": [alias]},
    }
    name = "promoter"
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(owner))
        promoter = service_manifest(
            name, {"name": iris.name, "version": 1},
            rollout={"strategy": "Immediate"}, registry={"promoteAlias": alias},
            server={"minReplicas": 1, "maxReplicas": 2},
        )  # fmt: skip
        kubectl("apply", "-n", namespace, "-f", "-", input_text=promoter)
        client = mlflow.MlflowClient()
        eventually(
            "the ModelVersion holds the alias",
            lambda: client.get_registered_model(iris.name).aliases.get(alias) == "1",
            timeout=60,
        )
        eventually(
            "version 1 Ready",
            lambda: in_phase(kubectl, namespace, "inferenceservice", name, "Ready"),
            timeout=READY_TIMEOUT,
            interval=1,
        )
        set_version(kubectl, namespace, name, 2)
        _serving(
            kubectl, namespace, name, "2", "version 2 promoted", timeout=READY_TIMEOUT, interval=0.5
        )
        eventually(
            "AliasConflict reported", lambda: "AliasConflict" in _events(kubectl, namespace, name)
        )
        time.sleep(3)  # the ModelVersion resyncs: nothing moves either way
        assert client.get_registered_model(iris.name).aliases[alias] == "1"
        assert _version_tags(iris.name, "2")["rollout"] == "promoted"
        mv_status = json.loads(
            kubectl("get", "modelversion", "owner", "-n", namespace, "-o", "json").stdout
        )["status"]
        synced = next(c for c in mv_status["conditions"] if c["type"] == "AliasesSynced")
        assert synced["status"] == "True", synced
        # The stable's HorizontalPodAutoscaler follows the promotion.
        autoscaler = json.loads(kubectl("get", "hpa", name, "-n", namespace, "-o", "json").stdout)[
            "spec"
        ]
        assert autoscaler["scaleTargetRef"]["name"] == f"{name}-v2"
        assert (autoscaler["minReplicas"], autoscaler["maxReplicas"]) == (1, 2)


def _rolled_back_on(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    name: str,
    iris: Iris,
    version: str,
    load_threads: list[tuple[Load, threading.Thread]],
    **analysis: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Serves version 1 under load, rolls to `version` with `analysis`; returns the status
    once rolled back and every analysis seen on the candidate meanwhile."""
    manifest = service_manifest(
        name,
        {"name": iris.name, "version": 1},
        rollout={"steps": [50], "interval": "4s"},
        analysis={"minRequests": 10, **analysis},
    )
    analyses: list[dict[str, Any]] = []

    def rolled_back() -> dict[str, Any] | None:
        status = _status(kubectl, namespace, name)
        last = (status.get("canary") or {}).get("lastAnalysis")
        if last and last not in analyses:
            analyses.append(last)
        return status if status.get("phase") == "RolledBack" else None

    with operator_in_thread([namespace]):
        apply_and_serve(kubectl, namespace, name, manifest)
        url = eventually("router ready", lambda: router_address(kubectl, namespace, name))
        load = start_load(load_threads, url, iris)
        eventually("requests answered", lambda: load.split(0)["1"] > 20)
        kubectl(
            "patch", "inferenceservice", name, "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"model": {"version": int(version)}}}),
        )  # fmt: skip
        status = eventually(
            f"version {version} rolled back",
            rolled_back,
            timeout=READY_TIMEOUT,
            interval=0.3,
        )
        time.sleep(2)
        after = load.since(time.time() - 1)
        assert after, "no requests after the rollback"
        assert {version for _, version, _ in after} == {"1"}
    return status, analyses


def test_a_latency_regression_rolls_back(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    misbehaving: tuple[str, str],
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    """A candidate that answers every request, 0.3 s late: the p99 check rolls it back."""
    slow, _strict = misbehaving
    status, _analyses = _rolled_back_on(
        stack, kubectl, namespace, "slow", iris, slow, load_threads,
        successRateMin=0.95, latencyP99MaxMs=150, failureThreshold=1,
    )  # fmt: skip
    assert status["rejected"]["version"] == slow
    assert "latency p99" in status["rejected"]["reason"]
    assert "above latencyP99MaxMs 150" in status["rejected"]["reason"]
    assert status["history"][-1]["outcome"] == "RolledBack"


def test_a_candidate_refusing_what_the_stable_answers_rolls_back(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    iris: Iris,
    misbehaving: tuple[str, str],
    load_threads: list[tuple[Load, threading.Thread]],
) -> None:
    """A broken input schema: every request 400 on the candidate, 200 on the stable. Only
    5xx are server errors, but 4xx beyond the stable's rate fail the success rate; both
    rates show in the analysis."""
    _slow, strict = misbehaving
    status, analyses = _rolled_back_on(
        stack, kubectl, namespace, "strict", iris, strict, load_threads,
        successRateMin=0.95, failureThreshold=2,
    )  # fmt: skip
    assert status["rejected"]["version"] == strict
    assert "success rate 0.000 below successRateMin 0.950" in status["rejected"]["reason"]
    assert "4xx rate 1.000, stable's 0.000" in status["rejected"]["reason"]
    failed = [a for a in analyses if a["outcome"] == "Failed"]
    assert failed, analyses
    assert failed[0]["clientErrorRate"] == 1.0
    assert failed[0]["stableClientErrorRate"] == 0.0
    assert failed[0]["successRate"] == 0.0
