"""The gRPC port: unary calls of any method forwarded over HTTP/2 with the HTTP routing.

The model servers speak KServe's Open Inference Protocol v2 over gRPC
(`inference.GRPCInferenceService`), but nothing here depends on it: one generic handler
takes every method as raw bytes and sends it on unchanged, so the router needs no
generated stubs and forwards whatever a backend serves. Each call is one request message
and one response message; streaming methods are not proxied (OIP has none).

Per call, the backend is chosen by the same `RoutingPolicy` as HTTP (exact weights,
header pins; gRPC metadata keys are lower-case header names) over the table of the
backends' gRPC endpoints (`grpcEndpoints`, and `grpcPort` of their EndpointSlices). The
call goes to one endpoint of that backend on a channel kept per endpoint, with the
client's metadata (`x-forwarded-for` extended) and its deadline, capped at
`timeouts.requestSeconds`. The backend's response, status, details and metadata come
back as they were, its initial metadata with `x-mlcycle-backend` added.

A call is sent again only when nothing was sent: an endpoint whose channel does not
connect within `timeouts.connectSeconds` is passed over for the backend's next one (each
endpoint once, up to `maxConnectAttempts`). A call that went out is never repeated.

Metrics are HTTP's (`metrics`): `code` is the HTTP status that the gRPC status sent to the
client stands for (`mlcycle.dataplane.grpc.status`, as the model server counts it), so
canary analysis counts a failed call as it counts a 5xx, and a rejected one as a 4xx.

Statuses of the router's own making: UNAVAILABLE when no configuration arrived yet, no
backend has a gRPC endpoint, or no endpoint tried could be connected to;
DEADLINE_EXCEEDED when the response did not arrive within the deadline;
RESOURCE_EXHAUSTED for a request larger than `maxRequestBodyBytes`.

Not mirrored: a Shadow rollout's shadow backend sees HTTP requests only. Agreement is
read from JSON response bodies (`agreement`); a gRPC mirror would count among the
shadow's requests without ever being compared, so its traffic would look measured when
it is not.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import grpc
import grpc.aio

from mlcycle.api.routerconfig import Endpoint, RouterConfig
from mlcycle.dataplane.grpc.status import HTTP_STATUS_OF_GRPC
from mlcycle.dataplane.router.http import ServerTracker
from mlcycle.dataplane.router.metrics import NO_BACKEND, RouterMetrics
from mlcycle.dataplane.router.proxy import NoEndpointError
from mlcycle.dataplane.router.table import BackendTarget, RoutingTable
from mlcycle.dataplane.router.upstream import ConnectFailedError

MetadataPairs = tuple[tuple[str, str | bytes], ...]
Context = grpc.aio.ServicerContext

Code = grpc.StatusCode

BACKEND_METADATA: Final = "x-mlcycle-backend"
# gRPC sets its own user agent; one passed as metadata is ignored, so it is not sent on.
_NOT_FORWARDED: Final = frozenset({"user-agent"})
# Method paths come from clients: handlers are kept for this many distinct ones, so a
# client inventing paths cannot grow the router's memory.
_MAX_CACHED_METHODS: Final = 256

SERVER_OPTIONS: Final = (
    # grpc shares a port between processes by default (SO_REUSEPORT): a second router on
    # the same port must fail to start instead of quietly taking half of the calls.
    ("grpc.so_reuseport", 0),
    # The size limit is `maxRequestBodyBytes`, which a new configuration can change; grpc's
    # own limits (4 MiB received by default) are fixed when the server starts.
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)
CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # A model server that restarts comes back on the same pod address: reconnect within a
    # second, not after grpc's default backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def pinning_values(
    metadata: Iterable[tuple[str, str | bytes]], wanted: Set[bytes]
) -> dict[bytes, bytes]:
    """The first value of each metadata key that a header pin looks at, keyed as
    `RoutingPolicy` keys request headers (lower-case bytes)."""
    pins: dict[bytes, bytes] = {}
    for key, value in metadata:
        name = key.encode("latin-1")
        if name in wanted and name not in pins:
            pins[name] = value if isinstance(value, bytes) else value.encode("latin-1")
    return pins


def client_host(peer: str) -> str:
    """The address in grpc's peer string (`ipv4:10.0.0.1:5000`, `ipv6:%5B::1%5D:5000`);
    empty for other transports (a Unix socket)."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    return unquote(address).rpartition(":")[0].strip("[]")


