"""`mlcycle router`: the proxy port, the gRPC port, the admin port, and where the
configuration comes from.

Configuration comes either from a file (`--config-file`, read again on SIGHUP) or from a
ConfigMap in the router's namespace (`--configmap`, watched). An invalid new
configuration is rejected and counted; the router keeps routing with the last good one.
SIGTERM stops accepting connections and calls on both ports, answers those in flight,
then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlcycle.api.routerconfig import DEFAULT_CONFIGMAP_KEY, RouterConfig
from mlcycle.dataplane.router.grpc_proxy import GrpcProxy, serve_grpc
from mlcycle.dataplane.router.http import Request, ResponseWriter, ServerTracker, serve
from mlcycle.dataplane.router.metrics import RouterMetrics
from mlcycle.dataplane.router.proxy import Router
from mlcycle.jsonlog import configure_json_logging

log = logging.getLogger("mlcycle.router")

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class RouterSettings(BaseModel):
    """The process's flags (`mlcycle router --help`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    grpc_port: int = Field(8081, ge=0, le=65535)
    """gRPC (HTTP/2 without TLS) on `host`, routed like the proxy port."""
    admin_host: str = "0.0.0.0"
    admin_port: int = Field(9090, ge=0, le=65535)
    """/metrics, /healthz, /readyz: a port of their own, so no model path can shadow them."""
    config_file: Path | None = None
    configmap: str | None = None
    configmap_key: str = DEFAULT_CONFIGMAP_KEY
    namespace: str | None = None
    drain_seconds: float = Field(30.0, ge=0)
    idle_client_seconds: float = Field(75.0, gt=0)
    """Client keep-alive connections idle this long are closed (longer than a typical
    load balancer's 60 s, so the balancer closes first and never sends into a close)."""
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _one_source(self) -> RouterSettings:
        if (self.config_file is None) == (self.configmap is None):
            raise ValueError("give exactly one of --config-file and --configmap")
        if self.configmap is not None and not self.namespace:
            raise ValueError("--configmap needs --namespace (or POD_NAMESPACE)")
        return self


class AdminHandler:
    def __init__(self, router: Router, registry: CollectorRegistry) -> None:
        self._router = router
        self._registry = registry
        self.draining = False

    async def __call__(self, request: Request, writer: ResponseWriter) -> None:
        path = request.path
        if path == "/metrics":
            content_type = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            writer.respond(200, content_type, generate_latest(self._registry))
        elif path == "/healthz":
            writer.respond(200, _TEXT, b"ok\n")
        elif path == "/readyz":
            reason = "shutting down" if self.draining else self._router.not_ready_reason()
            if reason is None:
                writer.respond(200, _TEXT, b"ready\n")
            else:
                writer.respond(503, _TEXT, reason.encode() + b"\n")
        else:
            writer.respond(404, _TEXT, b"not found: /metrics, /healthz, /readyz\n")


class ConfigApplier:
    """Parses and applies configurations as they come; keeps the last good one."""

    def __init__(self, router: Router, metrics: RouterMetrics, tracker: ServerTracker) -> None:
        self._router = router
        self._metrics = metrics
        self._tracker = tracker

    def apply_text(self, text: str | None, source: str) -> bool:
        current = self._router.table.config.service if self._router.table else ""
        if text is None:
            log.warning(
                "no router configuration found; keeping the last one", extra={"source": source}
            )
            return False
        try:
            config = RouterConfig.from_text(text)
        except (ValidationError, ValueError) as error:
            log.error(
                "invalid router configuration rejected",
                extra={"source": source, "error": str(error)},
            )
            self._metrics.observe_reload(current, applied=False)
            return False
        if self._router.table is not None and self._router.table.config == config:
            return True  # a watch relisting, or a change to another key: nothing to do
        self._tracker.max_body_bytes = config.max_request_body_bytes
        self._router.apply_config(config)
        self._metrics.observe_reload(config.service, applied=True)
        log.info(
            "router configuration applied", extra={"source": source, "config": config.to_json()}
        )
        return True


async def run_router(settings: RouterSettings, stop: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    grpc_proxy = GrpcProxy(metrics)
    router = Router(metrics, on_grpc_table=grpc_proxy.use_table)
    tracker = ServerTracker(idle_seconds=settings.idle_client_seconds)
    applier = ConfigApplier(router, metrics, tracker)
    watches = None
    if settings.config_file is not None:
        config_file = settings.config_file
        if not applier.apply_text(config_file.read_text(), str(config_file)):
            raise SystemExit(f"{config_file}: not a valid router configuration")
        loop.add_signal_handler(
            signal.SIGHUP, lambda: applier.apply_text(config_file.read_text(), str(config_file))
        )
    else:
        from mlcycle.dataplane.router.discovery import ClusterWatches, kube_api_client

        assert settings.configmap is not None
        assert settings.namespace is not None
        watches = ClusterWatches(
            kube_api_client(),
            loop,
            namespace=settings.namespace,
            configmap=settings.configmap,
            key=settings.configmap_key,
            on_config=lambda text: applier.apply_text(text, f"configmap/{settings.configmap}"),
            on_endpoints=router.apply_discovered,
        )
        watches.start()
    admin = AdminHandler(router, registry)
    proxy_server = await serve(router, settings.host, settings.port, tracker)
    grpc_server, grpc_port = await serve_grpc(grpc_proxy, settings.host, settings.grpc_port)
    admin_server = await serve(admin, settings.admin_host, settings.admin_port, ServerTracker())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "router listening",
        extra={
            "port": _bound_port(proxy_server),
            "grpc_port": grpc_port,
            "admin_port": _bound_port(admin_server),
        },
    )
    await stop.wait()

    admin.draining = True
    proxy_server.close()
    # grpc's stop refuses new calls at once, waits up to the grace for those in flight,
    # then cancels them; the proxy's own tracker says how many that were.
    grpc_stopped = loop.create_task(grpc_server.stop(settings.drain_seconds))
    drained = await asyncio.gather(
        tracker.drain(settings.drain_seconds), grpc_proxy.tracker.drain(settings.drain_seconds)
    )
    log.info(
        "router stopped",
        extra={
            "drained": all(drained),
            "abandoned": tracker.in_flight + grpc_proxy.tracker.in_flight,
        },
    )
    await grpc_stopped
    if watches is not None:
        watches.stop()
    await grpc_proxy.close()
    await router.close()
    admin_server.close()


def _bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def main(settings: RouterSettings) -> int:
    import uvloop

    configure_json_logging(settings.log_level)
    uvloop.run(run_router(settings))
    return 0
