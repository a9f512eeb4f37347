"""`mlcycle serve` against the real MLflow server and S3 store of the local stack.

Models are trained and registered here (artifacts land in MinIO through MLflow's proxied
artifact access); the server runs as its own process, as in a pod, and is spoken to over
HTTP in both protocols.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.harness import eventually
from tests.model_servers import LOAD_TIMEOUT, Server, mlcycle_serving

pytestmark = pytest.mark.integration

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]

# A pyfunc model logged from code: doubles x, refuses negative x, and takes its time on 999
# (the request a SIGTERM must let finish).
FLAKY_MODEL_CODE = """
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Flaky(PythonModel):
    def predict(self, context, model_input, params=None):
        x = model_input["x"]
        if (x < 0).any():
            raise ValueError("negative x is not allowed")
        if (x == 999).any():
            time.sleep(3)
        return x * 2


mlflow.models.set_model(Flaky())
"""


@dataclass(frozen=True)
class Registered:
    iris: str
    flaky: str
    iris_model: Any
    iris_rows: pd.DataFrame


@pytest.fixture(scope="module")
def registered(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    suffix = uuid.uuid4().hex[:6]
    mlflow.set_tracking_uri(stack.env()["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(f"model-server-{suffix}")
    features, labels = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    iris, flaky = f"iris-{suffix}", f"flaky-{suffix}"
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features)),
            registered_model_name=iris,
        )
    assert str(info.registered_model_version) == "1"
    code = tmp_path_factory.mktemp("flaky") / "flaky_model.py"
    code.write_text(FLAKY_MODEL_CODE)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            signature=infer_signature(pd.DataFrame({"x": [1.0]}), pd.Series([2.0])),
            registered_model_name=flaky,
        )
    mlflow.MlflowClient().set_registered_model_alias(iris, "champion", "1")
    return Registered(iris, flaky, model, features)


@contextmanager
def serving(
    stack: Any, tmp_path: Path, model_uri: str, *flags: str, wait_ready: bool = True
) -> Iterator[Server]:
    with mlcycle_serving(
        model_uri, tmp_path, *flags, env=stack.env(), wait_ready=wait_ready
    ) as server:
        yield server


def split(rows: pd.DataFrame) -> dict[str, Any]:
    return {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}


def test_registered_version_speaks_both_protocols(
    stack: Any, registered: Registered, tmp_path: Path
) -> None:
    name = registered.iris
    rows = registered.iris_rows.iloc[[0, 60, 120]]
    expected = registered.iris_model.predict(rows).tolist()
    with serving(stack, tmp_path, f"models:/{name}/1") as server:
        for probe in ("/ping", "/health", "/v2/health/live", "/v2/health/ready"):
            assert server.get(probe).status_code == 200, probe
        assert server.get(f"/v2/models/{name}/versions/1/ready").json() == {
            "name": name,
            "ready": True,
        }
        metadata = server.get(f"/v2/models/{name}").json()
        assert metadata["versions"] == ["1"]
        assert metadata["platform"] == "mlflow_sklearn"
        assert [i["name"] for i in metadata["inputs"]] == IRIS_COLUMNS
        assert server.get(f"/v2/models/{name}/versions/2").status_code == 404
        assert server.get("/v2/models/other/ready").status_code == 404

        records = rows.to_dict(orient="records")
        for document in (
            {"dataframe_split": split(rows)},
            {"dataframe_split": split(rows[list(reversed(IRIS_COLUMNS))])},
            {"dataframe_records": records},
            {"instances": records},
            {"inputs": {column: rows[column].tolist() for column in IRIS_COLUMNS}},
        ):
            response = server.post("/invocations", document)
            assert response.status_code == 200, (document, response.text)
            assert response.json() == {"predictions": expected}

        tensor = {
            "name": "input-0",
            "shape": [3, 4],
            "datatype": "FP64",
            "data": rows.to_numpy().ravel().tolist(),
        }
        for path in (f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/1/infer"):
            response = server.post(path, {"id": "req-1", "inputs": [tensor]})
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["model_name"], body["model_version"], body["id"]) == (name, "1", "req-1")
            assert body["outputs"][0]["data"] == expected
            assert body["outputs"][0]["shape"] == [3]

        # Rows without column names, for a signature that names its columns: MLflow's 400.
        positional = server.post("/invocations", {"instances": rows.to_numpy().tolist()})
        assert positional.status_code == 400
        missing = server.post("/invocations", {"dataframe_split": split(rows[IRIS_COLUMNS[:3]])})
        assert missing.status_code == 400
        assert "missing column 'petal width (cm)'" in missing.json()["message"]
        wrong_type = server.post(
            "/invocations", {"dataframe_records": [{**records[0], "sepal width (cm)": "wide"}]}
        )
        assert wrong_type.status_code == 400
        assert "sepal width (cm): expected double" in wrong_type.json()["message"]
        bad_shape = server.post(
            f"/v2/models/{name}/infer", {"inputs": [{**tensor, "shape": [2, 4]}]}
        )
        assert bad_shape.status_code == 400
        assert "inputs[0](input-0).shape" in bad_shape.json()["error"]
        not_json = requests.post(server.url + "/invocations", data=b"{", timeout=10)
        assert not_json.status_code == 400
        assert server.get("/invocations").status_code == 405

        labels = {"model": name, "version": "1"}
        assert server.metric("mlcycle_model_requests_total", **labels, code="200") == 7
        assert server.metric("mlcycle_model_requests_total", **labels, code="400") == 5
        assert server.metric("mlcycle_model_requests_total", **labels, protocol="v2") == 3
        assert server.metric("mlcycle_model_predictions_total", **labels) == 7 * 3
        assert server.metric("mlcycle_model_predictions_total", **labels, **{"class": "2"}) == 7
        assert server.metric("mlcycle_model_load_seconds", **labels) > 0
        assert server.metric("mlcycle_model_requests_total", **labels, code="405") == 1
        assert server.metric("mlcycle_model_request_duration_seconds_count", **labels) == 13


def test_concurrent_callers_are_batched_and_each_gets_its_own_rows(
    stack: Any, registered: Registered, tmp_path: Path
) -> None:
    features = registered.iris_rows
    callers = [features.iloc[i : i + 1 + i % 3] for i in range(0, 144, 3)]
    with serving(
        stack, tmp_path, f"models:/{registered.iris}/1", "--max-batch-wait-ms", "20"
    ) as server:

        def call(rows: pd.DataFrame) -> list[int]:
            response = server.post("/invocations", {"dataframe_split": split(rows)})
            assert response.status_code == 200, response.text
            predictions: list[int] = response.json()["predictions"]
            return predictions

        with ThreadPoolExecutor(max_workers=len(callers)) as pool:
            answers = list(pool.map(call, callers))
        for rows, answer in zip(callers, answers, strict=True):
            assert answer == registered.iris_model.predict(rows).tolist()
        predict_calls = server.metric("mlcycle_model_batch_size_count")
        rows_predicted = server.metric("mlcycle_model_batch_size_sum")
        assert rows_predicted == sum(len(rows) for rows in callers)
        assert predict_calls < len(callers), "no two requests shared a predict call"


def test_alias_is_resolved_to_its_version(
    stack: Any, registered: Registered, tmp_path: Path
) -> None:
    with serving(stack, tmp_path, f"models:/{registered.iris}@champion") as server:
        assert server.get(f"/v2/models/{registered.iris}/versions/1/ready").ok
        row = registered.iris_rows.iloc[[0]]
        assert server.post("/invocations", {"dataframe_split": split(row)}).ok
        assert (
            server.metric("mlcycle_model_requests_total", model=registered.iris, version="1") == 1
        )
        # Every series carries the resolved version: none is left with version="".
        labelled = {
            labels.get("version")
            for samples in server.metrics().values()
            for labels, _ in samples
            if labels.get("model") == registered.iris
        }
        assert labelled == {"1"}


def test_a_model_that_cannot_load_is_live_but_not_ready_with_the_reason(
    stack: Any, tmp_path: Path
) -> None:
    uri = f"models:/absent-{uuid.uuid4().hex[:6]}/1"
    with serving(stack, tmp_path, uri, wait_ready=False) as server:
        # A 503 response is falsy (requests' ok), so the probe hands back the body.
        reason = eventually(
            "a load failure reason",
            lambda: (
                "could not be loaded" in (r := server.get("/v2/health/ready")).text
                and (r.status_code, r.json())
            ),
        )
        assert reason[0] == 503
        assert reason[1]["ready"] is False
        assert uri in reason[1]["reason"]
        assert "RESOURCE_DOES_NOT_EXIST" in reason[1]["reason"]
        assert server.get("/v2/health/live").status_code == 200
        ping = server.get("/ping")
        assert ping.status_code == 503
        assert "could not be loaded" in ping.json()["reason"]
        infer = server.post("/invocations", {"instances": [[1.0]]})
        assert infer.status_code == 503
        assert "could not be loaded" in infer.json()["message"]


def test_a_model_raising_on_predict_gives_500_counted_and_the_server_keeps_serving(
    stack: Any, registered: Registered, tmp_path: Path
) -> None:
    name = registered.flaky
    with serving(stack, tmp_path, f"models:/{name}/1") as server:
        failing = server.post(
            "/invocations", {"dataframe_split": {"columns": ["x"], "data": [[-1]]}}
        )
        assert failing.status_code == 500
        # The class and an id answer; the text, which may quote a URL or a key, is logged.
        message = failing.json()["message"]
        assert "prediction failed (ValueError)" in message
        assert "negative x" not in message
        error_id = message.split("error id ")[1].split()[0]
        oip_failing = server.post(
            f"/v2/models/{name}/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [-5]}]},
        )
        assert oip_failing.status_code == 500
        assert "negative x" not in oip_failing.json()["error"]
        eventually(
            "the failure logged under its id",
            lambda: "negative x is not allowed" in server.log.read_text().partition(error_id)[2],
            timeout=10,
        )
        fine = server.post("/invocations", {"dataframe_records": [{"x": 1.5}, {"x": 2}]})
        assert fine.status_code == 200
        # A named Series comes back as records, as `mlflow models serve` writes it.
        assert fine.json() == {"predictions": [{"x": 3.0}, {"x": 4.0}]}
        labels = {"model": name, "version": "1"}
        assert server.metric("mlcycle_model_requests_total", **labels, code="500") == 2
        assert server.metric("mlcycle_model_requests_total", **labels, code="200") == 1
        # A regressor's answers go to the value histogram: 3.0 + 4.0.
        assert server.metric("mlcycle_model_prediction_value_sum", **labels) == pytest.approx(7.0)


def test_workers_share_the_port_and_metrics_add_up(
    stack: Any, registered: Registered, tmp_path: Path
) -> None:
    with serving(stack, tmp_path, f"models:/{registered.iris}/1", "--workers", "2") as server:
        # Both workers must have loaded before counting: readiness is per worker.
        eventually(
            "both workers ready",
            lambda: all(server.get("/v2/health/ready").ok for _ in range(20)),
            timeout=LOAD_TIMEOUT,
        )
        row = registered.iris_rows.iloc[[0]]
        for _ in range(30):
            assert server.post("/invocations", {"dataframe_split": split(row)}).ok
        pids = {
            labels.get("pid")
            for labels, _ in server.metrics().get("mlcycle_model_requests_total", [])
        }
        assert pids == {None}, "multiprocess samples were not aggregated"
        for _ in range(3):  # whichever worker answers the scrape sees every worker's counts
            assert server.metric("mlcycle_model_requests_total", code="200") == 30
            assert server.metric("mlcycle_model_predictions_total", **{"class": "0"}) == 30


def test_a_pod_running_mlcycle_serve_becomes_ready(
    stack: Any, registered: Registered, kube_client: Any, namespace: str
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    env = [{"name": k, "value": v} for k, v in stack.env().items() if k != "KUBECONFIG"]
    env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "iris-server"},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "server",
                    "image": "ignored",
                    "command": ["mlcycle", "serve", "--model-uri", f"models:/{registered.iris}/1"],
                    "args": ["--host", "$(POD_IP)", "--port", "8080"],
                    "env": env,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def ready_ip() -> str | None:
        status = core.read_namespaced_pod("iris-server", namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return status.pod_ip if conditions.get("Ready") == "True" else None

    pod_ip = eventually("pod iris-server Ready", ready_ip, timeout=LOAD_TIMEOUT, interval=1)
    response = requests.post(
        f"http://{pod_ip}:8080/invocations",
        json={"dataframe_split": split(registered.iris_rows.iloc[[0]])},
        timeout=10,
    )
    assert response.json() == {"predictions": [0]}
    assert np.array_equal(
        response.json()["predictions"],
        registered.iris_model.predict(registered.iris_rows.iloc[[0]]),
    )
