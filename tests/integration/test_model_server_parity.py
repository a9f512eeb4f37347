"""`mlcycle serve` answers what `mlflow models serve` answers: each model is saved as a user
saves it, served by both, and every request of the table is sent to both; the statuses must
be the same and, for a 200, the JSON the same to the last digit. Where mlcycle differs on
purpose, the case says what each answers and why.

The models: a scikit-learn pipeline on a table with a string column, a string column that
looks numeric (zip codes) and an optional column it imputes; a custom pyfunc model with a
params schema whose output takes every shape MLflow writes; xgboost and lightgbm regressors,
which take missing values. One server of each kind per model, started once for the module.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.model_servers import Server, mlcycle_serving, mlflow_serving

pytestmark = pytest.mark.integration

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
COLUMNS = ["city", "zip", "rooms", "area", "age"]
NUMERIC = ["rooms", "area", "age"]

# Models from code, as MLflow recommends for pyfunc models: both servers load this file.
PYFUNC_CODE = """
import mlflow
import numpy as np
import pandas as pd


class Scaled(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        params = params or {}
        shape = params.get("shape", "frame")
        score = (model_input["area"] * params.get("scale", 1.0)).astype(np.float32)
        ratio = model_input["area"] / model_input["age"]  # inf for age 0, NaN when missing
        if shape == "series":
            return ratio
        if shape == "array":
            return score.to_numpy()
        if shape == "dict":
            return {"score": score.to_numpy(), "ratio": ratio.to_numpy()}
        if shape == "list":
            return score.tolist()
        if shape == "fail":
            raise ValueError("the model cannot compute this")
        label = model_input["city"].astype(str) + "-" + model_input["zip"].astype(str)
        return pd.DataFrame({"label": label, "score": score, "ratio": ratio})


mlflow.models.set_model(Scaled())
"""


def _training_table() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(7)
    rows = 40
    table = pd.DataFrame(
        {
            "city": np.array(["Oslo", "Bergen", "Tromsø"])[rng.integers(0, 3, rows)],
            "zip": np.array(["0150", "5003", "9008"])[rng.integers(0, 3, rows)],
            "rooms": rng.integers(1, 6, rows).astype(np.int64),
            "area": rng.uniform(20, 150, rows),
            "age": np.where(rng.uniform(size=rows) < 0.2, np.nan, rng.uniform(0, 90, rows)),
        }
    )
    price = table["area"] * 1000 + table["rooms"] * 5000 + rng.normal(0, 100, rows)
    return table, price


def _save_models(root: Path) -> dict[str, Path]:
    import lightgbm
    import mlflow
    import xgboost
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    table, price = _training_table()
    # Requirements given: inferring them would load each model once more in a subprocess.
    requirements = ["mlflow"]
    paths = {name: root / name for name in ("sklearn", "pyfunc", "xgboost", "lightgbm")}
    encode = OneHotEncoder(handle_unknown="ignore")
    columns = ColumnTransformer(
        [
            ("categories", encode, ["city", "zip"]),
            ("age", SimpleImputer(), ["age"]),
            ("numbers", "passthrough", ["rooms", "area"]),
        ]
    )
    pipeline = Pipeline([("columns", columns), ("model", LinearRegression())]).fit(table, price)
    mlflow.sklearn.save_model(
        pipeline,
        paths["sklearn"],
        signature=infer_signature(table, pipeline.predict(table)),
        pip_requirements=requirements,
        skops_trusted_types=["numpy.dtype"],  # OneHotEncoder's dtype parameter
    )
    code = root / "scaled.py"
    code.write_text(PYFUNC_CODE)
    example_output = pd.DataFrame(
        {"label": ["Oslo-0150"], "score": np.array([1.0], dtype=np.float32), "ratio": [1.0]}
    )
    mlflow.pyfunc.save_model(
        paths["pyfunc"],
        python_model=str(code),
        signature=infer_signature(table, example_output, params={"scale": 1.0, "shape": "frame"}),
        pip_requirements=requirements,
    )
    numbers = table[NUMERIC].astype(np.float64)
    boosted = xgboost.XGBRegressor(n_estimators=5, max_depth=2).fit(numbers, price)
    mlflow.xgboost.save_model(
        boosted,
        paths["xgboost"],
        signature=infer_signature(numbers, boosted.predict(numbers)),
        pip_requirements=requirements,
    )
    leaves = lightgbm.LGBMRegressor(n_estimators=5, min_child_samples=5, verbose=-1)
    leaves.fit(numbers, price)
    mlflow.lightgbm.save_model(
        leaves,
        paths["lightgbm"],
        signature=infer_signature(numbers, leaves.predict(numbers)),
        pip_requirements=requirements,
    )
    return paths


def _enter_all(
    stack: ExitStack, managers: dict[tuple[str, str], AbstractContextManager[Server]]
) -> dict[tuple[str, str], Server]:
    """Every server started at once (loading is mostly imports, which overlap well)."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = {key: pool.submit(manager.__enter__) for key, manager in managers.items()}
    started: dict[tuple[str, str], Server] = {}
    failures: list[BaseException] = []
    for key, future in futures.items():
        error = future.exception()
        if error is None:
            started[key] = future.result()
            stack.push(managers[key])
        else:
            failures.append(error)
    if failures:
        raise failures[0]
    return started


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Server, Server]]]:
    """Per model: (mlcycle serve, mlflow models serve)."""
    paths = _save_models(tmp_path_factory.mktemp("models"))
    logs = tmp_path_factory.mktemp("logs")
    managers: dict[tuple[str, str], AbstractContextManager[Server]] = {}
    for name, path in paths.items():
        managers[(name, "mlcycle")] = mlcycle_serving(str(path), logs, "--no-grpc")
        managers[(name, "mlflow")] = mlflow_serving(path, logs)
    with ExitStack() as stack:
        started = _enter_all(stack, managers)
        yield {name: (started[(name, "mlcycle")], started[(name, "mlflow")]) for name in paths}


