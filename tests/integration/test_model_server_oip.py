"""`mlcycle serve` called by tritonclient over the Open Inference Protocol v2 (HTTP), with
JSON and binary tensor data both ways, on a locally saved scikit-learn pipeline whose input
has a string column beside numeric ones (so BYTES inputs must reach the model as text).

No tracking server is needed: the model is saved into a directory the server loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.model_servers import Server, mlcycle_serving

pytestmark = pytest.mark.integration

MODEL_NAME = "weather"
ROWS = pd.DataFrame(
    {
        "city": ["oslo", "rome", "oslo", "lima", "rome", "lima", "oslo", "rome"],
        "temp": [1.5, 20.0, -3.0, 18.0, 25.0, 16.0, 4.0, 22.5],
        "visits": np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64),
    }
)
LABELS = np.array(["cold", "warm", "cold", "warm", "warm", "warm", "cold", "warm"])


@dataclass(frozen=True)
class Served:
    server: Server
    client: Any  # tritonclient.http.InferenceServerClient
    expected: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    pipeline = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["city"]), remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(ROWS, LABELS)
    model_dir = tmp_path_factory.mktemp("oip-model") / MODEL_NAME
    mlflow.sklearn.save_model(
        pipeline,
        str(model_dir),
        signature=infer_signature(ROWS, pipeline.predict(ROWS)),
        # Named, so MLflow does not infer them by loading the model in a subprocess
        # (half a minute on a busy machine, for an environment the test never builds).
        pip_requirements=["scikit-learn"],
    )
    # HTTP only: a gRPC port of its own would clash with other servers on this machine.
    with mlcycle_serving(
        str(model_dir), tmp_path_factory.mktemp("oip-serve"), "--no-grpc"
    ) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        try:
            yield Served(server, client, pipeline.predict(ROWS).tolist())
        finally:
            client.close()


def inputs(binary: bool) -> list[Any]:
    tensors = []
    for column, datatype in (("city", "BYTES"), ("temp", "FP64"), ("visits", "INT64")):
        values = ROWS[column].to_numpy()
        array = values.astype(object) if datatype == "BYTES" else values
        tensor = triton.InferInput(column, [len(ROWS)], datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    return tensors


def texts(array: np.ndarray[Any, Any]) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else value for value in array.tolist()]


@pytest.mark.parametrize(
    ("binary_inputs", "outputs", "binary_output"),
    [
        (True, None, True),  # tritonclient's default: everything binary
        (False, None, True),
        (True, False, False),
        (False, True, True),
    ],
    ids=[
        "binary-in-default-out",
        "json-in-default-out",
        "binary-in-json-out",
        "json-in-binary-out",
    ],
)
def test_tritonclient_infers_with_json_or_binary_tensors(
    served: Served, binary_inputs: bool, outputs: bool | None, binary_output: bool
) -> None:
    requested = (
        None if outputs is None else [triton.InferRequestedOutput("output-0", binary_data=outputs)]
    )
    result = served.client.infer(
        MODEL_NAME, inputs(binary_inputs), outputs=requested, request_id="r-1"
    )
    assert texts(result.as_numpy("output-0")) == served.expected
    response = result.get_response()
    assert (response["model_name"], response["id"]) == (MODEL_NAME, "r-1")
    assert "model_version" not in response  # a local directory has no version
    [output] = response["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [len(ROWS)])
    assert ("data" not in output) is binary_output
    assert ("binary_data_size" in output.get("parameters", {})) is binary_output


def test_metadata_names_what_infer_answers_and_the_binary_extension(served: Served) -> None:
    assert "binary_tensor_data" in served.client.get_server_metadata()["extensions"]
    metadata = served.client.get_model_metadata(MODEL_NAME)
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("city", "BYTES"),
        ("temp", "FP64"),
        ("visits", "INT64"),
    ]
    answered = served.client.infer(MODEL_NAME, inputs(True)).get_response()["outputs"]
    assert [o["name"] for o in metadata["outputs"]] == [o["name"] for o in answered]


def test_an_unknown_output_is_refused(served: Served) -> None:
    with pytest.raises(InferenceServerException) as caught:
        served.client.infer(
            MODEL_NAME, inputs(True), outputs=[triton.InferRequestedOutput("predict")]
        )
    assert caught.value.status() == "400"
    assert "outputs(predict): unknown output" in caught.value.message()


def column(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"visits": column("visits", "INT8", [300])},
            "inputs[2](visits).data: 300 is out of range",
        ),
        ({"temp": column("temp", "FP32", [1e39])}, "inputs[1](temp).data: 1e+39 is out of range"),
        ({"outputs": 5}, "outputs: expected a list"),
    ],
)
def test_values_out_of_range_and_malformed_fields_are_400s(
    served: Served, change: dict[str, Any], says: str
) -> None:
    tensors = {
        "city": column("city", "BYTES", ["oslo"]),
        "temp": column("temp", "FP64", [1.5]),
        "visits": column("visits", "INT64", [3]),
    }
    tensors.update({key: value for key, value in change.items() if key in tensors})
    document: dict[str, Any] = {"inputs": list(tensors.values())}
    document.update({key: value for key, value in change.items() if key not in tensors})
    response = served.server.post(f"/v2/models/{MODEL_NAME}/infer", document)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]
