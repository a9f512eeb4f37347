"""The router's configuration schema: everything it needs to route for one InferenceService.

This is the contract between the operator and the router, so it lives in the API package
that both import: `plan.traffic.router` writes it, `dataplane.router` reads it. The
operator renders it as JSON (YAML is accepted too) under one key (`router.yaml` by
default) of a ConfigMap that the router watches; tests and benchmarks pass the same
document as a file. Wire names are camelCase:

```yaml
service: iris                  # the InferenceService; the `service` label of every metric
backends:                      # by version name; the name is the `backend` metric label
  stable:
    service: iris-stable       # per-version Service: ready endpoints from its EndpointSlices
    port: http                 # EndpointSlice port by name, or a number (default: first port)
    grpcPort: grpc             # EndpointSlice port of gRPC, by name or number (default: none)
    version: "3"               # model version: the `version` metric label
  canary:
    endpoints: ["127.0.0.1:9001"]   # static host:port list (tests, benchmarks, no cluster)
    grpcEndpoints: ["127.0.0.1:9101"]   # the same for gRPC
    version: "4"
weights: {stable: 90, canary: 10}   # integers; exact proportions (smooth weighted round-robin)
headerRoutes:                  # A/B: first matching rule pins the request to a backend
  - header: x-mlcycle-version
    value: canary              # omitted: any value of the header matches
    backend: canary
shadow:                        # mirror a share of requests; the mirror's answer is discarded
  backend: canary
  percent: 25                  # of requests whose primary backend is not the shadow one
timeouts:
  connectSeconds: 1
  requestSeconds: 30           # until the whole upstream response has arrived: then 504
  shadowSeconds: 5
maxConnectAttempts: 3          # endpoints tried when connecting fails (nothing was sent yet)
idleConnectionSeconds: 2       # pooled keep-alive connections older than this are closed
maxRequestBodyBytes: 67108864
```

A backend with `service` takes its endpoints from EndpointSlices; one with `endpoints`
uses them as given; one with both uses both. gRPC (the router's gRPC port) goes to
`grpcEndpoints` and, with `grpcPort`, to that port of the discovered endpoints; a backend
with neither has no gRPC endpoint, so gRPC calls never pick it (both fields are optional,
and a configuration written before them routes HTTP as it did).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

DEFAULT_CONFIGMAP_KEY = "router.yaml"


class RouterModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One reachable backend address (a plain value: it keys the connection pools)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, separator, port = text.rpartition(":")
        if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {text!r}: expected host:port")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class BackendConfig(RouterModel):
    service: str | None = Field(None, min_length=1)
    """Per-version Kubernetes Service whose EndpointSlices list the ready pods."""
    endpoints: tuple[str, ...] = ()
    """Static `host:port` addresses, used as given."""
    port: int | str | None = None
    """EndpointSlice port: a name, or a number used as the target port; default the first."""
    grpc_endpoints: tuple[str, ...] = ()
    """Static `host:port` addresses of gRPC (HTTP/2), used as given."""
    grpc_port: int | str | None = None
    """EndpointSlice port of gRPC, like `port`; None: no gRPC on the discovered endpoints
    (there is no sensible default: the first port is HTTP's)."""
    version: str = ""
    """The model version behind this backend, the `version` label of the metrics."""

    @model_validator(mode="after")
    def _has_a_source(self) -> Self:
        if self.service is None and not self.endpoints and not self.grpc_endpoints:
            raise ValueError("a backend needs a service, endpoints or grpcEndpoints")
        for endpoint in (*self.endpoints, *self.grpc_endpoints):
            Endpoint.parse(endpoint)
        return self

    def static_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(Endpoint.parse(text) for text in self.endpoints)

    def static_grpc_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(Endpoint.parse(text) for text in self.grpc_endpoints)


class HeaderRoute(RouterModel):
    header: str = Field(min_length=1, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    value: str | None = None
    """The value that pins; None pins on the header's presence, whatever its value."""
    backend: str


class ShadowConfig(RouterModel):
    backend: str
    percent: float = Field(ge=0, le=100)


class Timeouts(RouterModel):
    connect_seconds: float = Field(1.0, gt=0)
    request_seconds: float = Field(30.0, gt=0)
    shadow_seconds: float = Field(5.0, gt=0)


class RouterConfig(RouterModel):
    service: str = Field(min_length=1)
    backends: dict[str, BackendConfig] = Field(min_length=1)
    weights: dict[str, int] = Field(default_factory=dict)
    """Integer weight per backend name; a backend left out has weight 0."""
    header_routes: tuple[HeaderRoute, ...] = ()
    shadow: ShadowConfig | None = None
    timeouts: Timeouts = Timeouts()
    max_connect_attempts: int = Field(3, ge=1, le=10)
    idle_connection_seconds: float = Field(2.0, gt=0)
    max_request_body_bytes: int = Field(64 * 1024 * 1024, ge=0)

    @model_validator(mode="after")
    def _names_refer_to_backends(self) -> Self:
        known = set(self.backends)
        for name, weight in self.weights.items():
            if name not in known:
                raise ValueError(f"weights: unknown backend {name!r}")
            if weight < 0:
                raise ValueError(f"weights: {name} is negative")
        if sum(self.weights.values()) <= 0 and not self.header_routes:
            raise ValueError("weights: at least one backend needs a positive weight")
        for route in self.header_routes:
            if route.backend not in known:
                raise ValueError(f"headerRoutes: unknown backend {route.backend!r}")
        if self.shadow is not None and self.shadow.backend not in known:
            raise ValueError(f"shadow: unknown backend {self.shadow.backend!r}")
        return self

    @classmethod
    def from_text(cls, text: str) -> RouterConfig:
        """JSON or YAML, as found in a ConfigMap value or a file."""
        document: Any = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        return cls.model_validate(document)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)