@dataclass(frozen=True)
class Case:
    model: str
    name: str
    body: bytes
    content_type: str | None = JSON
    differs: tuple[int, int] | None = None
    """A deliberate difference: (what mlcycle answers, what MLflow answers)."""

    @property
    def id(self) -> str:
        return f"{self.model}-{self.name}"


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


HOUSE = {"city": "Oslo", "zip": "0150", "rooms": 3, "area": 70.5, "age": 12.0}
HOUSE_2 = {"city": "Tromsø", "zip": "9008", "rooms": 5, "area": 120.25, "age": None}
HOUSES = [HOUSE, HOUSE_2]
CSV_HOUSES = "city,zip,rooms,area,age\nOslo,0150,3,70.5,12.0\nTromsø,9008,5,120.25,\n"


def _with(**changes: Any) -> list[dict[str, Any]]:
    return [{**HOUSE, **changes}]


def _columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [record[key] for record in records] for key in records[0]}


def _table_cases(model: str) -> list[Case]:
    """The requests both table models (the pipeline and the pyfunc model) take alike."""
    rows = [[row[column] for column in COLUMNS] for row in HOUSES]
    split = {"columns": COLUMNS, "data": rows}
    return [
        # Every format MLflow reads, with a non-ASCII string and a missing optional value.
        Case(model, "split", _json({"dataframe_split": split})),
        Case(model, "split-index", _json({"dataframe_split": {**split, "index": [4, 9]}})),
        Case(model, "records", _json({"dataframe_records": HOUSES})),
        Case(model, "instances-records", _json({"instances": HOUSES})),
        Case(model, "instances-columns", _json({"instances": _columns(HOUSES)})),
        Case(model, "inputs-columns", _json({"inputs": _columns(HOUSES)})),
        Case(model, "inputs-records", _json({"inputs": HOUSES})),
        Case(model, "inputs-scalars", _json({"inputs": HOUSE})),
        Case(model, "csv", CSV_HOUSES.encode(), CSV),
        Case(model, "csv-bom", b"\xef\xbb\xbf" + CSV_HOUSES.encode(), CSV),
        Case(model, "csv-charset", CSV_HOUSES.encode(), "text/csv; charset=UTF-8"),
        Case(model, "json-bom", b"\xef\xbb\xbf" + _json({"dataframe_records": HOUSES}), JSON),
        Case(model, "json-charset", _json({"inputs": HOUSES}), "application/json; charset=utf-8"),
        # Coercions MLflow's schema enforcement makes.
        Case(model, "zip-as-number", _json({"dataframe_records": _with(zip=150)})),
        Case(model, "zip-as-number-inputs", _json({"inputs": _columns(_with(zip=150))})),
        Case(model, "double-as-text", _json({"dataframe_records": _with(area="70.5")})),
        Case(model, "double-as-text-inputs", _json({"inputs": _columns(_with(area="5.1"))})),
        Case(model, "long-as-integral-float", _json({"dataframe_records": _with(rooms=3.0)})),
        Case(model, "long-as-text", _json({"dataframe_records": _with(rooms="3")})),
        Case(model, "extra-column", _json({"dataframe_records": _with(garden=True)})),
        # Missing and infinite values.
        Case(model, "optional-null", _json({"dataframe_records": _with(age=None)})),
        Case(
            model, "optional-nan-literal", b'{"inputs": [' + _json(HOUSE)[:-1] + b', "age": NaN}]}'
        ),
        Case(model, "string-null", _json({"dataframe_records": _with(city=None)})),
        Case(model, "long-null", _json({"dataframe_records": _with(rooms=None)})),
        Case(model, "long-text-float", _json({"dataframe_records": _with(rooms="3.0")})),
        Case(model, "double-not-a-number", _json({"dataframe_records": _with(area="big")})),
        Case(model, "csv-long-empty", b"city,zip,rooms,area,age\nOslo,0150,,70.5,1\n", CSV),
        # The caller's mistakes.
        Case(model, "split-without-columns", _json({"dataframe_split": {"data": rows}})),
        Case(model, "split-extra-key", _json({"dataframe_split": {**split, "dtype": "x"}})),
        Case(
            model,
            "split-duplicate-column",
            _json(
                {
                    "dataframe_split": {
                        "columns": [*COLUMNS, "city"],
                        "data": [[*rows[0], "Bergen"]],
                    }
                }
            ),
        ),
        Case(model, "instances-rows", _json({"instances": rows})),
        Case(model, "inputs-rows", _json({"inputs": rows})),
        Case(model, "missing-required-column", _json({"inputs": {"city": ["Oslo"]}})),
        Case(model, "no-rows", _json({"dataframe_records": []})),
        Case(model, "two-formats", _json({"inputs": HOUSES, "instances": HOUSES})),
        Case(model, "no-format", _json({"rows": HOUSES})),
        Case(model, "not-json", b"{inputs: 1}"),
        Case(model, "json-list", b"[1, 2]"),
        Case(model, "csv-not-utf8", b"city,zip,rooms,area,age\n\xff,0150,3,70.5,1\n", CSV),
        Case(model, "text-plain", _json({"inputs": HOUSES}), "text/plain"),
        Case(model, "form", _json({"inputs": HOUSES}), "application/x-www-form-urlencoded"),
        Case(model, "upper-case-type", _json({"inputs": HOUSES}), "Application/JSON"),
        Case(model, "latin-1", _json({"inputs": HOUSES}), "application/json; charset=latin-1"),
        Case(model, "type-parameter", _json({"inputs": HOUSES}), "application/json; format=split"),
        Case(model, "empty-parameter", _json({"inputs": HOUSES}), "application/json;"),
        # MLflow truncates 3.5 to 3, makes True 1 and pads a short row with NaN: values
        # the caller did not send.
        Case(
            model,
            "long-fraction",
            _json({"dataframe_records": _with(rooms=3.5)}),
            differs=(400, 200),
        ),
        Case(
            model,
            "short-row",
            _json({"dataframe_split": {"columns": COLUMNS, "data": [rows[0], rows[1][:4]]}}),
            differs=(400, 200),
        ),
        Case(
            model,
            "long-boolean",
            _json({"dataframe_records": _with(rooms=True)}),
            differs=(400, 200),
        ),
        # MLflow fails with a 500 on a request without a Content-Type; mlcycle reads JSON.
        Case(model, "no-content-type", _json({"inputs": HOUSES}), None, differs=(200, 500)),
    ]


