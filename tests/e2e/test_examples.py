"""Every manifest in examples/ applied and driven to its final state by the script `make demo`
runs, against the session's stack, with the operator as its own process."""

from __future__ import annotations

import json

import pytest

from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.demo import DEMO_NAMESPACE, run_demo
from tests.harness import Kubectl

pytestmark = pytest.mark.e2e


def test_demo_drives_every_example(stack: LocalStack, kubectl: Kubectl) -> None:
    try:
        run_demo(stack)
        objects = json.loads(kubectl("get", "mlcycle", "-n", DEMO_NAMESPACE, "-o", "json").stdout)
        assert objects["items"], "the examples created no mlcycle objects"
        for item in objects["items"]:
            accepted = next(c for c in item["status"]["conditions"] if c["type"] == "Accepted")
            assert accepted["status"] == "True", item["metadata"]["name"]
    finally:
        stack.processes.stop("operator")
        kubectl("delete", "namespace", DEMO_NAMESPACE, "--wait=false", check=False)
