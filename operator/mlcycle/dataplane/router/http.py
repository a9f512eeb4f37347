"""HTTP/1.1 serving on raw asyncio protocols with httptools' parser (llhttp).

The router's hot path is a proxy: two parses and two writes per request. A framework
between the socket and the proxy (ASGI messages, per-message awaits, the head and the
body written separately) cost more than the proxying itself when profiled, so both sides
of the router speak HTTP here directly: one write per response, one per upstream request.

Requests are read whole (model inputs are small, and a mirror or a retry needs the body
again); responses can stream. Pipelined requests on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

log = logging.getLogger(__name__)

# Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the framing
# headers every hop sets for itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)

_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED_END = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes
    """The request target as sent: path and query."""
    headers: list[tuple[bytes, bytes]]
    """Names in lower case, in the order received."""
    body: bytes
    keep_alive: bool
    client_host: str
    connection_tokens: frozenset[bytes] = frozenset()
    """Header names listed in `Connection`: hop-by-hop for this request too."""

    @property
    def path(self) -> str:
        path: bytes = httptools.parse_url(self.target).path or b"/"
        return path.decode("latin-1")


Handler = Callable[[Request, "ResponseWriter"], Awaitable[None]]


@dataclass
class ServerTracker:
    """Connections and requests of one listening server, for a draining shutdown."""

    connections: set[HttpServerProtocol] = field(default_factory=set)
    in_flight: int = 0
    closing: bool = False
    idle_seconds: float = 60.0
    max_body_bytes: int = 64 * 1024 * 1024
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def request_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.closing:
            self.drained.set()

    async def drain(self, deadline_seconds: float) -> bool:
        """Stop keep-alive, close idle connections, wait for requests in flight."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_if_idle()
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self.drained.wait(), deadline_seconds)
        except TimeoutError:
            return False
        return True


class ResponseWriter:
    """Writes one response on a client connection: whole (`respond`) or streamed
    (`start`, `write`, `finish`)."""

    __slots__ = ("_chunked", "_connection", "_head_only", "finished", "keep_alive", "started")

    def __init__(self, connection: HttpServerProtocol, request: Request) -> None:
        self._connection = connection
        self._head_only = request.method == b"HEAD"
        self._chunked = False
        self.keep_alive = request.keep_alive and not connection.tracker.closing
        self.started = False
        self.finished = False

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], framing: bytes) -> bytes:
        parts = [status_line(status)]
        for name, value in headers:
            parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(framing)
        parts.append(b"\r\n" if self.keep_alive else b"connection: close\r\n\r\n")
        return b"".join(parts)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        head = self._head(status, headers, b"content-length: %d\r\n" % len(body))
        self.started = self.finished = True
        self._connection.write(head if self._head_only or not body else head + body)

    def start(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        if content_length is not None:
            framing = b"content-length: %d\r\n" % content_length
        elif self._connection.http_11:
            framing, self._chunked = b"transfer-encoding: chunked\r\n", True
        else:
            # An HTTP/1.0 client learns where a body of unknown length ends by the close.
            framing, self.keep_alive = b"", False
        self.started = True
        self._connection.write(self._head(status, headers, framing))

    def write(self, chunk: bytes) -> None:
        if self._head_only or not chunk:
            return
        if self._chunked:
            self._connection.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            self._connection.write(chunk)

    def finish(self) -> None:
        if self._chunked and not self._head_only:
            self._connection.write(_CHUNKED_END)
        self.finished = True

    def abort(self) -> None:
        """A response that cannot be completed: the client sees the connection drop."""
        self.keep_alive = False
        self._connection.abort()

    def pause_source(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Let a streaming source be paused while the client reads slower than it sends."""
        self._connection.flow_control = (pause, resume)


class HttpServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, tracker: ServerTracker) -> None:
        self._handler = handler
        self.tracker = tracker
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client_host = ""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._connection_tokens: frozenset[bytes] = frozenset()
        self._pending: list[Request] = []
        self._busy = False
        self._closed = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self.http_11 = True
        self.flow_control: tuple[Callable[[], None], Callable[[], None]] | None = None

    # --- transport events ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client_host = str(peer[0]) if peer else ""
        self.tracker.connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.tracker.connections.discard(self)
        self._cancel_idle_timer()
        if self.flow_control is not None:
            self.flow_control[1]()
            self.flow_control = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, b"protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            if self._body_size > self.tracker.max_body_bytes:
                self._refuse(413, b"request body too large")
            else:
                self._refuse(400, f"malformed request: {error}".encode())

    def pause_writing(self) -> None:
        if self.flow_control is not None:
            self.flow_control[0]()

    def resume_writing(self) -> None:
        if self.flow_control is not None:
            self.flow_control[1]()

    # --- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._cancel_idle_timer()
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._connection_tokens = frozenset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"connection":
            self._connection_tokens = frozenset(
                token.strip().lower() for token in value.split(b",") if token.strip()
            )
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.http_11 = self._parser.get_http_version() == "1.1"
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue" and self._transport:
                self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.tracker.max_body_bytes:
            raise httptools.HttpParserError("request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = Request(
            method=self._parser.get_method(),
            target=self._url,
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
            client_host=self._client_host,
            connection_tokens=self._connection_tokens,
        )
        if self._busy:
            self._pending.append(request)
            if self._transport is not None:
                self._transport.pause_reading()
        else:
            self._start(request)

    # --- requests --------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self._busy = True
        self.tracker.in_flight += 1
        writer = ResponseWriter(self, request)
        self._loop.create_task(self._run(request, writer))

    async def _run(self, request: Request, writer: ResponseWriter) -> None:
        try:
            await self._handler(request, writer)
        except Exception:
            log.exception("request handler failed")
            if not writer.started:
                writer.respond(500, [], b"internal error\n")
            elif not writer.finished:
                writer.abort()
        finally:
            self.tracker.request_done()
            self._finished(writer)

    def _finished(self, writer: ResponseWriter) -> None:
        self._busy = False
        self.flow_control = None
        if self._closed:
            return
        if not writer.keep_alive or not writer.finished:
            self.abort() if not writer.finished else self._close()
            return
        if self._pending:
            self._start(self._pending.pop(0))
            if not self._pending and self._transport is not None:
                self._transport.resume_reading()
        else:
            self._arm_idle_timer()

    # --- connection ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    def _refuse(self, status: int, message: bytes) -> None:
        framing = b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)
        self.write(status_line(status) + framing + message)
        self._close()

    def _close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.abort()

    def close_if_idle(self) -> None:
        if not self._busy:
            self._close()

    def _arm_idle_timer(self) -> None:
        if self.tracker.closing:
            self._close()
            return
        self._idle_timer = self._loop.call_later(self.tracker.idle_seconds, self.close_if_idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


async def serve(handler: Handler, host: str, port: int, tracker: ServerTracker) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: HttpServerProtocol(handler, tracker),
        host,
        port,
        reuse_address=True,
        backlog=2048,
    )
