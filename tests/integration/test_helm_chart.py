"""The Helm chart, linted and installed into the real cluster with the real helm binary:
two operator replicas run as pods on the node agent, exactly one of them reconciles."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.toolchain import binaries
from tests.harness import REPO_ROOT, Kubectl, eventually

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "mlcycle"


def _helm(stack: LocalStack, *args: str) -> str:
    result = subprocess.run(
        [str(binaries().helm), *args],
        env={**os.environ, **stack.env(), "HELM_CACHE_HOME": str(stack.state_dir / "helm")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_chart_lints_clean(stack: LocalStack) -> None:
    output = _helm(stack, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in output


@pytest.fixture
def release(stack: LocalStack, namespace: str, tmp_path: Path) -> Iterator[str]:
    name = f"mlcycle-{namespace}"
    values = {
        "operator": {
            "namespaces": [namespace],
            "logLevel": "INFO",
            "mlflowTrackingUri": stack.env()["MLFLOW_TRACKING_URI"],
        },
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    # CRDs are already installed by the session (helm never upgrades crds/ anyway).
    _helm(
        stack,
        "install",
        name,
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values_file),
        "--skip-crds",
        "--wait",
        "--timeout",
        "180s",
    )
    yield name
    _helm(stack, "uninstall", name, "-n", namespace, "--wait", "--timeout", "120s")


def _reconcile_count(pod_ip: str) -> float:
    with urllib.request.urlopen(f"http://{pod_ip}:8080/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('mlcycle_reconcile_total{kind="TrainingJob"')
    )


def test_two_replicas_from_the_chart_reconcile_with_one_leader(
    stack: LocalStack, kubectl: Kubectl, namespace: str, release: str
) -> None:
    pods = json.loads(
        kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert len(pods) == 2
    assert all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
        for p in pods
    )
    pod_ips = [p["status"]["podIP"] for p in pods]

    manifest = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "via-helm"},
        "spec": {"image": "example/train:1", "command": ["python", "-c", "pass"]},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(manifest))
    eventually(
        "the chart's operator to write status.observedGeneration",
        lambda: (
            json.loads(kubectl("get", "tj", "via-helm", "-n", namespace, "-o", "json").stdout)
            .get("status", {})
            .get("observedGeneration")
            == 1
        ),
        timeout=90,
    )

    def counted() -> list[float] | None:
        counts = [_reconcile_count(ip) for ip in pod_ips]
        return counts if any(counts) else None

    # The resync timer may write the first status before the create handler returns and
    # is counted, so the count is awaited rather than read once.
    counts = eventually("the leader to count its TrainingJob reconcile", counted, timeout=30)
    assert sorted(c > 0 for c in counts) == [False, True], f"reconciles per replica: {counts}"


def _owned_children(
    kubectl: Kubectl, namespace: str, kind: str, owner_kind: str
) -> list[dict[str, object]] | None:
    items = json.loads(kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    owned = [
        item
        for item in items
        if any(ref["kind"] == owner_kind for ref in item["metadata"].get("ownerReferences", []))
    ]
    return owned or None


def test_the_charts_operator_creates_children_under_owner_reference_enforcement(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    release: str,
    tmp_path: Path,
) -> None:
    # The local apiserver runs OwnerReferencesPermissionEnforcement, as OpenShift does: a
    # child whose ownerReference blocks the owner's deletion is refused unless the chart's
    # role may update the owner's finalizers.
    from mlcycle.dev.iris_versions import register_iris_versions

    model = f"iris-helm-{namespace}"
    register_iris_versions(stack.env()["MLFLOW_TRACKING_URI"], model, tmp_path)
    documents = [
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "owned"},
            "spec": {"image": "example/train:1", "command": ["python", "-c", "pass"]},
        },
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "owned"},
            "spec": {"model": {"name": model, "version": 1}},
        },
    ]
    kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump_all(documents))
    eventually(
        "the TrainingJob's Job",
        lambda: _owned_children(kubectl, namespace, "jobs", "TrainingJob"),
        timeout=90,
    )
    deployments = eventually(
        "the InferenceService's model server and router Deployments",
        lambda: (
            found
            if len(
                found := _owned_children(kubectl, namespace, "deployments", "InferenceService")
                or []
            )
            >= 2
            else None
        ),
        timeout=90,
    )
    assert len(deployments) == 2
