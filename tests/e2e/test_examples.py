"""Every manifest in examples/ applied and driven to its final state by the script `make demo`
runs, against the session's stack, with the operator as its own process."""

from __future__ import annotations

import json

import pytest

from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.demo import DEMO_NAMESPACE, ask_iris, run_demo
from tests.harness import Kubectl

pytestmark = pytest.mark.e2e


def test_demo_drives_every_example(stack: LocalStack, kubectl: Kubectl) -> None:
    try:
        run_demo(stack)
        trainings = json.loads(kubectl("get", "tj", "-n", DEMO_NAMESPACE, "-o", "json").stdout)
        phases = {t["metadata"]["name"]: t["status"]["phase"] for t in trainings["items"]}
        assert phases == {"hello": "Succeeded", "iris": "Succeeded"}
        iris = next(t for t in trainings["items"] if t["metadata"]["name"] == "iris")
        registered = iris["status"]["registeredModelVersion"]
        model_version = json.loads(
            kubectl("get", "modelversion", registered, "-n", DEMO_NAMESPACE, "-o", "json").stdout
        )
        assert model_version["status"]["phase"] == "Ready", model_version["status"]
        assert model_version["status"]["aliases"] == ["challenger"]
        assert model_version["status"]["modelUri"].startswith("models:/iris/")
        service = json.loads(
            kubectl("get", "inferenceservice", "iris", "-n", DEMO_NAMESPACE, "-o", "json").stdout
        )
        assert service["status"]["phase"] == "Ready", service["status"]
        assert service["status"]["stable"]["version"] == model_version["status"]["version"]
        answers = ask_iris(stack)
        assert json.loads(answers["/invocations"])["predictions"] == [2]
        v2 = json.loads(answers["/v2/models/iris/infer"])
        assert v2["model_version"] == model_version["status"]["version"]
        assert v2["outputs"][0]["data"] == [2]
    finally:
        stack.processes.stop("operator")
        kubectl("delete", "namespace", DEMO_NAMESPACE, "--wait=false", check=False)
