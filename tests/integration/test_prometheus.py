"""PrometheusClient against a real Prometheus server (the stack's optional component)
scraping a real prometheus-client exporter: live values, no data, several series, a query
Prometheus refuses, and an outage."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from mlcycle.adapters.errors import InvalidError, UnavailableError
from mlcycle.adapters.prometheus import PrometheusClient
from mlcycle.dev.processes import free_port
from tests.harness import eventually

pytestmark = pytest.mark.integration

REQUESTS = "mlcycle_test_requests_total"
PREDICTIONS = "mlcycle_test_predictions_total"


@dataclass
class Exporter:
    target: str
    requests: Counter
    predictions: Counter


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    """A /metrics endpoint of its own registry, so only these series are scraped."""
    registry = CollectorRegistry()
    requests = Counter("mlcycle_test_requests", "Requests served", registry=registry)
    predictions = Counter(
        "mlcycle_test_predictions", "Predictions by version", ["version"], registry=registry
    )
    predictions.labels(version="v1").inc()
    predictions.labels(version="v2").inc()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(f"127.0.0.1:{port}", requests, predictions)
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def prometheus(stack: Any, exporter: Exporter) -> Iterator[str]:
    # Installs the Debian package first when the machine lacks it (CI runs as root).
    url: str = stack.start_prometheus([exporter.target])
    try:
        yield url
    finally:
        stack.stop_prometheus()


def test_query_follows_the_scraped_counter(stack: Any, prometheus: str, exporter: Exporter) -> None:
    client = PrometheusClient(prometheus)
    query = f'sum({REQUESTS}{{instance="{exporter.target}"}})'
    exporter.requests.inc(7)
    eventually(
        "Prometheus to scrape requests=7", lambda: client.query_scalar(query) == 7, timeout=30
    )
    exporter.requests.inc(5)
    eventually(
        "Prometheus to scrape requests=12", lambda: client.query_scalar(query) == 12, timeout=30
    )
    # Same targets: the running server is kept, not restarted.
    pid = stack.processes.find("prometheus").pid
    assert stack.start_prometheus([exporter.target]) == prometheus
    assert stack.processes.find("prometheus").pid == pid


def test_no_data_several_series_and_refused_queries(prometheus: str, exporter: Exporter) -> None:
    client = PrometheusClient(prometheus)
    # Scoped to this run's exporter: a reused stack keeps earlier runs' series.
    predictions = f'{PREDICTIONS}{{instance="{exporter.target}"}}'
    eventually(
        "both prediction series scraped",
        lambda: client.query_scalar(f"count({predictions})") == 2,
        timeout=30,
    )
    assert client.query_scalar(f'{PREDICTIONS}{{version="v9"}}') is None
    assert client.query_scalar("scalar(vector(0.25))") == 0.25
    assert client.query_scalar(f'sum(rate({PREDICTIONS}{{version="v9"}}[1m]))') is None

    with pytest.raises(InvalidError, match="returned 2 series, expected one"):
        client.query_scalar(predictions)
    with pytest.raises(InvalidError, match="parse error") as refused:
        client.query_scalar(f"sum({predictions}")
    assert refused.value.message.startswith("Prometheus refused query")
    with pytest.raises(InvalidError, match="returned a matrix"):
        client.query_scalar(f"{predictions}[1m]")


def test_stopped_prometheus_is_unavailable_until_it_returns(
    stack: Any, prometheus: str, exporter: Exporter
) -> None:
    client = PrometheusClient(prometheus, timeout_s=2)
    query = f'sum({REQUESTS}{{instance="{exporter.target}"}})'
    stack.stop_prometheus()
    with pytest.raises(UnavailableError, match="Prometheus unavailable"):
        client.query_scalar(query)
    # Back on the same URL with the same data directory.
    assert stack.start_prometheus([exporter.target]) == prometheus
    eventually(
        "the series after the restart",
        lambda: client.query_scalar(query) is not None,
        timeout=30,
    )