def _pipeline_cases() -> list[Case]:
    model = "sklearn"
    return [
        # The pipeline imputes age but passes area straight to a regression that refuses NaN
        # and infinity: refused before predict here, by the model's raise in MLflow.
        Case(model, "passthrough-null", _json({"dataframe_records": _with(area=None)})),
        Case(
            model, "passthrough-nan", b'{"inputs": {"area": [NaN], ' + _json(_columns([HOUSE]))[1:]
        ),
        Case(
            model,
            "infinite",
            b'{"dataframe_records": [{"area": Infinity, ' + _json(HOUSE)[1:] + b"]}",
        ),
        Case(model, "imputed-infinite", _json({"inputs": _columns(_with(age=float("inf")))})),
        Case(model, "csv-passthrough-empty", b"city,zip,rooms,area,age\nOslo,0150,3,,1\n", CSV),
        Case(model, "csv-imputed-empty", b"city,zip,rooms,area,age\nOslo,0150,3,70.5,\n", CSV),
        Case(model, "parquet", _parquet(pd.DataFrame(HOUSES)), PARQUET),
        # Params are for models with a params schema; MLflow ignores them elsewhere.
        Case(model, "ignored-params", _json({"inputs": HOUSES, "params": {"scale": "x"}})),
        Case(
            model,
            "params-not-an-object",
            _json({"inputs": HOUSES, "params": [1]}),
            differs=(400, 200),
        ),
        # An optional column left out: filled with missing values, which the pipeline imputes;
        # MLflow passes a frame without it, which the pipeline cannot take.
        Case(
            model,
            "optional-left-out",
            _json({"inputs": {k: [v] for k, v in HOUSE.items() if k != "age"}}),
            differs=(200, 400),
        ),
    ]


