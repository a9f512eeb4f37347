"""EndpointSlices to ready endpoints, ports resolved per backend, the routing table."""

from __future__ import annotations

from typing import Any

import pytest

from mlcycle.api.routerconfig import BackendConfig, Endpoint, RouterConfig
from mlcycle.dataplane.router.table import (
    DiscoveredEndpoint,
    RoutingTable,
    ready_endpoints,
    resolve_endpoints,
)

pytestmark = pytest.mark.unit

HTTP = (("http", 8080), ("metrics", 9090))


def _slice(
    endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "iris-stable"}},
        "ports": ports
        if ports is not None
        else [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090}],
        "endpoints": endpoints,
    }


def _endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


@pytest.mark.parametrize(
    ("slices", "addresses"),
    [
        pytest.param([_slice([_endpoint("10.0.0.1", ready=True)])], ["10.0.0.1"], id="ready"),
        pytest.param([_slice([_endpoint("10.0.0.1")])], ["10.0.0.1"], id="no condition is ready"),
        pytest.param([_slice([_endpoint("10.0.0.1", ready=False)])], [], id="not ready"),
        pytest.param(
            [_slice([_endpoint("10.0.0.1", ready=True, terminating=True)])], [], id="terminating"
        ),
        pytest.param([_slice([{"addresses": [], "conditions": {}}])], [], id="no address"),
        pytest.param(
            [
                _slice([_endpoint("10.0.0.2")]),
                _slice([_endpoint("10.0.0.1"), _endpoint("10.0.0.2")]),
            ],
            ["10.0.0.1", "10.0.0.2"],
            id="several slices, deduplicated, sorted",
        ),
        pytest.param([_slice([])], [], id="empty slice"),
    ],
)
def test_ready_endpoints(slices: list[dict[str, Any]], addresses: list[str]) -> None:
    assert [e.address for e in ready_endpoints(slices)] == addresses


def test_slice_ports_are_kept_by_name_and_udp_is_ignored() -> None:
    slices = [
        _slice(
            [_endpoint("10.0.0.1")],
            [{"name": "http", "port": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
        )
    ]
    assert ready_endpoints(slices) == (DiscoveredEndpoint("10.0.0.1", (("http", 8080),)),)


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        pytest.param(None, [Endpoint("10.0.0.1", 8080)], id="default: first port"),
        pytest.param("metrics", [Endpoint("10.0.0.1", 9090)], id="by name"),
        pytest.param("missing", [], id="unknown name: no endpoint"),
        pytest.param(7000, [Endpoint("10.0.0.1", 7000)], id="number: used as given"),
    ],
)
def test_port_resolution(port: int | str | None, expected: list[Endpoint]) -> None:
    backend = BackendConfig(service="iris-stable", port=port)
    assert list(resolve_endpoints(backend, [DiscoveredEndpoint("10.0.0.1", HTTP)])) == expected


def test_static_and_discovered_endpoints_combine() -> None:
    backend = BackendConfig(service="iris-stable", endpoints=("127.0.0.1:9001",))
    assert resolve_endpoints(backend, [DiscoveredEndpoint("10.0.0.1", HTTP)]) == (
        Endpoint("127.0.0.1", 9001),
        Endpoint("10.0.0.1", 8080),
    )


CONFIG = RouterConfig.model_validate(
    {
        "service": "iris",
        "backends": {
            "stable": {"service": "iris-stable"},
            "canary": {"service": "iris-canary", "version": "4"},
        },
        "weights": {"stable": 3, "canary": 1},
    }
)


def test_table_joins_config_and_discovery_and_takes_endpoints_in_turn() -> None:
    discovered = {
        "iris-stable": (DiscoveredEndpoint("10.0.0.1", HTTP), DiscoveredEndpoint("10.0.0.2", HTTP)),
        "iris-canary": (),
    }
    table = RoutingTable.build(CONFIG, discovered)
    assert table.available() == {"stable"}
    assert table.backends["canary"].version == "4"
    stable = table.backends["stable"]
    turns = [stable.next_endpoint() for _ in range(4)]
    assert set(turns) == {Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080)}
    assert turns[0] != turns[1]
    assert table.backends["canary"].next_endpoint() is None


def test_policy_survives_endpoint_changes_but_not_config_or_availability_changes() -> None:
    one = {
        "iris-stable": (DiscoveredEndpoint("10.0.0.1", HTTP),),
        "iris-canary": (DiscoveredEndpoint("10.0.1.1", HTTP),),
    }
    two = {**one, "iris-stable": (*one["iris-stable"], DiscoveredEndpoint("10.0.0.2", HTTP))}
    first = RoutingTable.build(CONFIG, one)
    assert RoutingTable.build(CONFIG, two, first).policy is first.policy
    reweighted = CONFIG.model_copy(update={"weights": {"stable": 1, "canary": 1}})
    assert RoutingTable.build(reweighted, two, first).policy is not first.policy
    canary_gone = {**one, "iris-canary": ()}
    assert RoutingTable.build(CONFIG, canary_gone, first).policy is not first.policy


SERVED = (("http", 8080), ("grpc", 8081))


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        pytest.param(
            BackendConfig(service="iris-v1", port="http", grpc_port="grpc"),
            [Endpoint("10.0.0.1", 8081)],
            id="by name",
        ),
        pytest.param(
            BackendConfig(service="iris-v1", grpc_port=9000),
            [Endpoint("10.0.0.1", 9000)],
            id="number",
        ),
        pytest.param(
            BackendConfig(service="iris-v1", port="http"), [], id="none named: not the first port"
        ),
        pytest.param(
            BackendConfig(service="iris-v1", grpc_port="missing"), [], id="unknown name: none"
        ),
        pytest.param(
            BackendConfig(
                service="iris-v1", endpoints=("127.0.0.1:9001",), grpc_endpoints=("127.0.0.1:9101",)
            ),
            [Endpoint("127.0.0.1", 9101)],
            id="static gRPC endpoints, not HTTP's",
        ),
    ],
)
def test_grpc_port_resolution(backend: BackendConfig, expected: list[Endpoint]) -> None:
    discovered = [DiscoveredEndpoint("10.0.0.1", SERVED)]
    assert list(resolve_endpoints(backend, discovered, "grpc")) == expected


def test_each_transport_has_its_own_table_availability_and_exact_split() -> None:
    config = RouterConfig.model_validate(
        {
            "service": "iris",
            "backends": {
                "stable": {"service": "iris-v1", "port": "http", "grpcPort": "grpc"},
                # No gRPC here: its gRPC share goes to stable, its HTTP share stays its own.
                "canary": {"service": "iris-v2", "port": "http"},
            },
            "weights": {"stable": 3, "canary": 1},
        }
    )
    discovered = {
        "iris-v1": (DiscoveredEndpoint("10.0.0.1", SERVED),),
        "iris-v2": (DiscoveredEndpoint("10.0.1.1", SERVED),),
    }
    http = RoutingTable.build(config, discovered)
    grpc = RoutingTable.build(config, discovered, transport="grpc")
    assert http.available() == {"stable", "canary"}
    assert grpc.available() == {"stable"}
    assert grpc.endpoints() == {Endpoint("10.0.0.1", 8081)}
    assert http.policy is not grpc.policy
    # Interleaved picks of the two transports leave each split exact.
    picks: dict[str, list[str | None]] = {"http": [], "grpc": []}
    for _ in range(8):
        picks["http"].append(http.policy.choose({}).primary)
        picks["grpc"].append(grpc.policy.choose({}).primary)
    assert picks["http"].count("canary") == 2
    assert picks["grpc"] == ["stable"] * 8
