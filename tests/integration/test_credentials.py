"""No credential leaves its Secret: the whole story (train, register, serve, canary, roll
back) with the operator and the pods given distinctive MLflow and S3 credentials, then every
place a person or a scraper can read is searched for them: the stack's logs and the pods'
logs, the operator's log and output, every Event, every object and its status in the
namespace, the /metrics pages of the operator, the router and the model servers, and the
error bodies the clients received.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcycle.dev.iris_versions import register_iris_versions
from mlcycle.plan.serving_names import (
    COMPONENT_LABEL,
    MODEL_SERVER_COMPONENT,
    ROUTER_COMPONENT,
    SERVER_PORT,
)
from mlcycle.plan.traffic.router import ROUTER_ADMIN_PORT
from tests.harness import REPO_ROOT, Kubectl, eventually, operator_in_thread, scrape
from tests.integration.objects import find, in_phase, wait_for_phase
from tests.integration.serving import (
    READY_TIMEOUT,
    Iris,
    Load,
    apply_and_serve,
    router_address,
    service_manifest,
    set_version,
    start_load,
)

pytestmark = pytest.mark.integration

MLFLOW_SECRET = "mlflow-credentials"
S3_SECRET = "s3-credentials"
# Everything the cluster shows about a namespace's workloads, Secrets aside.
SHOWN_KINDS = (
    "trainingjobs,modelversions,inferenceservices,jobs,deployments,replicasets,pods,"
    "services,configmaps,endpointslices,horizontalpodautoscalers"
)


def _create_secret(kubectl: Kubectl, namespace: str, name: str, data: dict[str, str]) -> None:
    literals = [f"--from-literal={key}={value}" for key, value in data.items()]
    kubectl("create", "secret", "generic", name, "-n", namespace, *literals)


def _with_userinfo(url: str, username: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{username}:{password}@{parts.netloc}").geturl()


def _pod_addresses(kubectl: Kubectl, namespace: str, component: str, port: int) -> list[str]:
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", namespace, "-o", "json", "-l", f"{COMPONENT_LABEL}={component}"
        ).stdout
    )["items"]
    return [
        f"http://{pod['status']['podIP']}:{port}"
        for pod in pods
        if pod.get("status", {}).get("podIP")
        and pod["status"].get("phase") == "Running"
        # The rolled-back version's servers are going away: nothing to scrape there.
        and not pod["metadata"].get("deletionTimestamp")
    ]


def _scrape_live(kubectl: Kubectl, namespace: str, component: str, port: int) -> dict[str, str]:
    """`/metrics` of every serving pod of `component`; a pod deleted between the listing and
    the scrape (the rolled-back version's) is left out, any other failure fails the test."""
    pages = {}
    for url in _pod_addresses(kubectl, namespace, component, port):
        try:
            pages[f"{component} {url}/metrics"] = scrape(url)
        except OSError:
            if url in _pod_addresses(kubectl, namespace, component, port):
                raise
    return pages


def _hits(texts: dict[str, str], planted: dict[str, str]) -> list[str]:
    return [
        f"{what} ({secret}) in {where}"
        for where, text in texts.items()
        for what, secret in planted.items()
        if secret in text
    ]


def _log_files(root: Path) -> dict[str, str]:
    """Every log and termination message under the stack's state directory: the control
    plane's, MLflow's, MinIO's, the node agent's and each container's output."""
    found: dict[str, str] = {}
    for path in root.rglob("*"):
        if path.is_file() and (path.suffix == ".log" or "termination" in path.name):
            found[str(path)] = path.read_bytes().decode(errors="replace")
    return found


def test_no_planted_credential_shows_anywhere_after_train_serve_canary_rollback(
    stack: Any,
    kubectl: Kubectl,
    namespace: str,
    load_threads: list[tuple[Load, threading.Thread]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG", logger="mlcycle")
    caplog.set_level("DEBUG", logger="kopf")
    tag = uuid.uuid4().hex
    planted = {
        "operator's MLflow password": f"pw-{tag}",
        "pods' MLflow password": f"podpw-{tag}",
        "pods' MLflow token": f"token-{tag}",
        "S3 access key": f"AKIA{tag[:16].upper()}",
        "S3 secret key": f"s3secret-{tag}",
    }
    # The local MLflow runs without authentication and ignores the Authorization header:
    # the credentials travel as they would to a protected server, and nothing is refused.
    _create_secret(
        kubectl,
        namespace,
        MLFLOW_SECRET,
        {
            "MLFLOW_TRACKING_USERNAME": "trainer",
            "MLFLOW_TRACKING_PASSWORD": planted["pods' MLflow password"],
            "MLFLOW_TRACKING_TOKEN": planted["pods' MLflow token"],
        },
    )
    _create_secret(
        kubectl,
        namespace,
        S3_SECRET,
        {
            "AWS_ACCESS_KEY_ID": planted["S3 access key"],
            "AWS_SECRET_ACCESS_KEY": planted["S3 secret key"],
        },
    )
    tracking_uri = stack.env()["MLFLOW_TRACKING_URI"]
    model = f"iris-creds-{tag[:6]}"
    training = yaml.safe_load((REPO_ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    training["spec"]["register"]["modelName"] = model
    # Artifacts go through MLflow's proxy here: the keys reach the pods and are not used.
    training["spec"]["s3"] = {"secretRef": {"name": S3_SECRET}}
    service = service_manifest(
        "iris",
        {"name": model, "version": 1},
        rollout={"steps": [50], "interval": "3s"},
        analysis={"minRequests": 5, "successRateMin": 0.95, "failureThreshold": 1},
    )

    with operator_in_thread(
        [namespace],
        mlflow_tracking_uri=_with_userinfo(
            tracking_uri, "mlcycle", planted["operator's MLflow password"]
        ),
        mlflow_credentials_secret=MLFLOW_SECRET,
    ) as operator:
        # Train and register version 1.
        kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(training))
        status = wait_for_phase(
            kubectl, namespace, "trainingjob", "iris", "Succeeded", "Failed", timeout=240
        )
        assert status["phase"] == "Succeeded", status

        def registered() -> bool:
            found = find(kubectl, namespace, "modelversion", status["registeredModelVersion"])
            return ((found or {}).get("status") or {}).get("phase") == "Ready"

        eventually("the trained version registered", registered, timeout=120)
        # Versions 2 and 3 (good) and 4 (bad: fails on long petals) of the same model.
        rows = register_iris_versions(tracking_uri, model, tmp_path)

        # Serve version 1, roll to the bad version 4 as a canary: it is rolled back.
        apply_and_serve(kubectl, namespace, "iris", service)
        router = eventually("router pod ready", lambda: router_address(kubectl, namespace, "iris"))
        load = start_load(load_threads, router, Iris(model, rows))
        eventually("requests answered", lambda: load.split(0)["1"] > 10)
        set_version(kubectl, namespace, "iris", 4)
        eventually(
            "model server of version 4 serving",
            lambda: load.split(0)["4"] > 0,
            timeout=READY_TIMEOUT,
        )
        rolled_back = eventually(
            "version 4 rolled back",
            lambda: in_phase(kubectl, namespace, "inferenceservice", "iris", "RolledBack"),
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        assert rolled_back["rejected"]["version"] == "4"
        assert load.error_bodies, "the bad version answered no errors"

        pages = {
            "operator /metrics": scrape(operator.url),
            **_scrape_live(kubectl, namespace, ROUTER_COMPONENT, ROUTER_ADMIN_PORT),
            **_scrape_live(kubectl, namespace, MODEL_SERVER_COMPONENT, SERVER_PORT),
        }
        assert len(pages) >= 3, list(pages)

    shown = {
        "objects and status": kubectl("get", SHOWN_KINDS, "-n", namespace, "-o", "json").stdout,
        "events": kubectl("get", "events", "-A", "-o", "json").stdout,
        "error bodies": "\n".join(load.error_bodies),
        "operator log": caplog.text,
        "operator output": "".join(capfd.readouterr()),
        **pages,
        **_log_files(stack.state_dir),
    }
    hits = _hits(shown, planted)
    assert not hits, hits
    # Training and serving pods read the credentials from the Secret, by reference.
    job = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"][0]
    server = json.loads(
        kubectl(
            "get", "deployments", "-n", namespace, "-o", "json",
            "-l", f"{COMPONENT_LABEL}={MODEL_SERVER_COMPONENT}",
        ).stdout
    )["items"][0]  # fmt: skip
    for workload in (job, server):
        env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"] == tracking_uri
        for name in (
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
        ):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == MLFLOW_SECRET, env
