"""PrometheusClient's reading of the HTTP API's answers, against a fake server that answers
as Prometheus documents (the real server is in tests/integration/test_prometheus.py)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlcycle.adapters.errors import InvalidError, UnavailableError
from mlcycle.adapters.prometheus import PrometheusClient
from mlcycle.dev.processes import free_port

pytestmark = pytest.mark.unit


def _success(result_type: str, result: Any) -> tuple[int, Any]:
    return 200, {"status": "success", "data": {"resultType": result_type, "result": result}}


def _sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1767225600.0, value]}


# Query text → (HTTP status, body); bodies that are not dicts are sent as raw text.
ANSWERS: dict[str, tuple[int, Any]] = {
    "scalar(up)": _success("scalar", [1767225600.0, "0.5"]),
    "sum(up)": _success("vector", [_sample("3")]),
    "absent_series": _success("vector", []),
    "ratio_over_no_requests": _success("vector", [_sample("NaN")]),
    "infinite": _success("vector", [_sample("+Inf")]),
    "up": _success("vector", [_sample("1", job="a"), _sample("1", job="b")]),
    "up[5m]": _success("matrix", [{"metric": {}, "values": [[1767225600.0, "1"]]}]),
    "sum(": (
        400,
        {
            "status": "error",
            "errorType": "bad_data",
            "error": "1:5: parse error: unclosed left parenthesis",
        },
    ),
    "a * on() b": (
        422,
        {
            "status": "error",
            "errorType": "execution",
            "error": "many-to-many matching not allowed",
        },
    ),
    "overloaded": (
        503,
        {"status": "error", "errorType": "timeout", "error": "query timed out in query execution"},
    ),
    "not_prometheus": (404, "<html>404 page not found</html>"),
}
SLOW_QUERY = "slow"


class FakePrometheus(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, dict[str, list[str]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        type(self).requests.append((self.path, self.headers.get("Content-Type", ""), form))
        query = form["query"][0]
        if query == SLOW_QUERY:
            time.sleep(1)
        status, body = ANSWERS.get(query, (200, {}))
        payload = json.dumps(body) if isinstance(body, dict) else str(body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting, as the timeout test wants

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/prometheus/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("scalar(up)", 0.5),
        ("sum(up)", 3.0),
        ("absent_series", None),
        ("ratio_over_no_requests", None),
        ("infinite", float("inf")),
    ],
)
def test_values(prometheus_url: str, query: str, value: float | None) -> None:
    assert PrometheusClient(prometheus_url).query_scalar(query) == value


def test_query_is_posted_as_a_form_under_the_path_prefix(prometheus_url: str) -> None:
    FakePrometheus.requests.clear()
    PrometheusClient(prometheus_url, timeout_s=3).query_scalar("sum(up)")
    [(path, content_type, form)] = FakePrometheus.requests
    assert path == "/prometheus/api/v1/query"
    assert content_type == "application/x-www-form-urlencoded"
    assert form == {"query": ["sum(up)"], "timeout": ["3s"]}


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ("up", InvalidError, "returned 2 series, expected one"),
        ("up[5m]", InvalidError, "returned a matrix, expected a scalar or an instant vector"),
        ("sum(", InvalidError, "parse error: unclosed left parenthesis"),
        ("a * on() b", InvalidError, "many-to-many matching not allowed"),
        ("overloaded", UnavailableError, "Prometheus unavailable: query failed (timeout)"),
        ("not_prometheus", UnavailableError, "HTTP 404, not a Prometheus API answer"),
    ],
)
def test_errors(prometheus_url: str, query: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        PrometheusClient(prometheus_url).query_scalar(query)
    assert message in str(raised.value)


def test_no_answer_in_time_is_unavailable(prometheus_url: str) -> None:
    with pytest.raises(UnavailableError, match="Prometheus unavailable"):
        PrometheusClient(prometheus_url, timeout_s=0.2).query_scalar(SLOW_QUERY)


def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(UnavailableError, match="Prometheus unavailable"):
        PrometheusClient(f"http://127.0.0.1:{free_port()}").query_scalar("up")
