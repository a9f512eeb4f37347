"""The router's Prometheus metrics, per backend (version) of one InferenceService.

These are what the operator's canary analysis reads from `/metrics` when no Prometheus is
configured, so the names are a contract:

| metric | type | labels |
|---|---|---|
| `mlcycle_router_requests_total` | counter | service, backend, version, code |
| `mlcycle_router_request_duration_seconds` | histogram | service, backend, version |
| `mlcycle_router_shadow_requests_total` | counter | service, backend, result |
| `mlcycle_router_shadow_comparisons_total` | counter | service, backend |
| `mlcycle_router_shadow_agreements_total` | counter | service, backend |
| `mlcycle_router_shadow_agreement_ratio` | gauge | service, backend |
| `mlcycle_router_backend_endpoints` | gauge | service, backend, version |
| `mlcycle_router_config_reloads_total` | counter | service, result (`applied`, `invalid`) |

Shadow `result`: `ok` (2xx), `error` (other status), `failed` (no response), `dropped`
(too many mirrors in flight). The agreement ratio is agreements / comparisons since start.
`code` is the status sent to the client; for a gRPC call, the HTTP status its gRPC status
stands for (`mlcycle.dataplane.grpc.status`: UNAVAILABLE 503, INVALID_ARGUMENT 400, ...),
so both ports' failures count alike. A request nothing could serve is counted under
backend `none`. Duration runs from the request fully read to the response fully passed on.
`backend_endpoints` counts the endpoints of the HTTP port.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Router overhead is sub-millisecond; model latency spans milliseconds to seconds.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

NO_BACKEND = "none"


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mlcycle_router_requests",
            "Requests answered, by backend (version) and status code",
            ["service", "backend", "version", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "mlcycle_router_request_duration_seconds",
            "Time from request read to response passed on, by backend (version)",
            ["service", "backend", "version"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.shadow_requests = Counter(
            "mlcycle_router_shadow_requests",
            "Mirrored requests by shadow backend and result",
            ["service", "backend", "result"],
            registry=registry,
        )
        self.shadow_comparisons = Counter(
            "mlcycle_router_shadow_comparisons",
            "Mirrored requests whose predictions were compared with the primary's",
            ["service", "backend"],
            registry=registry,
        )
        self.shadow_agreements = Counter(
            "mlcycle_router_shadow_agreements",
            "Compared mirrored requests whose predictions matched the primary's",
            ["service", "backend"],
            registry=registry,
        )
        self.shadow_agreement_ratio = Gauge(
            "mlcycle_router_shadow_agreement_ratio",
            "Agreements / comparisons since the router started",
            ["service", "backend"],
            registry=registry,
        )
        self.backend_endpoints = Gauge(
            "mlcycle_router_backend_endpoints",
            "Ready endpoints per backend",
            ["service", "backend", "version"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "mlcycle_router_config_reloads",
            "Configurations received, applied or rejected as invalid",
            ["service", "result"],
            registry=registry,
        )
        # Label lookups cost more than the increments; the hot path reuses the children.
        self._request_children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
        self._agreement: dict[tuple[str, str], list[int]] = {}

    def observe_request(
        self, service: str, backend: str, version: str, code: int, seconds: float
    ) -> None:
        key = (service, backend, version, code)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(service, backend, version, str(code)),
                self.duration.labels(service, backend, version),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_shadow(self, service: str, backend: str, result: str) -> None:
        self.shadow_requests.labels(service, backend, result).inc()

    def observe_comparison(self, service: str, backend: str, agreed: bool) -> None:
        counts = self._agreement.setdefault((service, backend), [0, 0])
        counts[0] += 1
        self.shadow_comparisons.labels(service, backend).inc()
        if agreed:
            counts[1] += 1
            self.shadow_agreements.labels(service, backend).inc()
        self.shadow_agreement_ratio.labels(service, backend).set(counts[1] / counts[0])

    def set_endpoints(self, service: str, counts: dict[str, tuple[str, int]]) -> None:
        """`counts`: backend → (version, ready endpoints); backends gone are removed."""
        self.backend_endpoints.clear()
        for backend, (version, count) in counts.items():
            self.backend_endpoints.labels(service, backend, version).set(count)

    def observe_reload(self, service: str, applied: bool) -> None:
        self.config_reloads.labels(service, "applied" if applied else "invalid").inc()
