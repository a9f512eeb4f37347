"""Deleting never hangs: after the operator is gone, the documented step releases its
objects and a namespace holding all three kinds deletes completely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcycle.api.v1alpha1 import FINALIZER
from mlcycle.dev.iris_versions import register_iris_versions
from tests.harness import Kubectl, eventually, operator_in_thread
from tests.integration.objects import finalizers, status_of

pytestmark = pytest.mark.integration


def test_a_namespace_of_all_three_kinds_deletes_after_the_operator_is_uninstalled(
    stack: Any, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    model = f"iris-uninstall-{uuid.uuid4().hex[:6]}"
    register_iris_versions(stack.env()["MLFLOW_TRACKING_URI"], model, tmp_path)
    training = {"apiVersion": "mlcycle.dev/v1alpha1", "kind": "TrainingJob"}
    documents = [
        {
            **training,
            "metadata": {"name": "long"},
            "spec": {"image": "t:1", "command": ["python", "-c", "import time; time.sleep(600)"]},
        },
        {
            **training,
            "metadata": {"name": "short"},
            "spec": {"image": "t:1", "command": ["python", "-c", "pass"]},
        },
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "adopted"},
            "spec": {"modelName": model, "source": {"version": 2}, "aliases": ["champion"]},
        },
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "retained"},
            "spec": {"modelName": model, "source": {"version": 1}},
        },
        {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "served"},
            "spec": {"model": {"name": model, "version": 1}},
        },
    ]
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump_all(documents))
        eventually(
            "the long training Running",
            lambda: status_of(kubectl, namespace, "tj", "long").get("phase") == "Running",
            timeout=90,
        )
        eventually(
            "both versions Ready",
            lambda: all(
                status_of(kubectl, namespace, "mv", name).get("phase") == "Ready"
                for name in ("adopted", "retained")
            ),
            timeout=90,
        )
        eventually(
            "the InferenceService's model server Deployment",
            lambda: json.loads(kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)[
                "items"
            ],
            timeout=90,
        )
        # A finished training has no MLflow run left to close: nothing holds its deletion.
        eventually(
            "the short training finished and released",
            lambda: (
                status_of(kubectl, namespace, "tj", "short").get("phase") == "Succeeded"
                and FINALIZER not in finalizers(kubectl, namespace, "tj", "short")
            ),
            timeout=90,
        )
        # A finalizer only where it guards cleanup: a RUNNING run to close, an alias to
        # give up. A retained version without aliases and a served model have none, while
        # the operator runs and ticks them.
        for kind, name in (("tj", "long"), ("mv", "adopted")):
            assert FINALIZER in finalizers(kubectl, namespace, kind, name), (kind, name)
        for kind, name in (("mv", "retained"), ("inferenceservice", "served")):
            assert FINALIZER not in finalizers(kubectl, namespace, kind, name), (kind, name)

    # The operator is gone (helm uninstall); the documented step releases its objects.
    released = subprocess.run(
        [str(Path(sys.executable).with_name("mlcycle")), "remove-finalizers", "-n", namespace],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"released TrainingJob {namespace}/long" in released, released
    assert f"released ModelVersion {namespace}/adopted" in released, released
    assert "InferenceService" not in released, released
    assert "retained" not in released, released
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")
    assert kubectl("get", "namespace", namespace, check=False).returncode != 0
