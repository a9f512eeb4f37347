"""The hot path: pick a backend, forward the request, pass the response back, mirror.

Retries: a request is sent again only when nothing can have reached a backend (the
connection could not be made), or when an idempotent request went out on a reused
keep-alive connection that the backend closed before answering anything. A POST that
may have reached a model is never sent twice.

Status codes of the router's own making: 503 when no backend has a ready endpoint (or no
configuration arrived yet), 502 when the backend could not be reached or broke off its
response, 504 when the response did not arrive within `timeouts.requestSeconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson

from mlcycle.api.routerconfig import RouterConfig
from mlcycle.dataplane.router.agreement import predictions_agree, predictions_of, protocol_of
from mlcycle.dataplane.router.http import HOP_BY_HOP, Request, ResponseWriter
from mlcycle.dataplane.router.metrics import NO_BACKEND, RouterMetrics
from mlcycle.dataplane.router.table import BackendTarget, DiscoveredEndpoint, RoutingTable
from mlcycle.dataplane.router.upstream import (
    ConnectFailedError,
    Pools,
    UpstreamClosedError,
    UpstreamConnection,
    UpstreamError,
    UpstreamTimeoutError,
)

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Responses up to this size are passed on in one write with a Content-Length; larger
# ones stream as they arrive.
STREAM_AFTER_BYTES = 256 * 1024
# A primary response is kept for comparison with its mirror only up to this size.
CAPTURE_LIMIT_BYTES = 4 * 1024 * 1024
MAX_SHADOWS_IN_FLIGHT = 512
BACKEND_HEADER = b"x-mlcycle-backend"
SHADOW_HEADER = b"x-mlcycle-shadow: 1\r\n"
_JSON = [(b"content-type", b"application/json")]
# Requests that carry no body unless they say so: no `Content-Length: 0` is invented.
_BODILESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})


class NoEndpointError(Exception):
    """The backend has no ready endpoint."""


class Exchange:
    """One request on one upstream connection, fed by the connection's parser."""

    __slots__ = (
        "_capture",
        "_connection",
        "_parts",
        "_size",
        "_writer",
        "backend_name",
        "content_length",
        "done",
        "headers",
        "status",
        "streaming",
        "truncated",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        writer: ResponseWriter | None,
        capture: bool,
        backend_name: bytes,
        connection: UpstreamConnection,
    ) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self._writer = writer
        self._capture = capture
        self._connection = connection
        self._parts: list[bytes] = []
        self._size = 0
        self.backend_name = backend_name
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.streaming = False
        self.truncated = False

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        listed: frozenset[bytes] = frozenset()
        for name, value in headers:
            if name == b"content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif name == b"connection":
                listed = frozenset(t.strip().lower() for t in value.split(b","))
        kept = [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in listed]
        kept.append((BACKEND_HEADER, self.backend_name))
        self.headers = kept

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self.streaming:
            assert self._writer is not None
            self._writer.write(chunk)
            if self._capture and self._size <= CAPTURE_LIMIT_BYTES:
                self._parts.append(chunk)
            else:
                self.truncated = True
            return
        self._parts.append(chunk)
        if self._writer is not None and self._size > STREAM_AFTER_BYTES:
            self.streaming = True
            self._writer.start(self.status, self.headers, self.content_length)
            self._writer.write(b"".join(self._parts))
            self._writer.pause_source(
                self._connection.pause_reading, self._connection.resume_reading
            )
            if not self._capture:
                self._parts = []
                self.truncated = True

    def on_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, error: UpstreamError) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def time_out(self) -> None:
        self.on_error(UpstreamTimeoutError("the backend did not answer in time"))

    def body(self) -> bytes | None:
        """The whole response body, unless it was streamed without being kept."""
        return None if self.truncated else b"".join(self._parts)

    def pass_on(self, writer: ResponseWriter) -> None:
        if self.streaming:
            writer.finish()
        else:
            writer.respond(self.status, self.headers, b"".join(self._parts))


