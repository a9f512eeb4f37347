"""The foundation end to end: CRDs in a real apiserver, schema rejections, the operator
writing status, and a pod run by the node agent."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import yaml

from tests.builders import a_model_version, a_training_job
from tests.harness import Kubectl, eventually, operator_in_thread
from tests.integration.objects import apply, get, status_of

pytestmark = pytest.mark.integration

PRINTS_ONE = a_training_job().command("python", "-c", "print(1)")


def test_crds_are_served_with_category_and_short_names(kubectl: Kubectl, namespace: str) -> None:
    resources = kubectl("api-resources", "--api-group=mlcycle.dev", "-o", "wide").stdout
    for kind, short_name in (
        ("TrainingJob", "tj"),
        ("ModelVersion", "mv"),
        ("InferenceService", "mlisvc"),
    ):
        line = next(line for line in resources.splitlines() if kind in line)
        assert short_name in line.split()
        assert "mlcycle" in line
    assert "No resources found" in kubectl("get", "mlcycle", "-n", namespace).stderr


def test_invalid_manifest_is_rejected_by_the_schema_with_a_readable_message(
    kubectl: Kubectl, namespace: str
) -> None:
    result = apply(kubectl, namespace, PRINTS_ONE.named("bad").workers(0).manifest(), check=False)
    assert result.returncode != 0
    assert "spec.workers" in result.stderr
    assert "greater than or equal to 1" in result.stderr
    assert kubectl("get", "trainingjob", "bad", "-n", namespace, check=False).returncode != 0


def test_spec_is_immutable_once_created(kubectl: Kubectl, namespace: str) -> None:
    fixed = PRINTS_ONE.named("fixed")
    apply(kubectl, namespace, fixed.manifest())
    result = apply(kubectl, namespace, fixed.workers(2).manifest(), check=False)
    assert result.returncode != 0
    assert "immutable" in result.stderr


def test_operator_observes_an_object_and_reports_metrics(kubectl: Kubectl, namespace: str) -> None:
    hello = a_model_version("hello").model("hello").from_uri("s3://models/hello")
    with operator_in_thread([namespace]) as operator:
        apply(kubectl, namespace, hello.manifest())

        def observed() -> dict[str, Any] | None:
            status = status_of(kubectl, namespace, "modelversion", "hello")
            assert isinstance(status, dict)
            return status if status.get("observedGeneration") == 1 else None

        status = eventually("status.observedGeneration of ModelVersion hello", observed)
        accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
        assert accepted["status"] == "True"
        assert accepted["reason"] == "SpecValid"
        assert accepted["observedGeneration"] == 1
        # The ModelVersion reconciler goes on to register it (see test_modelversion).
        assert status["phase"] in ("Pending", "Registering", "Ready")

        events = json.loads(
            kubectl(
                "get", "events", "-n", namespace,
                "--field-selector", "involvedObject.name=hello", "-o", "json",
            ).stdout
        )  # fmt: skip
        assert any(e["reason"] == "SpecValid" for e in events["items"])

        with urllib.request.urlopen(f"{operator.url}/healthz", timeout=5) as response:
            assert response.read() == b"ok"
        with urllib.request.urlopen(f"{operator.url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'mlcycle_reconcile_total{kind="ModelVersion",result="success"}' in metrics
        assert "mlcycle_reconcile_duration_seconds_bucket" in metrics


def _pod(name: str, exit_code: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "ignored-locally",
                        "command": [
                            "python",
                            "-c",
                            f"import sys; print('bye'); sys.exit({exit_code})",
                        ],
                    }
                ],
            },
        }
    )


@pytest.mark.parametrize(("exit_code", "phase"), [(0, "Succeeded"), (3, "Failed")])
def test_node_agent_runs_a_pod_to_its_exit_code(
    stack: object, kubectl: Kubectl, namespace: str, exit_code: int, phase: str
) -> None:
    name = f"exit-{exit_code}"
    kubectl("apply", "-n", namespace, "-f", "-", input_text=_pod(name, exit_code))

    def finished() -> dict[str, object] | None:
        pod = get(kubectl, namespace, "pod", name)
        status = pod["status"]
        assert isinstance(status, dict)
        return pod if status.get("phase") in ("Succeeded", "Failed") else None

    pod = eventually(f"pod {name} to finish", finished)
    status = pod["status"]
    assert isinstance(status, dict)
    assert status["phase"] == phase
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == exit_code
    assert str(status["podIP"]).startswith(stack.config().pod_ip_prefix + ".")  # type: ignore[attr-defined]
    assert pod["spec"]["nodeName"] == "mlcycle-local"  # type: ignore[index]
