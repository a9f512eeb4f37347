"""`mlcycle serve` under load and at its edges: callers never mixed, probes never blocked,
client mistakes never a 500, drained on SIGTERM, ready only when every worker is.

A real server process on a pyfunc model saved locally (no registry needed): its output
depends on the whole input (each x minus the mean of the batch), exactly the kind of model
that merging callers' rows would corrupt; x = 999 takes 3 seconds.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from tests.model_servers import Server, mlcycle_serving

pytestmark = pytest.mark.integration

SLOW_X = 999.0
SLOW_SECONDS = 3

CENTRED_MODEL_CODE = """
import os
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Centred(PythonModel):
    def load_context(self, context):
        gate = os.environ.get("LOAD_GATE_DIR")
        if gate:  # the first process to load is quick, every other one slow
            try:
                os.mkdir(gate)
            except FileExistsError:
                time.sleep(4)

    def predict(self, context, model_input, params=None):
        x = model_input["x"]
        if (x == 999).any():
            time.sleep(3)
        return (x - x.mean()).to_numpy()


mlflow.models.set_model(Centred())
"""


@pytest.fixture(scope="module")
def centred_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    directory = tmp_path_factory.mktemp("centred")
    code = directory / "centred_model.py"
    code.write_text(CENTRED_MODEL_CODE)
    model_dir = directory / "model"
    mlflow.pyfunc.save_model(
        str(model_dir),
        python_model=str(code),
        signature=infer_signature(pd.DataFrame({"x": [1.0]}), pd.Series([0.0])),
    )
    return model_dir


@pytest.fixture(scope="module")
def server(centred_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    flags = ["--max-batch-wait-ms", "50", "--request-timeout-seconds", "2"]
    flags += ["--max-request-bytes", "4096"]
    with mlcycle_serving(str(centred_model), tmp_path_factory.mktemp("served"), *flags) as served:
        yield served


def split(values: list[float]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["x"], "data": [[v] for v in values]}}


def centred(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def test_concurrent_callers_of_a_batch_dependent_pyfunc_each_get_their_own_answer(
    server: Server,
) -> None:
    inputs = [[float(i), float(i * 10), float(i * 100 + 7)] for i in range(1, 25)]
    # Everyone starts together, and the server would wait 50 ms to merge them.
    barrier = threading.Barrier(len(inputs))

    def call(values: list[float]) -> Any:
        barrier.wait()
        return server.post("/invocations", split(values)).json()

    calls_before = server.metric("mlcycle_model_batch_size_count")
    rows_before = server.metric("mlcycle_model_batch_size_sum")
    with ThreadPoolExecutor(len(inputs)) as pool:
        answers = list(pool.map(call, inputs))
    for values, answer in zip(inputs, answers, strict=True):
        assert answer == {"predictions": centred(values)}, values
    # Every predict call had exactly one caller's 3 rows.
    assert server.metric("mlcycle_model_batch_size_count") - calls_before == len(inputs)
    assert server.metric("mlcycle_model_batch_size_sum") - rows_before == 3 * len(inputs)


def test_probes_and_metrics_answer_at_once_while_a_predict_runs(server: Server) -> None:
    slow = ThreadPoolExecutor(1).submit(server.post, "/invocations", split([SLOW_X]))
    time.sleep(0.5)  # the predict is running now
    for path in ("/v2/health/live", "/ping", "/v2/health/ready", "/metrics"):
        started = time.monotonic()
        assert server.get(path).ok
        # A kubelet probe's default timeout is 1 s; the loop must not wait for predict.
        assert time.monotonic() - started < 0.5, path
    assert not slow.done()
    assert slow.result(timeout=30).status_code == 504  # and the timeout is 2 s


def test_a_prediction_over_the_request_timeout_is_a_504_and_the_server_serves_on(
    server: Server,
) -> None:
    before = server.metric("mlcycle_model_requests_total", code="504")
    started = time.monotonic()
    response = server.post("/invocations", split([SLOW_X]))
    assert response.status_code == 504
    assert time.monotonic() - started < SLOW_SECONDS
    assert response.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert server.metric("mlcycle_model_requests_total", code="504") == before + 1
    time.sleep(SLOW_SECONDS)  # the abandoned predict finishes in its thread
    assert server.post("/invocations", split([1.0, 3.0])).json() == {"predictions": [-1.0, 1.0]}


def test_client_mistakes_are_4xx_with_what_the_server_accepts(server: Server) -> None:
    too_big = server.post("/invocations", split([1.0] * 2000))
    assert too_big.status_code == 413
    assert "4096" in too_big.json()["message"]
    for path in ("/invocations", "/v2/models/model/infer"):
        wrong_method = server.get(path)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["Allow"] == "POST"
    assert server.metric("mlcycle_model_requests_total", code="500") == 0


def test_sigterm_answers_the_request_in_flight_and_the_one_queued(
    centred_model: Path, tmp_path: Path
) -> None:
    with mlcycle_serving(str(centred_model), tmp_path) as fresh:
        pool = ThreadPoolExecutor(2)
        in_flight = pool.submit(fresh.post, "/invocations", split([SLOW_X]))
        time.sleep(0.5)
        queued = pool.submit(fresh.post, "/invocations", split([1.0, 2.0, 6.0]))
        time.sleep(0.5)
        fresh.process.send_signal(signal.SIGTERM)
        assert in_flight.result(timeout=30).json() == {"predictions": [0.0]}
        assert queued.result(timeout=30).json() == {"predictions": centred([1.0, 2.0, 6.0])}
        # uvicorn re-raises the signal it caught once shutdown is complete.
        assert fresh.process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(requests.ConnectionError):
            fresh.get("/v2/health/live")


def test_workers_are_ready_only_once_every_worker_has_loaded_and_log_like_the_main_process(
    centred_model: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "first-loaded"
    with mlcycle_serving(
        str(centred_model), tmp_path, "--workers", "3", env={"LOAD_GATE_DIR": str(gate)}
    ) as workers:
        assert gate.exists()  # one worker was quick, two took 4 s longer
        statuses = []
        for _ in range(40):
            # A new connection each time: the kernel spreads them over the workers.
            with requests.Session() as session:
                response = session.post(
                    workers.url + "/invocations", json=split([1.0, 2.0]), timeout=30
                )
            statuses.append(response.status_code)
        assert statuses == [200] * 40
        log = workers.log.read_text()
        assert log.count("loaded (python_function flavor)") == 3, log
