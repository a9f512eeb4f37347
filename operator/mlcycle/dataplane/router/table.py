"""The routing table: a configuration joined with the endpoints found for its backends.

Pure: built from a RouterConfig and what discovery reported, replaced whole whenever
either changes. A request takes the table current when it starts and keeps it, so a new
configuration never touches requests in flight.

There is one table per transport (HTTP/1.1, gRPC): the same backends, weights and pins,
each over the endpoints of its own port, each with a split of its own. One shared
sequence of picks would not do: the picks that fall to one transport out of an exact
interleaving are not an exact split themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlcycle.api.routerconfig import BackendConfig, Endpoint, RouterConfig
from mlcycle.dataplane.router.selection import RoutingPolicy

Transport = Literal["http", "grpc"]


@dataclass(frozen=True, slots=True)
class DiscoveredEndpoint:
    """A ready address of a Service, with the ports of its EndpointSlice by name."""

    address: str
    ports: tuple[tuple[str, int], ...]


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> tuple[DiscoveredEndpoint, ...]:
    """Ready addresses of a Service's EndpointSlices (API JSON, camelCase), deduplicated.

    A missing `ready` condition means ready (the API's documented default); a terminating
    endpoint is not ready, so traffic leaves a pod as soon as it begins to shut down.
    """
    found: dict[tuple[str, tuple[tuple[str, int], ...]], DiscoveredEndpoint] = {}
    for endpoint_slice in slices:
        ports = tuple(
            (str(port.get("name") or ""), int(port["port"]))
            for port in endpoint_slice.get("ports") or []
            if port.get("port") is not None and (port.get("protocol") or "TCP") == "TCP"
        )
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            # Addresses of one endpoint are fungible: the API says to use the first.
            key = (addresses[0], ports)
            found[key] = DiscoveredEndpoint(addresses[0], ports)
    return tuple(sorted(found.values(), key=lambda e: (e.address, e.ports)))


def resolve_endpoints(
    backend: BackendConfig, discovered: Iterable[DiscoveredEndpoint], transport: Transport = "http"
) -> tuple[Endpoint, ...]:
    """The addresses to send to: static endpoints, then discovered ones on the chosen port.

    HTTP takes the first port of a slice when the backend names none; gRPC takes the
    discovered endpoints only on a port it names (`grpcPort`)."""
    if transport == "grpc":
        resolved = list(backend.static_grpc_endpoints())
        chosen = backend.grpc_port
        if chosen is None:
            return tuple(dict.fromkeys(resolved))
    else:
        resolved = list(backend.static_endpoints())
        chosen = backend.port
    for endpoint in discovered:
        port: int | None
        if isinstance(chosen, int):
            port = chosen
        elif isinstance(chosen, str):
            port = dict(endpoint.ports).get(chosen)
        else:
            port = endpoint.ports[0][1] if endpoint.ports else None
        if port is not None:
            resolved.append(Endpoint(endpoint.address, port))
    return tuple(dict.fromkeys(resolved))


@dataclass(slots=True)
class BackendTarget:
    """One backend of a table: its endpoints, taken in turn."""

    name: str
    version: str
    endpoints: tuple[Endpoint, ...]
    _turn: int = 0

    def next_endpoint(self) -> Endpoint | None:
        if not self.endpoints:
            return None
        self._turn = (self._turn + 1) % len(self.endpoints)
        return self.endpoints[self._turn]


@dataclass(slots=True)
class RoutingTable:
    config: RouterConfig
    policy: RoutingPolicy
    backends: dict[str, BackendTarget] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        config: RouterConfig,
        discovered: Mapping[str, tuple[DiscoveredEndpoint, ...]],
        previous: RoutingTable | None = None,
        transport: Transport = "http",
    ) -> RoutingTable:
        """`discovered` maps Service names to their ready endpoints; `previous` is the
        table of the same transport.

        The policy (and with it the position in the weighted sequence) is kept when
        neither the configuration nor the set of backends with endpoints changed, so
        endpoints coming and going do not disturb the split.
        """
        backends = {
            name: BackendTarget(
                name,
                backend.version,
                resolve_endpoints(
                    backend,
                    discovered.get(backend.service, ()) if backend.service else (),
                    transport,
                ),
            )
            for name, backend in config.backends.items()
        }
        available = {name for name, target in backends.items() if target.endpoints}
        if previous is not None and previous.config == config and previous.available() == available:
            policy = previous.policy
        else:
            policy = RoutingPolicy(config, available)
        return cls(config, policy, backends)

    def available(self) -> set[str]:
        return {name for name, target in self.backends.items() if target.endpoints}

    def endpoints(self) -> set[Endpoint]:
        return {e for target in self.backends.values() for e in target.endpoints}