def _pyfunc_cases() -> list[Case]:
    model = "pyfunc"

    def params(records: list[dict[str, Any]] = HOUSES, **values: Any) -> bytes:
        return _json({"dataframe_records": records, "params": values})

    return [
        *(
            Case(model, f"output-{shape}", params(shape=shape, scale=0.3))
            for shape in ("frame", "series", "array", "dict", "list")
        ),
        # NaN (age missing) and infinity (age 0) in every output shape.
        *(
            Case(model, f"non-finite-{shape}", params([*HOUSES, {**HOUSE, "age": 0}], shape=shape))
            for shape in ("frame", "series", "array", "dict")
        ),
        Case(model, "required-null", _json({"dataframe_records": _with(area=None)})),
        Case(model, "param-int-for-double", params(scale=2)),
        Case(model, "param-wrong-type", params(scale="big")),
        Case(model, "param-bool-for-double", params(scale=True)),
        Case(model, "param-number-for-string", params(shape=3)),
        Case(model, "param-unknown", params(colour="red")),
        Case(model, "params-not-an-object", _json({"inputs": HOUSES, "params": [1]})),
    ]


def _booster_cases(model: str) -> list[Case]:
    row = {"rooms": 3.0, "area": 70.5, "age": 12.0}
    return [
        Case(
            model,
            "split",
            _json(
                {
                    "dataframe_split": {
                        "columns": NUMERIC,
                        "data": [[3, 70.5, 12.0], [2, 50.25, None]],
                    }
                }
            ),
        ),
        Case(
            model,
            "records-null",
            _json({"dataframe_records": [row, {**row, "area": None, "age": None}]}),
        ),
        Case(
            model,
            "inputs-text",
            _json({"inputs": {"rooms": [3, 4], "area": [70.5, "80"], "age": [None, 1]}}),
        ),
        Case(model, "nan-literal", b'{"dataframe_records": [{"rooms": 3, "area": NaN, "age": 1}]}'),
        Case(
            model, "infinite", b'{"dataframe_records": [{"rooms": 3, "area": -Infinity, "age": 1}]}'
        ),
        Case(model, "csv-empty", b"rooms,area,age\n3,70.5,\n4,,2\n", CSV),
        Case(model, "parquet", _parquet(pd.DataFrame([row, {**row, "age": np.nan}])), PARQUET),
        Case(model, "instances-rows", _json({"instances": [[3, 70.5, 12.0]]})),
        Case(model, "text", _json({"dataframe_records": [{**row, "rooms": "three"}]})),
        Case(
            model,
            "optional-left-out",
            _json({"inputs": {"rooms": [3], "area": [70.5]}}),
            differs=(200, 400),
        ),
        # No rows: the server refuses an empty request before predict, for every model;
        # MLflow calls predict, which xgboost answers with an empty list (lightgbm raises).
        Case(
            model,
            "no-rows",
            _json({"inputs": {name: [] for name in NUMERIC}}),
            differs=(400, 200) if model == "xgboost" else None,
        ),
    ]


