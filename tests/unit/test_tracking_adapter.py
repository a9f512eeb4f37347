"""Pure parts of the MLflow tracking adapter: error mapping, URLs, dataset inputs."""

from __future__ import annotations

import json

import pytest
import requests
import urllib3.exceptions
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)

from mlcycle.adapters.errors import (
    AdapterError,
    InvalidError,
    NotFoundError,
    UnavailableError,
)
from mlcycle.adapters.mlflowclient import map_mlflow_error
from mlcycle.adapters.tracking import DatasetInput, dataset_entity, run_url_for

pytestmark = pytest.mark.unit

URL_WITH_SECRET = "http://operator:s3cr3t@mlflow.example:5000/api/2.0/mlflow/runs/get?run_id=1"


def wrapped_like_mlflow(cause: BaseException) -> MlflowException:
    """What `mlflow.utils.rest_utils.http_request` raises: the URL in the text, the cause
    chained implicitly (`raise` inside `except`)."""
    try:
        try:
            raise cause
        except Exception as error:
            # Implicit chaining on purpose: it is how MLflow 3.17 raises it.
            message = f"API request to {URL_WITH_SECRET} failed with exception {error}"
            raise MlflowException(message)  # noqa: B904
    except MlflowException as wrapped:
        return wrapped


def connection_refused() -> BaseException:
    """The chain requests and urllib3 build for a closed port (each raised inside `except`)."""
    try:
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError as refused:
                raise urllib3.exceptions.NewConnectionError(None, URL_WITH_SECRET) from refused  # type: ignore[arg-type]
        except urllib3.exceptions.NewConnectionError as new_connection:
            raise requests.exceptions.ConnectionError(new_connection) from new_connection
    except requests.exceptions.ConnectionError as connection_error:
        return connection_error


def too_many_503() -> BaseException:
    try:
        raise urllib3.exceptions.ResponseError("too many 503 error responses")
    except urllib3.exceptions.ResponseError as response_error:
        try:
            raise requests.exceptions.RetryError(URL_WITH_SECRET) from response_error
        except requests.exceptions.RetryError as retry_error:
            return retry_error


@pytest.mark.parametrize(
    ("error", "expected_type", "expected_text"),
    [
        pytest.param(
            wrapped_like_mlflow(connection_refused()),
            UnavailableError,
            "mlflow unavailable: get run: connection refused",
            id="refused",
        ),
        pytest.param(
            wrapped_like_mlflow(requests.exceptions.ReadTimeout(URL_WITH_SECRET)),
            UnavailableError,
            "mlflow unavailable: get run: timed out",
            id="read-timeout",
        ),
        pytest.param(
            wrapped_like_mlflow(too_many_503()),
            UnavailableError,
            "too many 503 error responses",
            id="http-503-after-retries",
        ),
        pytest.param(
            RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "overloaded"}),  # type: ignore[no-untyped-call]
            UnavailableError,
            "mlflow unavailable: get run: TEMPORARILY_UNAVAILABLE",
            id="temporarily-unavailable",
        ),
        pytest.param(
            MlflowException(f"{URL_WITH_SECRET} answered 500"),
            UnavailableError,
            "INTERNAL_ERROR",
            id="internal-error",
        ),
        pytest.param(
            RestException({"error_code": "PERMISSION_DENIED", "message": "no"}),  # type: ignore[no-untyped-call]
            UnavailableError,
            "PERMISSION_DENIED",
            id="operator-credentials",
        ),
        pytest.param(
            MlflowException("Run with id=abc not found", RESOURCE_DOES_NOT_EXIST),
            NotFoundError,
            "get run: Run with id=abc not found",
            id="not-found",
        ),
        pytest.param(
            MlflowException("Invalid value for param key", INVALID_PARAMETER_VALUE),
            InvalidError,
            "get run: Invalid value for param key",
            id="invalid",
        ),
    ],
)
def test_errors_map_to_domain_types_with_safe_messages(
    error: BaseException, expected_type: type[AdapterError], expected_text: str
) -> None:
    mapped = map_mlflow_error(error, "get run")

    assert type(mapped) is expected_type
    assert expected_text in str(mapped)
    assert "s3cr3t" not in str(mapped)
    assert "operator:" not in str(mapped)


def test_unknown_codes_stay_generic_adapter_errors() -> None:
    mapped = map_mlflow_error(MlflowException("exists", RESOURCE_ALREADY_EXISTS), "create")

    assert type(mapped) is AdapterError
    assert "RESOURCE_ALREADY_EXISTS" in str(mapped)


def test_unavailable_error_names_its_service() -> None:
    error = UnavailableError("mlflow", f"call to {URL_WITH_SECRET} failed")

    assert error.service == "mlflow"
    assert str(error) == (
        "mlflow unavailable: call to http://mlflow.example:5000/api/2.0/mlflow/runs/get?… failed"
    )


@pytest.mark.parametrize(
    ("tracking_uri", "expected"),
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000/#/experiments/3/runs/abc"),
        ("https://u:p@mlflow.example/", "https://mlflow.example/#/experiments/3/runs/abc"),
        ("https://mlflow.example/ml/?x=1", "https://mlflow.example/ml/#/experiments/3/runs/abc"),
        ("http://[::1]:5000", "http://[::1]:5000/#/experiments/3/runs/abc"),
    ],
)
def test_run_url_is_the_ui_page_without_credentials(tracking_uri: str, expected: str) -> None:
    assert run_url_for(tracking_uri, "3", "abc") == expected


def test_dataset_input_fits_mlflow_limits_and_names_the_file() -> None:
    entity = dataset_entity(
        DatasetInput(uri="s3://data/iris/train.csv", digest="sha256:" + "f" * 64, version="7")
    )

    assert entity.dataset.name == "train.csv"
    assert entity.dataset.digest == ("sha256:" + "f" * 64)[:36]
    assert entity.dataset.source_type == "s3"
    assert json.loads(entity.dataset.source) == {"uri": "s3://data/iris/train.csv"}
    assert {tag.key: tag.value for tag in entity.tags} == {
        "mlflow.data.context": "training",
        "mlcycle.dev/dataset-version": "7",
    }


def test_dataset_without_digest_gets_a_stable_one_from_uri_and_version() -> None:
    first = dataset_entity(DatasetInput(uri="https://data.example/iris/", version="1"))
    again = dataset_entity(DatasetInput(uri="https://data.example/iris/", version="1"))
    other = dataset_entity(DatasetInput(uri="https://data.example/iris/", version="2"))

    assert first.dataset.digest == again.dataset.digest != other.dataset.digest
    assert len(first.dataset.digest) == 36
    assert first.dataset.name == "iris"
    assert first.dataset.source_type == "uri"
