"""Every pod mlcycle creates passes the "restricted" Pod Security Standard: the whole story
(train, register, serve, canary) in a namespace that enforces it on the real apiserver."""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

import pytest
import yaml

from tests.harness import REPO_ROOT, Kubectl, eventually, operator_in_thread
from tests.integration.objects import in_phase
from tests.integration.serving import READY_TIMEOUT, infer, router_address

pytestmark = pytest.mark.integration


def test_train_register_serve_and_canary_in_a_restricted_namespace(
    stack: Any, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    # The apiserver's PodSecurity admission is on: a pod that is not restricted is refused.
    loose = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "loose"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]},
    }
    refused = kubectl(
        "apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(loose), check=False
    )
    assert refused.returncode != 0
    assert "restricted" in refused.stderr

    model = f"iris-restricted-{uuid.uuid4().hex[:6]}"
    example = yaml.safe_load((REPO_ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    trainings = []
    for name, regularisation in (("iris-a", "1.0"), ("iris-b", "0.5")):
        manifest = json.loads(json.dumps(example))
        manifest["metadata"]["name"] = name
        manifest["spec"]["hyperparameters"]["C"] = regularisation
        manifest["spec"]["register"]["modelName"] = model
        trainings.append(manifest)
    with operator_in_thread([namespace]):
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump_all(trainings))
        versions = []
        for name in ("iris-a", "iris-b"):
            trained = eventually(
                f"TrainingJob {name} Succeeded",
                functools.partial(in_phase, kubectl, namespace, "tj", name, "Succeeded"),
                timeout=READY_TIMEOUT,
                interval=1,
            )
            registered = eventually(
                f"the ModelVersion of {name} Ready",
                functools.partial(
                    in_phase, kubectl, namespace, "mv", trained["registeredModelVersion"], "Ready"
                ),
                timeout=90,
                interval=1,
            )
            versions.append(int(registered["version"]))
        first, second = sorted(versions)

        isvc: dict[str, Any] = {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {"name": model, "version": first},
                "rollout": {"steps": [50], "interval": "2s"},
                "analysis": {"minRequests": 3},
            },
        }
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(isvc))
        eventually(
            "the first version served",
            lambda: in_phase(kubectl, namespace, "inferenceservice", "iris", "Ready"),
            timeout=READY_TIMEOUT,
            interval=1,
        )
        isvc["spec"]["model"]["version"] = second
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(isvc))

        url = eventually("the router ready", lambda: router_address(kubectl, namespace, "iris"))

        def promoted() -> dict[str, Any] | None:
            # The canary's analysis needs requests to judge by.
            for _ in range(3):
                infer(url, model, [[5.1, 3.5, 1.4, 0.2]])
            status = in_phase(kubectl, namespace, "inferenceservice", "iris", "Ready") or {}
            stable = status.get("stable") or {}
            return status if stable.get("version") == str(second) else None

        status = eventually("the canary promoted", promoted, timeout=READY_TIMEOUT, interval=1)
        assert status["history"][-1]["outcome"] == "Promoted"

    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    components = {
        pod["metadata"]["labels"].get("app.kubernetes.io/component", "training") for pod in pods
    }
    assert {"training", "model-server", "router"} <= components, components
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if pod["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server":
            assert spec["automountServiceAccountToken"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