class Router:
    """The request handler of the proxy port, and the live routing state behind it and
    behind the gRPC port: each new table of gRPC goes to `on_grpc_table`."""

    def __init__(
        self, metrics: RouterMetrics, on_grpc_table: Callable[[RoutingTable], None] | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._metrics = metrics
        self._on_grpc_table = on_grpc_table
        self.table: RoutingTable | None = None
        self.grpc_table: RoutingTable | None = None
        self._discovered: dict[str, tuple[DiscoveredEndpoint, ...]] = {}
        self.pools = Pools(connect_timeout=1.0, idle_seconds=2.0)
        self._shadows: set[asyncio.Task[None]] = set()
        self._backend_names: dict[str, bytes] = {}

    # --- live state ------------------------------------------------------------------

    def apply_config(self, config: RouterConfig) -> None:
        self.pools.configure(
            connect_timeout=config.timeouts.connect_seconds,
            idle_seconds=config.idle_connection_seconds,
        )
        self._rebuild(config)

    def apply_discovered(self, service: str, endpoints: tuple[DiscoveredEndpoint, ...]) -> None:
        if self._discovered.get(service, ()) == endpoints:
            return
        self._discovered[service] = endpoints
        if self.table is not None:
            self._rebuild(self.table.config)

    def _rebuild(self, config: RouterConfig) -> None:
        table = RoutingTable.build(config, self._discovered, self.table)
        grpc_table = RoutingTable.build(config, self._discovered, self.grpc_table, "grpc")
        self.table = table
        self.grpc_table = grpc_table
        self.pools.keep_only(table.endpoints())
        if self._on_grpc_table is not None:
            self._on_grpc_table(grpc_table)
        self._backend_names = {name: name.encode() for name in table.backends}
        self._metrics.set_endpoints(
            config.service,
            {name: (t.version, len(t.endpoints)) for name, t in table.backends.items()},
        )
        log.info(
            "routing table applied",
            extra={
                "service": config.service,
                "endpoints": {n: [str(e) for e in t.endpoints] for n, t in table.backends.items()},
                "grpc_endpoints": {
                    n: [str(e) for e in t.endpoints] for n, t in grpc_table.backends.items()
                },
            },
        )

    def not_ready_reason(self) -> str | None:
        if self.table is None:
            return "no configuration yet"
        # Ready while either port can serve: gRPC-only backends are a valid configuration.
        grpc_table = self.grpc_table
        if not self.table.available() and not (grpc_table is not None and grpc_table.available()):
            return "no backend has a ready endpoint"
        return None

    async def close(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)
        self.pools.close()

    # --- requests --------------------------------------------------------------------

    async def __call__(self, request: Request, writer: ResponseWriter) -> None:
        started = time.perf_counter()
        table = self.table
        if table is None:
            writer.respond(503, _JSON, b'{"error": "the router has no configuration yet"}')
            return
        policy = table.policy
        pin_headers = policy.pin_headers
        pins: dict[bytes, bytes] = {}
        listed = request.connection_tokens
        forwarded_for = b""
        parts = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
        for name, value in request.headers:
            if name in HOP_BY_HOP or name in listed:
                continue
            if name in pin_headers:
                pins.setdefault(name, value)
            if name == b"x-forwarded-for":
                forwarded_for = value + b", "
                continue
            parts.append(b"%s: %s\r\n" % (name, value))
        body = request.body
        parts.append(b"x-forwarded-for: %s%s\r\n" % (forwarded_for, request.client_host.encode()))
        if body or request.method not in _BODILESS_METHODS:
            parts.append(b"content-length: %d\r\n" % len(body))
        head = b"".join(parts)
        route = policy.choose(pins)
        service = table.config.service
        if route.primary is None:
            writer.respond(503, _JSON, b'{"error": "no backend is available"}')
            self._metrics.observe_request(
                service, NO_BACKEND, "", 503, time.perf_counter() - started
            )
            return
        target = table.backends[route.primary]
        primary_outcome: asyncio.Future[tuple[int, bytes | None]] | None = None
        if route.shadow is not None:
            primary_outcome = self._mirror(table, route.shadow, request, head)
        code, response_body = 0, None
        try:
            code, response_body = await self._answer(
                table, target, request.method, head, body, writer, primary_outcome is not None
            )
            self._metrics.observe_request(
                service, target.name, target.version, code, time.perf_counter() - started
            )
        finally:
            if primary_outcome is not None:
                primary_outcome.set_result((code, response_body))

    async def _answer(
        self,
        table: RoutingTable,
        target: BackendTarget,
        method: bytes,
        head: bytes,
        body: bytes,
        writer: ResponseWriter,
        capture: bool,
    ) -> tuple[int, bytes | None]:
        """Forward, pass the response on; the status sent and, if kept, the body."""
        try:
            exchange = await self._forward(
                table, target, method, head + b"\r\n", body, writer, capture,
                table.config.timeouts.request_seconds,
            )  # fmt: skip
        except NoEndpointError:
            return self._fail(writer, 503, f"backend {target.name} has no ready endpoint")
        except UpstreamTimeoutError:
            return self._fail(writer, 504, f"backend {target.name} did not answer in time")
        except UpstreamError as error:
            return self._fail(writer, 502, f"backend {target.name}: {error}")
        exchange.pass_on(writer)
        return exchange.status, exchange.body() if capture else None

    def _fail(self, writer: ResponseWriter, code: int, message: str) -> tuple[int, None]:
        if writer.started:
            # Part of the response is out: the only honest signal left is the drop.
            writer.abort()
        else:
            writer.respond(code, _JSON, orjson.dumps({"error": message}))
        return code, None

    async def _forward(
        self,
        table: RoutingTable,
        target: BackendTarget,
        method: bytes,
        head: bytes,
        body: bytes,
        writer: ResponseWriter | None,
        capture: bool,
        timeout_seconds: float,
    ) -> Exchange:
        max_attempts = table.config.max_connect_attempts
        head_only = method == b"HEAD"
        backend_name = self._backend_names.get(target.name) or target.name.encode()
        attempts = 0
        while True:
            endpoint = target.next_endpoint()
            if endpoint is None:
                raise NoEndpointError(target.name)
            attempts += 1
            try:
                connection = await self.pools.get(endpoint).acquire()
            except ConnectFailedError:
                if attempts >= max_attempts:
                    raise
                continue
            exchange = Exchange(self._loop, writer, capture, backend_name, connection)
            connection.send(head, body, exchange, head_only=head_only)
            timer = self._loop.call_later(timeout_seconds, exchange.time_out)
            try:
                await exchange.done
            except UpstreamTimeoutError:
                connection.abort()
                raise
            except UpstreamClosedError as closed:
                # A keep-alive connection the backend closed just as the request went out:
                # nothing came back, and only a request safe to repeat may go again.
                if (
                    closed.reused
                    and not closed.response_started
                    and method in IDEMPOTENT_METHODS
                    and attempts < max_attempts
                ):
                    continue
                raise
            finally:
                timer.cancel()
            return exchange

    # --- mirroring -------------------------------------------------------------------

    def _mirror(
        self, table: RoutingTable, backend: str, request: Request, head: bytes
    ) -> asyncio.Future[tuple[int, bytes | None]] | None:
        service = table.config.service
        if len(self._shadows) >= MAX_SHADOWS_IN_FLIGHT:
            self._metrics.observe_shadow(service, backend, "dropped")
            return None
        primary_outcome: asyncio.Future[tuple[int, bytes | None]] = self._loop.create_future()
        task = self._loop.create_task(
            self._shadow(table, backend, request, head + SHADOW_HEADER + b"\r\n", primary_outcome)
        )
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)
        return primary_outcome

    async def _shadow(
        self,
        table: RoutingTable,
        backend: str,
        request: Request,
        head: bytes,
        primary_outcome: asyncio.Future[tuple[int, bytes | None]],
    ) -> None:
        service = table.config.service
        try:
            exchange = await self._forward(
                table, table.backends[backend], request.method, head, request.body, None,
                True, table.config.timeouts.shadow_seconds,
            )  # fmt: skip
        except (UpstreamError, NoEndpointError):
            self._metrics.observe_shadow(service, backend, "failed")
            return
        if not 200 <= exchange.status < 300:
            self._metrics.observe_shadow(service, backend, "error")
            return
        self._metrics.observe_shadow(service, backend, "ok")
        protocol = protocol_of(request.path)
        if protocol is None:
            return
        primary_code, primary_body = await primary_outcome
        shadow_body = exchange.body()
        if primary_body is None or shadow_body is None or not 200 <= primary_code < 300:
            return
        try:
            predictions_of(protocol, primary_body)
        except ValueError:
            return  # nothing to compare against
        try:
            agreed = predictions_agree(protocol, primary_body, shadow_body)
        except ValueError:
            agreed = False  # the shadow answered 2xx without readable predictions
        self._metrics.observe_comparison(service, backend, agreed)