def forwarded_metadata(metadata: Iterable[tuple[str, str | bytes]], client: str) -> MetadataPairs:
    """The client's metadata as sent on: the client's address appended to
    `x-forwarded-for`, as the HTTP port does with the header."""
    forwarded_for: list[str] = []
    kept: list[tuple[str, str | bytes]] = []
    for key, value in metadata:
        if key == "x-forwarded-for":
            forwarded_for.append(value if isinstance(value, str) else value.decode("latin-1"))
        elif key not in _NOT_FORWARDED:
            kept.append((key, value))
    if client:
        forwarded_for.append(client)
    if forwarded_for:
        kept.append(("x-forwarded-for", ", ".join(forwarded_for)))
    return tuple(kept)


def channel_target(endpoint: Endpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one forwarded call ended with, to count and pass back."""

    code: grpc.StatusCode
    details: str = ""
    response: bytes = b""
    initial_metadata: MetadataPairs | None = None
    """None: the router's own answer (no backend answered)."""
    trailing_metadata: MetadataPairs = ()


class GrpcProxy(grpc.GenericRpcHandler):
    """The handler of every method on the gRPC port, and the channels to the backends."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self._loop = asyncio.get_running_loop()
        self._metrics = metrics
        self.table: RoutingTable | None = None
        self._channels: dict[Endpoint, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}
        self.tracker = ServerTracker()
        """Calls in flight, for a draining shutdown (grpc tracks its connections itself)."""

    # --- live state ------------------------------------------------------------------

    def use_table(self, table: RoutingTable) -> None:
        """The routing table of gRPC endpoints, whenever the router builds a new one."""
        self.table = table
        self._keep_only(table.endpoints(), table.config.timeouts.request_seconds)

    def _keep_only(self, endpoints: Set[Endpoint], grace: float | None) -> None:
        for endpoint in [e for e in self._channels if e not in endpoints]:
            # Calls in flight on a channel whose endpoint left may finish (as long as a
            # call may take); then the channel closes.
            closing = self._loop.create_task(self._channels.pop(endpoint).close(grace))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = grpc.aio.insecure_channel(
                channel_target(endpoint), options=CHANNEL_OPTIONS
            )
        return channel

    async def close(self) -> None:
        """After the server stopped: nothing is in flight any more."""
        self._keep_only(set(), None)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- calls -----------------------------------------------------------------------

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            # No (de)serializers: requests and responses stay bytes, passed on as they are.
            handler = grpc.unary_unary_rpc_method_handler(functools.partial(self._call, method))
            if len(self._handlers) < _MAX_CACHED_METHODS:
                self._handlers[method] = handler
        return handler

    async def _call(self, method: str, request: bytes, context: Context[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        table = self.table
        if table is None:
            return _refuse(context, Code.UNAVAILABLE, "the router has no configuration yet")
        config = table.config
        if len(request) > config.max_request_body_bytes:
            return _refuse(
                context,
                Code.RESOURCE_EXHAUSTED,
                f"request of {len(request)} bytes, more than {config.max_request_body_bytes}",
            )
        metadata: MetadataPairs = tuple(context.invocation_metadata() or ())
        policy = table.policy
        pins = pinning_values(metadata, policy.pin_headers) if policy.pins else {}
        # The route's shadow is left out: gRPC calls are not mirrored (module doc).
        backend = policy.choose(pins).primary
        if backend is None:
            self._metrics.observe_request(
                config.service, NO_BACKEND, "", 503, time.perf_counter() - started
            )
            return _refuse(context, Code.UNAVAILABLE, "no backend is available")
        target = table.backends[backend]
        self.tracker.in_flight += 1
        try:
            outcome = await self._forward(config, target, method, request, metadata, context)
        except asyncio.CancelledError:
            # The client cancelled, or its deadline passed (grpc cancels the handler then).
            remaining = context.time_remaining()
            gone = (
                Code.DEADLINE_EXCEEDED
                if remaining is not None and remaining <= 0
                else Code.CANCELLED
            )
            self._observe(config, target, gone, started)
            raise
        finally:
            self.tracker.request_done()
        self._observe(config, target, outcome.code, started)
        if outcome.initial_metadata is not None:
            await context.send_initial_metadata(
                (*outcome.initial_metadata, (BACKEND_METADATA, target.name))
            )
        context.set_trailing_metadata(outcome.trailing_metadata)
        if outcome.code is not Code.OK:
            return _refuse(context, outcome.code, outcome.details)
        return outcome.response

    def _observe(
        self, config: RouterConfig, target: BackendTarget, code: grpc.StatusCode, started: float
    ) -> None:
        self._metrics.observe_request(
            config.service,
            target.name,
            target.version,
            HTTP_STATUS_OF_GRPC[code],
            time.perf_counter() - started,
        )

    async def _forward(
        self,
        config: RouterConfig,
        target: BackendTarget,
        method: str,
        request: bytes,
        metadata: MetadataPairs,
        context: Context[bytes, bytes],
    ) -> Outcome:
        timeout = config.timeouts.request_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        deadline = self._loop.time() + timeout
        try:
            channel = await self._connect(config, target, deadline)
        except NoEndpointError:
            return Outcome(Code.UNAVAILABLE, f"backend {target.name} has no ready gRPC endpoint")
        except ConnectFailedError as error:
            return Outcome(Code.UNAVAILABLE, f"backend {target.name}: {error}")
        send: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        call = send(
            request,
            timeout=max(deadline - self._loop.time(), 0.0),
            metadata=forwarded_metadata(metadata, client_host(context.peer())),
        )
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as error:
            return Outcome(
                error.code(),
                error.details() or "",
                initial_metadata=_items(error.initial_metadata()),
                trailing_metadata=_items(error.trailing_metadata()),
            )
        return Outcome(
            Code.OK,
            response=response,
            initial_metadata=_items(await call.initial_metadata()),
            trailing_metadata=_items(await call.trailing_metadata()),
        )

    async def _connect(
        self, config: RouterConfig, target: BackendTarget, deadline: float
    ) -> grpc.aio.Channel:
        """A channel of the backend that is connected, trying its endpoints in turn."""
        if not target.endpoints:
            raise NoEndpointError(target.name)
        # Waiting again on a channel that did not connect would only wait longer.
        attempts = min(config.max_connect_attempts, len(target.endpoints))
        for _ in range(attempts):
            endpoint = target.next_endpoint()
            if endpoint is None:
                break
            channel = self._channel(endpoint)
            if channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
                return channel
            wait = min(config.timeouts.connect_seconds, deadline - self._loop.time())
            try:
                await asyncio.wait_for(channel.channel_ready(), max(wait, 0.0))
            except TimeoutError:
                continue
            return channel
        raise ConnectFailedError(f"no connection to any of {attempts} endpoints tried")


def _refuse(context: Context[bytes, bytes], code: grpc.StatusCode, details: str) -> bytes:
    """Answers with a status that is not OK (grpc sends no message with one)."""
    context.set_code(code)
    context.set_details(details)
    return b""


def _items(metadata: Iterable[tuple[str, str | bytes]] | None) -> MetadataPairs:
    """grpc's Metadata (or None) as the tuple of pairs that every grpc call accepts."""
    return tuple((key, value) for key, value in metadata or ())


async def serve_grpc(proxy: GrpcProxy, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """The started gRPC server on `host:port`, and the port it bound (`port` 0: any)."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((proxy,))
    bound = server.add_insecure_port(channel_target(Endpoint(host, port)))
    await server.start()
    return server, bound
