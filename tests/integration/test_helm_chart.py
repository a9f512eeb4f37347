"""The Helm chart, linted and installed into the real cluster with the real helm binary:
two operator replicas run as pods on the node agent, exactly one of them reconciles; the
chart's approval policy enforced by the real apiserver for impersonated users."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.iris_versions import register_iris_versions
from mlcycle.dev.toolchain import binaries, pinned_versions
from tests.harness import REPO_ROOT, Kubectl, event_reasons, eventually, operator_in_thread
from tests.integration.objects import condition, finalizers, status_of

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
        # The approval policy is cluster-wide by default; here it stays in this namespace.
        "approval": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
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
    _helm(
        stack,
        "uninstall",
        name,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "120s",
        "--ignore-not-found",
    )


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

    # The resync may write the first status before the create handler returns and
    # is counted, so the count is awaited rather than read once.
    counts = eventually("the leader to count its TrainingJob reconcile", counted, timeout=30)
    assert sorted(c > 0 for c in counts) == [False, True], f"reconciles per replica: {counts}"


APPROVERS = "model-approvers"


def _approval_policy(stack: LocalStack, namespace: str, tmp_path: Path) -> str:
    """The chart's approval policy, rendered with `helm template` and bound to one
    namespace so other tests, which approve as the admin, are not subject to it."""
    values = {
        "approval": {
            "approversGroup": APPROVERS,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        }
    }
    values_file = tmp_path / "approval.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return _helm(
        stack, "template", f"approval-{namespace}", str(CHART), "-n", namespace,
        "-f", str(values_file), "--show-only", "templates/approval-policy.yaml",
        "--kube-version", pinned_versions()["KUBERNETES_VERSION"],
    )  # fmt: skip


@pytest.fixture
def approval_policy(
    stack: LocalStack, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> Iterator[None]:
    rendered = _approval_policy(stack, namespace, tmp_path)
    kubectl("apply", "-f", "-", input_text=rendered)
    # Two users who may update ModelVersions here; only bob is in the approvers group.
    kubectl("create", "role", "edit-models", "-n", namespace,
            "--verb=get,list,patch,update", "--resource=modelversions.mlcycle.dev")  # fmt: skip
    kubectl("create", "rolebinding", "edit-models", "-n", namespace,
            "--role=edit-models", "--user=alice", "--user=bob")  # fmt: skip
    yield
    kubectl("delete", "-f", "-", "--wait=false", input_text=rendered, check=False)


def _approve_as(
    kubectl: Kubectl, namespace: str, name: str, user: str, approved_by: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    groups = [APPROVERS] if user == "bob" else []
    patch = {"spec": {"approval": {"required": True, "approvedBy": approved_by}}}
    return kubectl(
        "patch", "modelversion", name, "-n", namespace, "--type=merge",
        "-p", json.dumps(patch), f"--as={user}",
        *(f"--as-group={group}" for group in ["system:authenticated", *groups]),
        *extra, check=False,
    )  # fmt: skip


def _resolved(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The InferenceService's ModelResolved condition."""
    return condition(status_of(kubectl, namespace, "inferenceservice", name), "ModelResolved")


def test_only_an_approver_approves_and_a_registry_version_is_not_served_until_then(
    stack: LocalStack,
    kubectl: Kubectl,
    namespace: str,
    approval_policy: None,
    tmp_path: Path,
) -> None:
    import mlflow

    model = f"iris-approval-{namespace}"
    tracking_uri = stack.env()["MLFLOW_TRACKING_URI"]
    register_iris_versions(tracking_uri, model, tmp_path)
    client = mlflow.MlflowClient(tracking_uri)
    reviewed = {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "reviewed"},
        "spec": {
            "modelName": model,
            "source": {"run": {"runId": client.get_model_version(model, "1").run_id}},
            "approval": {"required": True},
        },
    }
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(reviewed))
        version = eventually(
            "the reviewed ModelVersion registered",
            lambda: (
                json.loads(kubectl("get", "mv", "reviewed", "-n", namespace, "-o", "json").stdout)
                .get("status", {})
                .get("version")
            ),
            timeout=90,
        )
        tags = client.get_model_version(model, version).tags
        assert tags.get("mlcycle.dev/approval-required") == "true"
        # The service names the registry version itself, not the ModelVersion object.
        direct = {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "direct"},
            "spec": {
                "model": {"name": model, "version": int(version)},
                "rollout": {"strategy": "Immediate"},
            },
        }
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(direct))
        resolved = eventually(
            "the directly named version to be NotApproved",
            lambda: (
                (r := _resolved(kubectl, namespace, "direct")).get("reason") == "NotApproved" and r
            ),
            timeout=60,
        )
        assert resolved["status"] == "False"
        assert event_reasons(kubectl, namespace, "InferenceService", "direct")["NotApproved"] == 1
        assert "direct" not in kubectl("get", "deployments", "-n", namespace).stdout

        # The policy reaches the apiserver's admission within a second or two.
        refused = eventually(
            "alice's approval to be refused by the policy",
            lambda: (r := _approve_as(kubectl, namespace, "reviewed", "alice", "alice",
                                      "--dry-run=server")).returncode != 0 and r,
            timeout=30,
        )  # fmt: skip
        assert f"only members of group {APPROVERS} may approve" in refused.stderr
        assert _approve_as(kubectl, namespace, "reviewed", "alice", "alice").returncode != 0
        # An approver approves as themself, not in someone else's name.
        in_another_name = _approve_as(kubectl, namespace, "reviewed", "bob", "alice")
        assert in_another_name.returncode != 0
        assert "approvedBy must be the approving user (bob)" in in_another_name.stderr
        time.sleep(3)  # a tick or two: still not served
        assert _resolved(kubectl, namespace, "direct")["reason"] == "NotApproved"

        approved = _approve_as(kubectl, namespace, "reviewed", "bob", "bob")
        assert approved.returncode == 0, approved.stderr
        eventually(
            "the approved version served",
            lambda: (
                (status := status_of(kubectl, namespace, "inferenceservice", "direct")).get("phase")
                == "Ready"
                and status["stable"]["version"] == version
            ),
            timeout=240,
            interval=1,
        )


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


def test_helm_uninstall_releases_what_the_operator_still_guarded(
    stack: LocalStack, kubectl: Kubectl, namespace: str, release: str, tmp_path: Path
) -> None:
    from mlcycle.api.v1alpha1 import FINALIZER

    model = f"iris-uninstall-{namespace}"
    register_iris_versions(stack.env()["MLFLOW_TRACKING_URI"], model, tmp_path)
    documents = [
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "running"},
            "spec": {
                "image": "example/train:1",
                "command": ["python", "-c", "import time; time.sleep(600)"],
            },
        },
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "aliased"},
            "spec": {"modelName": model, "source": {"version": 1}, "aliases": ["champion"]},
        },
    ]
    kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump_all(documents))
    # While the operator runs, its finalizer guards the RUNNING run and the alias claim.
    guarded = (("tj", "running"), ("mv", "aliased"))
    eventually(
        "the operator's finalizer on the running training and the aliased version",
        lambda: all(FINALIZER in finalizers(kubectl, namespace, k, n) for k, n in guarded),
        timeout=90,
    )

    _helm(stack, "uninstall", release, "-n", namespace, "--wait", "--timeout", "180s")

    # The post-delete Job released both, and went away itself once it had succeeded.
    for kind, name in guarded:
        assert FINALIZER not in finalizers(kubectl, namespace, kind, name), (kind, name)
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
    assert not [j for j in jobs if j["metadata"]["name"].endswith("release-finalizers")]
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0