CASES = [
    *_table_cases("sklearn"),
    *_pipeline_cases(),
    *_table_cases("pyfunc"),
    *_pyfunc_cases(),
    *_booster_cases("xgboost"),
    *_booster_cases("lightgbm"),
]


def _post(server: Server, case: Case) -> requests.Response:
    # requests sends no Content-Type for raw bytes unless told one.
    headers = {} if case.content_type is None else {"Content-Type": case.content_type}
    return requests.post(server.url + "/invocations", data=case.body, headers=headers, timeout=60)


def _read_back(response: requests.Response) -> Any:
    # NaN and Infinity (which MLflow writes, as Python's json does) read back as their names.
    return json.loads(response.content, parse_constant=str)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_mlcycle_answers_what_mlflow_answers(
    servers: dict[str, tuple[Server, Server]], case: Case
) -> None:
    ours, reference = (_post(server, case) for server in servers[case.model])
    if case.differs is not None:
        assert (ours.status_code, reference.status_code) == case.differs, ours.text
        return
    assert ours.status_code == reference.status_code, (ours.text, reference.text)
    if ours.status_code == 200:
        assert _read_back(ours) == _read_back(reference)
    elif ours.status_code == 400:
        assert ours.json()["error_code"] == "BAD_REQUEST"


def test_numbers_are_written_as_mlflow_writes_them(
    servers: dict[str, tuple[Server, Server]],
) -> None:
    """float32 outputs as the doubles MLflow writes, NaN and Infinity as its literals."""
    records = [{**HOUSE, "area": 70.3, "age": 0}, HOUSE_2]
    case = Case("pyfunc", "", _json({"dataframe_records": records, "params": {"shape": "dict"}}))
    ours, reference = (_post(server, case) for server in servers["pyfunc"])
    assert ours.status_code == reference.status_code == 200
    assert _read_back(ours) == _read_back(reference)
    predictions = _read_back(ours)["predictions"]
    # float32's 70.3 is the double 70.30000305175781, not float32's shortest text, "70.3".
    assert predictions["score"][0] == float(np.float32(70.3))
    assert predictions["score"][0] != 70.3
    assert predictions["ratio"] == ["Infinity", "NaN"]


def test_a_model_that_raises_is_a_500_here_and_a_400_in_mlflow(
    servers: dict[str, tuple[Server, Server]],
) -> None:
    """The model's own failure on valid input is counted against the model (canary analysis
    reads 5xx), where MLflow answers 400 "unexpected error while evaluating the model"."""
    ours, reference = servers["pyfunc"]
    case = Case("pyfunc", "", _json({"inputs": HOUSES, "params": {"shape": "fail"}}))
    assert _post(ours, case).status_code == 500
    assert _post(reference, case).status_code == 400
