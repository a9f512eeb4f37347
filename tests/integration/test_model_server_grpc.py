"""`mlcycle serve` over gRPC, as tritonclient's gRPC client speaks to it.

A scikit-learn model saved locally (iris with a string column, one-hot encoded) is served
by its own `mlcycle serve` process on both ports; the answers over gRPC must be those over
HTTP. A second server, with two workers and a model that never loads, shows every worker
answering on the one gRPC port.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlcycle.dev.processes import free_port
from tests.harness import eventually
from tests.model_servers import Server, mlcycle_serving

pytestmark = pytest.mark.integration

NAME = "iris"
SITES = ["north", "south", "east"]
# The server's reason, before and after its first attempt to load the missing model.
NOT_READY = r"model is loading|model '.*' could not be loaded \(attempt \d+, .*"


@dataclass(frozen=True)
class Saved:
    model_dir: Path
    model: Any
    rows: pd.DataFrame


@dataclass(frozen=True)
class Serving:
    http: Server
    grpc_url: str


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    features, labels = load_iris(return_X_y=True, as_frame=True)
    features["site"] = SITES * (len(features) // len(SITES))
    encode = ColumnTransformer(
        [("site", OneHotEncoder(handle_unknown="ignore"), ["site"])], remainder="passthrough"
    )
    model = make_pipeline(encode, LogisticRegression(max_iter=500)).fit(features, labels)
    model_dir = tmp_path_factory.mktemp("grpc-model") / "model"
    mlflow.sklearn.save_model(
        model,
        model_dir,
        signature=infer_signature(features, model.predict(features)),
        # Named, not inferred: inferring them re-imports the model in a subprocess (~30 s).
        pip_requirements=["scikit-learn"],
        serialization_format="cloudpickle",
    )
    return Saved(model_dir, model, features.iloc[[0, 60, 120, 121]].reset_index(drop=True))


@pytest.fixture(scope="module")
def serving(saved: Saved, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    port = free_port()
    flags = ("--model-name", NAME, "--grpc-port", str(port))
    with mlcycle_serving(str(saved.model_dir), tmp_path_factory.mktemp("serve"), *flags) as http:
        yield Serving(http, f"127.0.0.1:{port}")


def client(url: str) -> Any:
    import tritonclient.grpc as triton

    # A connection of its own: by default, channels to one address share one (grpc's
    # global subchannel pool), which would pin every client to the worker it reached first.
    return triton.InferenceServerClient(url, channel_args=[("grpc.use_local_subchannel_pool", 1)])


def datatype(column: str) -> str:
    return "BYTES" if column == "site" else "FP64"


def column_inputs(rows: pd.DataFrame) -> list[Any]:
    """One tensor per column, as tritonclient sends them (raw contents)."""
    import tritonclient.grpc as triton

    inputs = []
    for column in rows.columns:
        tensor = triton.InferInput(column, [len(rows)], datatype(column))
        tensor.set_data_from_numpy(rows[column].to_numpy())
        inputs.append(tensor)
    return inputs


def test_health_and_metadata_agree_with_http(serving: Serving) -> None:
    grpc = client(serving.grpc_url)
    assert grpc.is_server_live()
    assert grpc.is_server_ready()
    assert grpc.is_model_ready(NAME)
    assert grpc.get_server_metadata(as_json=True)["name"] == "mlcycle"

    metadata = grpc.get_model_metadata(NAME, as_json=True)
    http = serving.http.get(f"/v2/models/{NAME}").json()
    assert metadata["platform"] == http["platform"] == "mlflow_sklearn"
    for key in ("inputs", "outputs"):
        assert [
            (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata[key]
        ] == [(t["name"], t["datatype"], t["shape"]) for t in http[key]]
    assert metadata["inputs"][-1] == {"name": "site", "datatype": "BYTES", "shape": ["-1"]}


def test_infer_answers_as_http_does(serving: Serving, saved: Saved) -> None:
    grpc = client(serving.grpc_url)
    result = grpc.infer(NAME, column_inputs(saved.rows), request_id="grpc-1")
    response = result.get_response(as_json=True)
    assert (response["model_name"], response["id"]) == (NAME, "grpc-1")
    [output] = response["outputs"]
    expected = saved.model.predict(saved.rows).tolist()
    assert result.as_numpy(output["name"]).tolist() == expected

    rows = saved.rows
    document = {
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": datatype(c), "data": rows[c].tolist()}
            for c in rows.columns
        ]
    }
    http = serving.http.post(f"/v2/models/{NAME}/infer", document).json()
    assert [(o["name"], o["datatype"], o["data"]) for o in http["outputs"]] == [
        (output["name"], output["datatype"], expected)
    ]


def test_a_bad_input_is_invalid_argument_counted_under_grpc(serving: Serving, saved: Saved) -> None:
    from tritonclient.utils import InferenceServerException

    counted = {"protocol": "grpc", "code": "400"}
    before = serving.http.metric("mlcycle_model_requests_total", **counted)
    without_site = saved.rows.drop(columns="site")
    with pytest.raises(InferenceServerException) as caught:
        client(serving.grpc_url).infer(NAME, column_inputs(without_site))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "inputs.site: missing column" in str(caught.value.message())
    assert serving.http.metric("mlcycle_model_requests_total", **counted) == before + 1


def test_every_worker_answers_on_the_grpc_port_unavailable_until_loaded(
    saved: Saved, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from prometheus_client.mmap_dict import MmapedDict
    from tritonclient.utils import InferenceServerException

    work = tmp_path_factory.mktemp("unloadable")
    metrics_dir = work / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    flags = ("--model-name", NAME, "--grpc-port", str(port), "--workers", "2")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with mlcycle_serving(str(work / "missing"), work, *flags, env=env, wait_ready=False):
        url = f"127.0.0.1:{port}"
        # Each worker binds the port when it starts; the second may still be starting.
        eventually("both workers listening", lambda: len(_listeners(port)) == 2, timeout=60)
        health = client(url)
        assert health.is_server_live()
        assert not health.is_server_ready()
        assert not health.is_model_ready(NAME)
        health.close()
        for _ in range(20):  # new connections: the kernel picks a worker for each
            grpc = client(url)
            with pytest.raises(InferenceServerException) as caught:
                grpc.infer(NAME, column_inputs(saved.rows))
            grpc.close()
            assert caught.value.status() == "StatusCode.UNAVAILABLE"
            assert re.fullmatch(NOT_READY, str(caught.value.message()), re.DOTALL)

        answered: dict[str, float] = {}
        for path in glob.glob(str(metrics_dir / "counter_*.db")):
            values = MmapedDict(path, read_mode=True)
            for key, value, *_ in values.read_all_values():
                if '"protocol": "grpc"' in key and '"code": "503"' in key:
                    answered[os.path.basename(path)] = value
            values.close()
        assert sum(answered.values()) == 20
        assert len(answered) == 2, f"one worker answered every connection: {answered}"


def _listeners(port: int) -> set[str]:
    """Inodes of the sockets listening on `port` (IPv4 and IPv6 tables)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes
