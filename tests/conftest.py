"""Session fixtures: one local stack (real control plane, node agent, MLflow, S3) per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, Kubectl, eventually


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A stack of our own, or a running one named by MLCYCLE_TEST_STACK_DIR (kept running)."""
    from mlcycle.dev.cluster import LocalStack

    reuse = os.environ.get("MLCYCLE_TEST_STACK_DIR")
    local_stack = LocalStack(Path(reuse) if reuse else tmp_path_factory.mktemp("stack"))
    local_stack.up()
    # The harness's own kubeconfig, for kopf and the kubernetes client in this process;
    # the user's ~/.kube/config is never read.
    previous = {k: os.environ.get(k) for k in local_stack.env()}
    os.environ.update(local_stack.env())
    try:
        yield local_stack
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not reuse:
            local_stack.down()


@pytest.fixture(scope="session")
def kubectl(stack: object) -> Kubectl:
    return Kubectl(stack.kubeconfig)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def kube_client(stack: object) -> object:
    from kubernetes import config as kube_config

    return kube_config.new_client_from_config(config_file=str(stack.kubeconfig))  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def crds_installed(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO_ROOT / "crds"))


@pytest.fixture
def namespace(kubectl: Kubectl, crds_installed: None) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    # Pods are refused until the service-account controller has made `default`.
    eventually(
        f"service account default in {name}",
        lambda: (
            kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0
        ),
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
