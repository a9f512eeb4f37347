"""Open Inference Protocol v2: JSON and binary tensor data over HTTP, and the tensor codec
the HTTP and gRPC transports share. Requests are built, and responses read, by tritonclient
itself wherever it can, so the wire format is checked against the reference client."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import serialize_byte_tensor

from mlcycle.dataplane.server.flavors import LoadedModel
from mlcycle.dataplane.server.inference import Inference
from mlcycle.dataplane.server.oip import (
    OipTensor,
    decode_raw,
    decode_values,
    encode_oip_infer,
    encode_raw,
    inference_from_tensors,
    model_metadata,
    oip_output_names,
    output_tensors,
    parse_oip_infer,
    server_metadata,
)
from mlcycle.dataplane.server.signature import parse_signature
from mlcycle.dataplane.server.source import ModelIdentity
from mlcycle.dataplane.server.validation import InputValidator, RequestError
from tests.unit.signatures import COLUMNS, EXPECTED, SIGNATURE, VALIDATOR, columns_signature

pytestmark = pytest.mark.unit


# A string column beside numeric ones: what a pipeline with a one-hot encoder takes.
MIXED = InputValidator(
    columns_signature(
        ("city", "string"), ("temp", "double"), ("visits", "long"), output_dtype="str"
    ),
    "dataframe",
)
BINARY_COLUMN = InputValidator(
    parse_signature({"inputs": json.dumps([{"type": "binary", "name": "blob"}])}), "dataframe"
)
UNSIGNED = InputValidator(parse_signature(None), "dataframe")

CITIES = np.array(["oslo", "rome", "lima"], dtype=object)
TEMPS = np.array([1.5, 20.0, -3.0])
VISITS = np.array([3, 1, 4], dtype=np.int64)


def oip(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def triton_input(name: str, array: np.ndarray[Any, Any], binary: bool) -> triton.InferInput:
    datatype = "BYTES" if array.dtype.kind in "OSU" else triton.np_to_triton_dtype(array.dtype)
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def triton_request(inputs: list[triton.InferInput], **options: Any) -> tuple[bytes, str | None]:
    """A request body exactly as tritonclient sends it, and its header-length header."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, **options)
    return body, None if json_size is None else str(json_size)


def mixed_inputs(binary: bool) -> list[triton.InferInput]:
    return [
        triton_input("city", CITIES, binary),
        triton_input("temp", TEMPS, binary),
        triton_input("visits", VISITS, binary),
    ]


def refused(body: bytes, header: str | None = None, validator: InputValidator = VALIDATOR) -> str:
    with pytest.raises(RequestError) as caught:
        parse_oip_infer(body, header, validator)
    return str(caught.value)


# --- requests -------------------------------------------------------------------------


def test_oip_accepts_one_2d_tensor_or_one_tensor_per_column() -> None:
    whole = parse_oip_infer(
        oip(
            {"name": "input-0", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}, id="r1"
        ),
        None,
        VALIDATOR,
    )
    np.testing.assert_array_equal(whole.model_input, EXPECTED)
    assert whole.request_id == "r1"
    per_column = parse_oip_infer(
        oip(
            {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [[2], [4]]},
            {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 3]},
        ),
        None,
        VALIDATOR,
    )
    np.testing.assert_array_equal(per_column.model_input, EXPECTED)


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        ({"name": "x", "shape": [2, 2], "datatype": "FP128", "data": [1, 2, 3, 4]}, "datatype"),
        ({"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3]}, "needs 4 values"),
        ({"name": "x", "shape": [1, 2], "datatype": "FP64", "data": ["p", "q"]}, "do not match"),
        ({"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}, "or a [rows, 2] tensor"),
        ({"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}, "row of 2 values"),
        ({"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]}, "inputs.b: missing"),
        ({"shape": [2], "datatype": "FP64", "data": [1, 2]}, "inputs[0].name: missing"),
        ({"name": "x", "shape": [1, 2], "datatype": "FP64"}, "inputs[0](x).data: missing"),
        ({"name": "x", "shape": [-1, 2], "datatype": "FP64", "data": [1, 2]}, "list of sizes"),
        ({"name": "x", "shape": [2], "datatype": "BYTES", "data": ["p", 1]}, "expected strings"),
        ({"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["p", None]}, "strings"),
    ],
)
def test_invalid_oip_requests_name_the_input(tensor: dict[str, Any], says: str) -> None:
    assert says in refused(oip(tensor))


def test_duplicate_input_names_are_refused() -> None:
    tensor = {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}
    assert "inputs[1](a): duplicate input name" in refused(oip(tensor, tensor))


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("INT8", [127, 128]),
        ("INT8", [-129]),
        ("UINT8", [256]),
        ("UINT8", [-1]),
        ("INT16", [40000]),
        ("UINT16", [-1]),
        ("INT32", [2**31]),
        ("UINT32", [2**32]),
        ("INT64", [2**63]),
        ("UINT64", [-1]),
    ],
)
def test_integers_out_of_range_are_refused_not_wrapped(datatype: str, data: list[int]) -> None:
    tensor = {"name": "input-0", "shape": [len(data), 1], "datatype": datatype, "data": data}
    says = refused(oip(tensor), validator=UNSIGNED)
    assert "inputs[0](input-0).data" in says
    assert datatype in says


@pytest.mark.parametrize(("datatype", "value"), [("FP32", 1e39), ("FP16", 70000)])
def test_floats_out_of_range_are_refused_not_infinite(datatype: str, value: float) -> None:
    tensor = {"name": "a", "shape": [1], "datatype": datatype, "data": [value]}
    says = refused(oip(tensor, {"name": "b", "shape": [1], "datatype": "FP64", "data": [0]}))
    assert f"inputs[0](a).data: {value} is out of range for {datatype}" in says


def test_the_largest_values_of_a_datatype_are_accepted() -> None:
    edges = decode_values("FP32", [2], [3.4e38, -3.4e38], "x")
    assert np.isfinite(edges).all()
    np.testing.assert_array_equal(decode_values("INT8", [2], [-128, 127], "x"), [-128, 127])
    uint64 = decode_values("UINT64", [1], [2**64 - 1], "x")
    assert uint64.dtype == np.uint64
    assert int(uint64[0]) == 2**64 - 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"outputs": 5}, "outputs: expected a list of objects with a name"),
        ({"outputs": [5]}, "outputs[0]: expected an object with a name"),
        ({"outputs": [{"name": 3}]}, "outputs[0].name: expected a string"),
        ({"outputs": [{}]}, "outputs[0].name: missing"),
        ({"outputs": [{"name": "y", "parameters": 1}]}, "outputs[0](y).parameters: expected"),
        ({"outputs": [{"name": "y", "parameters": {"classification": 2}}]}, "not supported"),
        ({"outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}, "true or false"),
        ({"parameters": [1]}, "parameters: expected an object"),
        ({"parameters": {"binary_data_output": 1}}, "true or false"),
    ],
)
def test_malformed_outputs_and_parameters_are_refused(extra: dict[str, Any], says: str) -> None:
    tensor = {"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}
    assert says in refused(oip(tensor, **extra))


def test_bytes_inputs_reach_a_string_column_as_text() -> None:
    for binary in (False, True):
        inference = parse_oip_infer(*triton_request(mixed_inputs(binary)), MIXED)
        frame = inference.model_input
        assert isinstance(frame, pd.DataFrame), binary
        assert frame["city"].tolist() == ["oslo", "rome", "lima"]
        assert all(isinstance(city, str) for city in frame["city"])
        assert frame["temp"].tolist() == TEMPS.tolist()
        assert frame["visits"].tolist() == VISITS.tolist()
        assert inference.rows == 3


def test_binary_and_json_inputs_give_the_same_model_input() -> None:
    rows = np.array(EXPECTED)
    for sent in (rows, rows.astype(np.float32), rows.astype(np.int16)):
        for binary in (False, True):
            request = triton_request([triton_input("input-0", sent, binary)])
            np.testing.assert_array_equal(
                parse_oip_infer(*request, VALIDATOR).model_input, EXPECTED
            )


def test_bytes_keep_their_bytes_in_a_binary_column_and_must_be_text_elsewhere() -> None:
    blob = np.array([b"\xff\x00", b"ok\x00"], dtype=object)
    inference = parse_oip_infer(*triton_request([triton_input("blob", blob, True)]), BINARY_COLUMN)
    assert isinstance(inference.model_input, pd.DataFrame)
    assert inference.model_input["blob"].tolist() == [b"\xff\x00", b"ok\x00"]
    not_text = [
        triton_input("city", np.array([b"\xff"], dtype=object), True),
        triton_input("temp", TEMPS[:1], True),
        triton_input("visits", VISITS[:1], True),
    ]
    assert "inputs[0](city): element 0 is not UTF-8 text" in refused(
        *triton_request(not_text), validator=MIXED
    )


def test_bytes_tensors_take_the_kind_of_their_tensor_spec() -> None:
    words = [triton_input("words", np.array([b"a", b"bc"], dtype=object), True)]
    for dtype, kind in (("str", "U"), ("bytes", "S"), ("object", "O")):
        spec = {"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": [-1]}}
        validator = InputValidator(
            parse_signature({"inputs": json.dumps([{**spec, "name": "words"}])}), "ndarray"
        )
        model_input = parse_oip_infer(*triton_request(words), validator).model_input
        assert isinstance(model_input, np.ndarray)
        assert model_input.dtype.kind == kind, dtype
        assert [v.decode() if isinstance(v, bytes) else v for v in model_input] == ["a", "bc"]
    unsigned = parse_oip_infer(*triton_request(words), UNSIGNED).model_input
    assert isinstance(unsigned, np.ndarray)
    assert unsigned.tolist() == ["a", "bc"]


def test_request_parameters_reach_the_model_without_the_protocol_ones() -> None:
    body, header = triton_request(
        [triton_input("input-0", np.array(EXPECTED), True)],
        priority=2,
        timeout=100,
        parameters={"threshold": 0.5},
    )
    inference = parse_oip_infer(body, header, VALIDATOR)
    assert inference.params == {"threshold": 0.5}
    only_protocol = parse_oip_infer(
        *triton_request([triton_input("x", np.array(EXPECTED), True)]), VALIDATOR
    )
    # Empty params keep the request batchable with others.
    assert only_protocol.params is None


def test_parameters_of_the_wrong_type_for_the_params_schema_are_refused() -> None:
    def check(params: Any) -> None:
        if not isinstance(params.get("threshold", 0.5), float):
            raise RequestError("params.threshold", "expected double")

    validator = InputValidator(SIGNATURE, "ndarray", check_params=check)
    tensors = [triton_input("input-0", np.array(EXPECTED), False)]
    with pytest.raises(RequestError, match=r"params\.threshold: expected double"):
        parse_oip_infer(*triton_request(tensors, parameters={"threshold": "high"}), validator)
    accepted = parse_oip_infer(*triton_request(tensors, parameters={"threshold": 0.7}), validator)
    assert accepted.params == {"threshold": 0.7}


@pytest.mark.parametrize(
    ("header", "raw_tail", "says"),
    [
        ("many", b"", "Inference-Header-Content-Length: expected a byte count"),
        ("-1", b"", "Inference-Header-Content-Length: expected a byte count"),
        ("100000", b"", "longer than the body"),
        (None, b"\x00" * 32, "invalid JSON"),
        ("auto", b"\x00" * 31, "inputs[0](a): binary data ends after 31 of 32 bytes"),
        ("auto", b"\x00" * 33, "1 byte of binary data after the last input"),
    ],
)
def test_binary_framing_errors_are_refused(header: str | None, raw_tail: bytes, says: str) -> None:
    document = oip(
        {"name": "a", "shape": [2, 2], "datatype": "FP64", "parameters": {"binary_data_size": 32}}
    )
    length = str(len(document)) if header == "auto" else header
    assert says in refused(document + raw_tail, length)


def test_binary_size_needs_the_header_and_excludes_json_data() -> None:
    sized = {"name": "a", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
    assert "needs the Inference-Header-Content-Length header" in refused(oip(sized))
    both = oip({**sized, "data": [1.0]})
    assert "inputs[0](a): has both data and binary_data_size" in refused(
        both + b"\x00" * 8, str(len(both))
    )


# --- the tensor codec shared with gRPC ------------------------------------------------

ROUND_TRIP = [
    ("BOOL", np.array([[True, False]])),
    ("UINT8", np.array([0, 255], dtype=np.uint8)),
    ("UINT16", np.array([0, 65535], dtype=np.uint16)),
    ("UINT32", np.array([0, 2**32 - 1], dtype=np.uint32)),
    ("UINT64", np.array([0, 2**64 - 1], dtype=np.uint64)),
    ("INT8", np.array([-128, 127], dtype=np.int8)),
    ("INT16", np.array([-(2**15), 2**15 - 1], dtype=np.int16)),
    ("INT32", np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32)),
    ("INT64", np.array([-(2**63), 2**63 - 1], dtype=np.int64)),
    ("FP16", np.array([0.5, -np.inf], dtype=np.float16)),
    ("FP32", np.array([1.5, np.nan], dtype=np.float32)),
    ("FP64", np.array([[1e300, -0.0]])),
    ("BYTES", np.array([[b"", b"\x00\xff"], [b"abc", "d\u00e9".encode()]], dtype=object)),
]


@pytest.mark.parametrize(("datatype", "array"), ROUND_TRIP)
def test_raw_contents_round_trip_as_tritonclient_writes_them(
    datatype: str, array: np.ndarray[Any, Any]
) -> None:
    raw = encode_raw(array, datatype)
    if datatype == "BYTES":
        assert raw == serialize_byte_tensor(array).item()
    else:
        assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes()
    decoded = decode_raw(datatype, list(array.shape), raw, "x")
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "says"),
    [
        ("FP64", [2], b"\x00" * 15, "x: shape [2] needs 16 bytes of FP64, got 15"),
        ("INT32", [0], b"\x00", "x: shape [0] needs 0 bytes of INT32, got 1"),
        ("BYTES", [1], b"\x03\x00\x00", "x: element 0 has no complete length prefix"),
        ("BYTES", [1], b"\x05\x00\x00\x00abc", "x: element 0 needs 5 bytes, 3 are left"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "x: shape [2] needs 2 elements, got 1"),
        ("BYTES", [1], b"\x01\x00\x00\x00ab", "x: 1 byte after its 1 element"),
        ("BF16", [1], b"\x00\x00", "x.datatype: unknown datatype 'BF16'"),
    ],
)
def test_raw_contents_that_do_not_fit_are_refused(
    datatype: str, shape: list[int], raw: bytes, says: str
) -> None:
    with pytest.raises(RequestError) as caught:
        decode_raw(datatype, shape, raw, "x")
    assert says in str(caught.value)


def test_raw_arrays_can_be_written_by_the_model() -> None:
    decoded = decode_raw("FP64", [2], np.array([1.0, 2.0]).tobytes(), "x")
    decoded[0] = 5.0  # models that scale their input in place must not meet a read-only array
    assert decoded.tolist() == [5.0, 2.0]


def test_inference_from_tensors_is_what_the_http_codec_parses() -> None:
    tensors = [
        OipTensor("city", "BYTES", [1], np.array([b"oslo"], dtype=object)),
        OipTensor("temp", "FP64", [1], np.array([1.5])),
        OipTensor("visits", "INT64", [1, 1], np.array([[3]])),
    ]
    inference = inference_from_tensors(tensors, ("output-0",), "r9", {"k": 1}, MIXED)
    assert isinstance(inference.model_input, pd.DataFrame)
    assert inference.model_input.to_dict(orient="records") == [
        {"city": "oslo", "temp": 1.5, "visits": 3}
    ]
    assert (inference.rows, inference.request_id, inference.params) == (1, "r9", {"k": 1})
    assert inference.requested_outputs == ("output-0",)


# --- responses ------------------------------------------------------------------------


def test_oip_response_carries_identity_shape_and_datatype() -> None:
    inference = Inference(np.zeros((2, 2)), 2, request_id="r1")
    encoded, header_length = encode_oip_infer(
        np.array([0, 2]), ModelIdentity("iris", "3"), inference, ()
    )
    assert header_length is None
    assert orjson.loads(encoded) == {
        "model_name": "iris",
        "model_version": "3",
        "id": "r1",
        "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [2], "data": [0, 2]}],
    }
    frame = pd.DataFrame({"label": ["x", "y"], "score": [0.5, 0.25]})
    outputs = orjson.loads(encode_oip_infer(frame, ModelIdentity("m", "1"), inference, ())[0])[
        "outputs"
    ]
    assert outputs[0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}
    assert outputs[1]["datatype"] == "FP64"


def test_an_unversioned_model_has_no_model_version_in_the_response() -> None:
    inference = Inference(np.zeros((1, 2)), 1)
    document = orjson.loads(
        encode_oip_infer(np.array([1]), ModelIdentity("m", ""), inference, ())[0]
    )
    assert "model_version" not in document
    assert "id" not in document


@pytest.mark.parametrize(
    ("signature", "output", "names"),
    [
        (SIGNATURE, np.array([0, 1]), ["output-0"]),
        (MIXED.signature, np.array(["cold", "warm"]), ["output-0"]),
        (
            parse_signature(
                {
                    "inputs": json.dumps([{"type": "double", "name": "x"}]),
                    "outputs": json.dumps(
                        [{"type": "double", "name": "low"}, {"type": "double", "name": "high"}]
                    ),
                }
            ),
            np.array([[0.1, 0.9], [0.4, 0.6]]),
            ["low", "high"],
        ),
        (
            parse_signature(
                {
                    "inputs": json.dumps([{"type": "double", "name": "x"}]),
                    "outputs": json.dumps([{"type": "long"}]),
                }
            ),
            pd.Series([1, 2]),
            ["0"],
        ),
        (UNSIGNED.signature, [1.0, 2.0], ["output-0"]),
    ],
)
def test_infer_names_its_outputs_as_the_model_metadata_does(
    signature: Any, output: Any, names: list[str]
) -> None:
    model = LoadedModel("sklearn", lambda rows: rows, signature, UNSIGNED)
    metadata = model_metadata(ModelIdentity("m", ""), model)
    metadata_names = [spec["name"] for spec in metadata["outputs"]]
    assert metadata_names in ([], names)  # [] for a model without an output signature
    inference = Inference(np.zeros((2, 1)), 2)
    response = encode_oip_infer(
        output, ModelIdentity("m", ""), inference, oip_output_names(signature)
    )[0]
    assert [tensor["name"] for tensor in orjson.loads(response)["outputs"]] == names
    tensors = output_tensors(output, oip_output_names(signature), ())
    assert sum(tensor.data.size for tensor in tensors) == np.asarray(output).size


def test_metadata_says_which_extensions_and_versions_there_are() -> None:
    assert "binary_tensor_data" in server_metadata()["extensions"]
    model = LoadedModel("sklearn", lambda rows: rows, SIGNATURE, VALIDATOR)
    assert model_metadata(ModelIdentity("m", ""), model)["versions"] == []
    described = model_metadata(ModelIdentity("m", "7"), model)
    assert (described["versions"], described["platform"]) == (["7"], "mlflow_sklearn")
    assert [spec["name"] for spec in described["inputs"]] == COLUMNS


def test_a_requested_unknown_output_is_refused_and_known_ones_are_kept_in_order() -> None:
    frame = pd.DataFrame({"label": ["x"], "score": [0.5]})
    with pytest.raises(RequestError) as caught:
        output_tensors(frame, (), ("score", "proba"))
    assert "outputs(proba): unknown output; the model has label, score" in str(caught.value)
    assert [t.name for t in output_tensors(frame, (), ("score", "label"))] == ["score", "label"]


def read_response(body: bytes, header_length: int | None) -> Any:
    return triton.InferenceServerClient.parse_response_body(body, header_length=header_length)


def test_binary_outputs_are_read_back_by_tritonclient() -> None:
    frame = pd.DataFrame(
        {"label": ["cold", "w\u00e4rm"], "score": np.array([0.5, 0.25], dtype=np.float32)}
    )
    identity = ModelIdentity("m", "1")
    # tritonclient's default: no outputs named, binary_data_output for all of them.
    everything = parse_oip_infer(
        *triton_request([triton_input("input-0", np.array(EXPECTED), True)]), VALIDATOR
    )
    body, header_length = encode_oip_infer(frame, identity, everything, ())
    assert header_length is not None
    result = read_response(body, header_length)
    assert result.as_numpy("label").tolist() == [b"cold", "w\u00e4rm".encode()]
    np.testing.assert_array_equal(result.as_numpy("score"), frame["score"].to_numpy())
    assert all("data" not in output for output in result.get_response()["outputs"])

    mixed = parse_oip_infer(
        *triton_request(
            [triton_input("input-0", np.array(EXPECTED), True)],
            outputs=[
                triton.InferRequestedOutput("score", binary_data=False),
                triton.InferRequestedOutput("label", binary_data=True),
            ],
        ),
        VALIDATOR,
    )
    body, header_length = encode_oip_infer(frame, identity, mixed, ())
    result = read_response(body, header_length)
    outputs = result.get_response()["outputs"]
    assert [output["name"] for output in outputs] == ["score", "label"]
    assert outputs[0]["data"] == [0.5, 0.25]
    assert outputs[1]["parameters"] == {"binary_data_size": 4 + 4 + 4 + 5}
    assert result.as_numpy("label").tolist() == [b"cold", "w\u00e4rm".encode()]


def test_json_outputs_need_no_header() -> None:
    inference = parse_oip_infer(
        *triton_request(
            [triton_input("input-0", np.array(EXPECTED), False)],
            outputs=[triton.InferRequestedOutput("output-0", binary_data=False)],
        ),
        VALIDATOR,
    )
    body, header_length = encode_oip_infer(np.array([3, 4]), ModelIdentity("m", "1"), inference, ())
    assert header_length is None
    assert read_response(body, None).as_numpy("output-0").tolist() == [3, 4]


def test_bytes_outputs_that_are_not_text_must_be_asked_for_as_binary() -> None:
    inference = Inference(np.zeros((1, 2)), 1)
    with pytest.raises(RequestError) as caught:
        encode_oip_infer(np.array([b"\xff"], dtype=object), ModelIdentity("m", "1"), inference, ())
    assert "outputs(output-0): element 0 is not UTF-8 text; request it as binary data" in str(
        caught.value
    )
