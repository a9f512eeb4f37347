"""The gRPC port's pure parts: status codes as canary analysis reads them, header pins
from metadata through the HTTP routing policy, the metadata sent on, addresses."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlcycle.adapters.servingmetrics import backend_sample
from mlcycle.api.routerconfig import Endpoint, RouterConfig
from mlcycle.dataplane.grpc.status import HTTP_STATUS_OF_GRPC
from mlcycle.dataplane.router.grpc_proxy import (
    channel_target,
    client_host,
    forwarded_metadata,
    pinning_values,
)
from mlcycle.dataplane.router.metrics import RouterMetrics
from mlcycle.dataplane.router.selection import RoutingPolicy

pytestmark = pytest.mark.unit

Code = grpc.StatusCode
SERVER_FAULTS = {
    Code.UNKNOWN: 500,
    Code.INTERNAL: 500,
    Code.DATA_LOSS: 500,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}
CLIENT_FAULTS = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.CANCELLED: 499,
}


def test_every_grpc_status_stands_for_one_http_status() -> None:
    assert HTTP_STATUS_OF_GRPC == {
        Code.OK: 200,
        **SERVER_FAULTS,
        **CLIENT_FAULTS,
    }


def test_canary_analysis_counts_grpc_failures_as_errors_and_rejections_as_client_errors() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    for code in Code:
        metrics.observe_request("iris", "canary", "2", HTTP_STATUS_OF_GRPC[code], 0.01)
    sample = backend_sample([generate_latest(registry).decode()], "iris", "canary", "2")
    assert sample.requests == len(Code)
    assert sample.errors == len(SERVER_FAULTS)
    assert sample.client_errors == len(CLIENT_FAULTS)


POLICY = RoutingPolicy(
    RouterConfig.model_validate(
        {
            "service": "iris",
            "backends": {
                "stable": {"endpoints": ["127.0.0.1:9001"]},
                "canary": {"endpoints": ["127.0.0.1:9002"]},
            },
            "weights": {"stable": 1},
            "headerRoutes": [
                {"header": "X-Mlcycle-Version", "value": "canary", "backend": "canary"},
                {"header": "x-beta-bin", "backend": "canary"},
            ],
        }
    ),
    {"stable", "canary"},
)


@pytest.mark.parametrize(
    ("metadata", "backend"),
    [
        pytest.param([("x-mlcycle-version", "canary")], "canary", id="value"),
        pytest.param([("x-mlcycle-version", "other")], None, id="other value"),
        pytest.param(
            [("x-mlcycle-version", "other"), ("x-mlcycle-version", "canary")],
            None,
            id="the first value counts, as in HTTP",
        ),
        pytest.param([("x-beta-bin", b"\x00")], "canary", id="binary metadata"),
        pytest.param([("user-agent", "grpc-python")], None, id="no pin"),
    ],
)
def test_metadata_pins_through_the_http_policy(
    metadata: list[tuple[str, str | bytes]], backend: str | None
) -> None:
    assert POLICY.pinned_backend(pinning_values(metadata, POLICY.pin_headers)) == backend


def test_metadata_sent_on_extends_x_forwarded_for_and_leaves_grpc_s_user_agent() -> None:
    metadata = [
        ("user-agent", "grpc-python/1.85"),
        ("x-mlcycle-version", "canary"),
        ("x-forwarded-for", "192.0.2.1"),
        ("trace-bin", b"\x01\x02"),
    ]
    assert forwarded_metadata(metadata, "10.0.0.7") == (
        ("x-mlcycle-version", "canary"),
        ("trace-bin", b"\x01\x02"),
        ("x-forwarded-for", "192.0.2.1, 10.0.0.7"),
    )
    assert forwarded_metadata([], "") == ()


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:%5B::1%5D:51234", "::1"),
        ("ipv6:[fd00::7]:51234", "fd00::7"),
        ("unix:/tmp/socket", ""),
    ],
)
def test_client_host_of_grpc_peer(peer: str, host: str) -> None:
    assert client_host(peer) == host


def test_channel_targets_bracket_ipv6() -> None:
    assert channel_target(Endpoint("10.0.0.1", 8081)) == "10.0.0.1:8081"
    assert channel_target(Endpoint("fd00::1", 8081)) == "[fd00::1]:8081"
