"""Model server error answers: a class and an id for the log, never the exception's text,
which may quote a URL with credentials or a key; the log has the text, redacted."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from mlcycle.dataplane.server.app import ModelServer
from mlcycle.dataplane.server.config import ServerConfig
from mlcycle.dataplane.server.flavors import LoadedModel
from mlcycle.dataplane.server.signature import Signature
from mlcycle.dataplane.server.validation import InputValidator

pytestmark = pytest.mark.unit

PASSWORD = "pw-0b6c1d2e"
LEAKY = f"cannot reach http://operator:{PASSWORD}@mlflow.example:5000/api/2.0/x"


def _raising(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(LEAKY)


def _request(server: ModelServer, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
    }

    async def call() -> None:
        server.serve_model(
            LoadedModel(
                flavor="python_function",
                predict=_raising,
                signature=Signature(),
                validator=InputValidator(Signature(), "dataframe"),
            )
        )
        await server(scope, receive, send)

    asyncio.run(call())
    status = int(sent[0]["status"])
    document: dict[str, Any] = json.loads(sent[1]["body"])
    return status, document


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/invocations", b'{"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}', "message"),
        (
            "/v2/models/m/infer",
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}]}',
            "error",
        ),
    ],
)
def test_a_failing_prediction_answers_its_class_and_an_id_and_logs_the_redacted_text(
    path: str, body: bytes, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = ModelServer(ServerConfig(model_uri="models:/m/1", model_name="m", model_version="1"))
    status, document = _request(server, path, body)

    assert status == 500
    message = document[field]
    assert "RuntimeError" in message
    assert "cannot reach" not in message
    assert PASSWORD not in message
    error_id = message.split("error id ")[1].split()[0]
    logged = [r.getMessage() for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1
    assert "cannot reach http://mlflow.example:5000/api/2.0/x" in logged[0]
    assert PASSWORD not in caplog.text


def test_a_model_that_cannot_load_says_why_without_the_credentials_of_its_uri() -> None:
    config = ServerConfig(
        model_uri=f"http://operator:{PASSWORD}@127.0.0.1:9/model",
        model_name="m",
        load_retry_max_seconds=1,
    )
    server = ModelServer(config)

    def first_failure() -> None:
        deadline = time.monotonic() + 30
        while server.not_ready_reason == "model is loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        server._stopping.set()

    async def scenario() -> None:
        server.start_loading()
        await asyncio.to_thread(first_failure)

    asyncio.run(scenario())
    assert "could not be loaded" in server.not_ready_reason
    assert "http://127.0.0.1:9/model" in server.not_ready_reason
    assert PASSWORD not in server.not_ready_reason
