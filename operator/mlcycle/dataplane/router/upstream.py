"""Keep-alive connections to backends: one pool per endpoint, HTTP/1.1 over raw asyncio
protocols with httptools' response parser.

A connection carries one exchange at a time. Whatever reads the response (the proxy's
`Exchange`) is a `ResponseSink` fed from the parser's callbacks, so a response is passed
on as its bytes arrive, without a task or a queue in between.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, cast

import httptools

from mlcycle.api.routerconfig import Endpoint


class UpstreamError(Exception):
    """The backend did not give a whole response."""


class ConnectFailedError(UpstreamError):
    """No connection could be made: nothing was sent, trying elsewhere is safe."""


class UpstreamClosedError(UpstreamError):
    """The connection ended before the response did."""

    def __init__(self, message: str, *, response_started: bool, reused: bool) -> None:
        super().__init__(message)
        self.response_started = response_started
        self.reused = reused


class UpstreamTimeoutError(UpstreamError):
    """The whole response did not arrive in time."""


class ResponseSink(Protocol):
    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...
    def on_body(self, chunk: bytes) -> None: ...
    def on_complete(self) -> None: ...
    def on_error(self, error: UpstreamError) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to one backend endpoint."""

    def __init__(self, pool: EndpointPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._sink: ResponseSink | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_only = False
        self._informational = False
        self._response_started = False
        self._reading_paused = False
        self.closed = False
        self.exchanges = 0
        self.idle_since = 0.0

    # --- transport events ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.on_error(
                UpstreamClosedError(
                    f"{self._pool.endpoint} closed the connection" + (f": {exc}" if exc else ""),
                    response_started=self._response_started,
                    reused=self.exchanges > 1,
                )
            )

    def data_received(self, data: bytes) -> None:
        if self._sink is None:
            # Bytes nobody asked for: the connection's framing cannot be trusted any more.
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            sink, self._sink = self._sink, None
            self.abort()
            if sink is not None:
                sink.on_error(UpstreamError(f"{self._pool.endpoint} sent a bad response: {error}"))

    def pause_reading(self) -> None:
        if self._transport is not None and not self.closed and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self.closed and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    # --- one exchange ----------------------------------------------------------------

    def send(self, head: bytes, body: bytes, sink: ResponseSink, *, head_only: bool) -> None:
        assert self._transport is not None
        # A slow client may have paused this connection just as its last response ended.
        self.resume_reading()
        self._sink = sink
        self._head_only = head_only
        self._response_started = False
        self.exchanges += 1
        if body:
            self._transport.writelines((head, body))
        else:
            self._transport.write(head)

    def on_message_begin(self) -> None:
        self._headers = []
        self._response_started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        # A 100 Continue or 103 Early Hints precedes the real response: not passed on.
        self._informational = status < 200
        if self._informational or self._sink is None:
            return
        self._sink.on_head(status, self._headers)
        if self._head_only:
            # The parser cannot know a HEAD response has no body despite its
            # Content-Length; end the exchange here and never reuse the connection.
            sink, self._sink = self._sink, None
            sink.on_complete()
            self.abort()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink.on_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        sink, self._sink = self._sink, None
        if sink is None:
            return
        keep_alive = self._parser.should_keep_alive()
        sink.on_complete()
        self._pool.release(self, keep_alive)

    def abort(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()


class EndpointPool:
    """Idle keep-alive connections to one endpoint, most recently used first."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float, idle_seconds: float) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self._idle: list[UpstreamConnection] = []
        self.retired = False

    async def acquire(self) -> UpstreamConnection:
        """A connection ready to send on; ConnectFailedError if none can be had."""
        now = time.monotonic()
        idle = self._idle
        while idle:
            connection = idle.pop()
            # Backends close idle keep-alive connections on their own schedule (uvicorn
            # after 5 s); one closed just as a request goes out would lose that request,
            # so connections idle for long are not trusted.
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.endpoint.host, self.endpoint.port
                )
        except (OSError, TimeoutError) as error:
            raise ConnectFailedError(f"cannot connect to {self.endpoint}: {error!r}") from None
        return connection

    def release(self, connection: UpstreamConnection, keep_alive: bool) -> None:
        if keep_alive and not connection.closed and not self.retired:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: UpstreamConnection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    def retire(self) -> None:
        """The endpoint left: close idle connections; busy ones close when released."""
        self.retired = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    @property
    def idle_connections(self) -> int:
        return len(self._idle)


class Pools:
    """Pools by endpoint, shared by every configuration the router goes through."""

    def __init__(self, *, connect_timeout: float, idle_seconds: float) -> None:
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self._pools: dict[Endpoint, EndpointPool] = {}

    def get(self, endpoint: Endpoint) -> EndpointPool:
        pool = self._pools.get(endpoint)
        if pool is None or pool.retired:
            pool = self._pools[endpoint] = EndpointPool(
                endpoint, connect_timeout=self.connect_timeout, idle_seconds=self.idle_seconds
            )
        return pool

    def configure(self, *, connect_timeout: float, idle_seconds: float) -> None:
        self.connect_timeout, self.idle_seconds = connect_timeout, idle_seconds
        for pool in self._pools.values():
            pool.connect_timeout, pool.idle_seconds = connect_timeout, idle_seconds

    def keep_only(self, endpoints: set[Endpoint]) -> None:
        for endpoint in [e for e in self._pools if e not in endpoints]:
            self._pools.pop(endpoint).retire()

    def close(self) -> None:
        self.keep_only(set())
