"""The probe's listening sockets, hardened: a connection flood must not stop measurement.

The probe's HTTP port is the one thing a hostile network can reach, and the service shares
its process -- its file descriptors, its event loop -- with the checks. So:

- `raise_fd_limit` lifts the soft RLIMIT_NOFILE to the hard limit at start, as Go's
  runtime (and so blackbox_exporter) does: 1,024 descriptors is a common soft default.
- `Listener` caps the HTTP connections at `connection_cap(...)`: what the descriptor
  limit leaves after the checks' concurrency and a reserve, and never more than 512 (the
  probe is scraped by a few Prometheus servers, not browsed by crowds). At the cap, a new
  connection evicts the oldest one that has no request in progress; when all are busy,
  the new one is closed at accept, before any TLS handshake or parsing.
- Timeouts: an idle keep-alive connection is closed after `IDLE_TIMEOUT`; a request head
  (and any body the probe never reads) must arrive within `HEADER_TIMEOUT` of its first
  byte; a TLS handshake within `HEADER_TIMEOUT`; a response the client stops reading is
  abandoned after `WRITE_TIMEOUT`. The connection counts from accept, so a handshake flood
  is capped too.
- Malformed requests (and handler errors) log one line each, at most one per
  `LOG_INTERVAL` per kind with a count of the rest: aiohttp logs a traceback for each,
  and 17,474 bad requests wrote 9.9 MB of log in 10 s.
- The `Server` header says `reach`, not the aiohttp and Python versions, on every
  response, aiohttp's own error responses included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("probe.http")

IDLE_TIMEOUT = 30.0  # keep-alive: Prometheus scrapes every 15-60 s and reconnects cheaply
HEADER_TIMEOUT = 10.0  # a request head (or TLS handshake) from its first byte
WRITE_TIMEOUT = 30.0  # a response the client does not read
LINGER = 2.0  # unread request body drained at most this long
MAX_CONNECTIONS = 512
FD_RESERVE = 128  # evidence, resolvers, the loop, logging, the health socket
LOG_INTERVAL = 10.0
SERVER_NAME = "reach"
SECURITY_HEADERS = {
    "Server": SERVER_NAME,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self' "
                                "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
}


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_cap(fd_limit: int, concurrency: int) -> int:
    """HTTP connections allowed: room for every check (`concurrency` sockets, twice over for
    DNS beside them) and a reserve stays free; at least 8, at most MAX_CONNECTIONS."""
    return max(8, min(MAX_CONNECTIONS, fd_limit - 2 * concurrency - FD_RESERVE))


class RateLimitedLog:
    """One log line per kind per `interval`; the next says how many were suppressed."""

    def __init__(self, logger: logging.Logger = log, interval: float = LOG_INTERVAL) -> None:
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.lines = 0
        self.events = 0

    def __call__(self, kind: str, level: int, message: str, exc_info: Any = None) -> None:
        self.events += 1
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        if more:
            message += f" ({more} more like it in the last {self.interval:.0f} s not logged)"
        self.lines += 1
        self.logger.log(level, "%s", message, exc_info=exc_info)


MALFORMED = RateLimitedLog()


class _Handler(RequestHandler):
    """aiohttp's request handler with one-line, rate-limited error logs and our headers on
    its own error responses."""

    __slots__ = ("guard",)
    guard: _Guard

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        peer = args[1] if len(args) > 1 else "?"
        if isinstance(exc, BaseException) and not isinstance(exc, web.HTTPException) and (
                type(exc).__module__.startswith("aiohttp")):
            text = str(getattr(exc, "message", "") or exc).strip()
            reason = text.splitlines()[0][:200] if text else "-"
            MALFORMED("malformed", logging.WARNING,
                      f"malformed request from {peer}: {type(exc).__name__}: {reason}")
        else:  # a bug in a handler: keep the traceback, but not one per request
            MALFORMED("error", logging.ERROR, f"error handling a request from {peer}",
                      exc_info=exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response


class _Guard(asyncio.Protocol):
    """Sits between the (TLS) transport and aiohttp: releases the connection's slot, and
    enforces the header, body and write timeouts."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.inner: _Handler | None = None
        self.counted = True  # the accept loop admitted it
        self.busy = False
        self._head: asyncio.TimerHandle | None = None
        self._write: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.listener.live[self] = None
        self.inner = self.listener.make_handler()
        self.inner.guard = self
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.busy and self._head is None:
            self._head = asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._too_slow)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None  # type: ignore[func-returns-value]

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()
        if self._write is None:
            self._write = asyncio.get_running_loop().call_later(WRITE_TIMEOUT, self._too_slow)

    def resume_writing(self) -> None:
        if self._write is not None:
            self._write.cancel()
            self._write = None
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self.listener.live.pop(self, None)
        for timer in (self._head, self._write):
            if timer is not None:
                timer.cancel()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    # -- from the app (middleware)
    def request_started(self) -> None:
        self.busy = True
        if self._head is not None:
            self._head.cancel()
            self._head = None

    def request_done(self) -> None:
        self.busy = False

    # --
    def _too_slow(self) -> None:
        self.listener.timeouts += 1
        if self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        if self.counted:
            self.counted = False
            self.listener.open -= 1


class Listener:
    """One listening socket in front of an aiohttp AppRunner.

    It accepts connections itself (`sock_accept`), so a connection over the cap is closed
    before it costs a TLS handshake or a parser, then hands the socket to the loop with
    `connect_accepted_socket` (TLS handshake bounded by HEADER_TIMEOUT).
    """

    def __init__(self, runner: web.AppRunner, ssl_context: ssl.SSLContext | None, cap: int) -> None:
        self.runner = runner
        self.ssl_context = ssl_context
        self.cap = cap
        self.open = 0
        self.accepted = 0
        self.refused = 0
        self.timeouts = 0
        self.evicted = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.sock: socket.socket | None = None
        self.live: dict[_Guard, None] = {}  # established connections, oldest first

    def admit(self) -> bool:
        """Room for one more connection? At the cap, the oldest connection without a request
        in progress (idle, or still dripping its head) is closed to make room: a flood of
        idle connections cannot lock out a health check or a scrape, which send their
        request at once. Only when every connection is serving a request is one refused."""
        if self.open >= self.cap:
            victim = next((g for g in self.live if not g.busy and g.counted), None)
            if victim is None:
                self.refused += 1
                MALFORMED("cap", logging.WARNING,
                          f"connection refused: {self.open} connections busy (cap {self.cap})")
                return False
            self.evicted += 1
            victim.release()  # its slot is free now; the socket closes with the abort
            self.live.pop(victim, None)
            if victim.transport is not None:
                victim.transport.abort()
        self.open += 1
        self.accepted += 1
        return True

    def make_handler(self) -> _Handler:
        server = self.runner.server
        assert server is not None
        return _Handler(server, loop=asyncio.get_running_loop(), access_log=None,  # type: ignore[arg-type]
                        keepalive_timeout=IDLE_TIMEOUT, lingering_time=LINGER,
                        max_headers=64)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: wait for descriptors, never spin
                MALFORMED("accept", logging.WARNING, f"accept failed: {exc.strerror or exc}")
                await asyncio.sleep(0.1)
                continue
            if not self.admit():
                conn.close()
                continue
            self._spawn(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        guard = _Guard(self)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: guard, conn, ssl=self.ssl_context,
                ssl_handshake_timeout=HEADER_TIMEOUT if self.ssl_context is not None else None)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            conn.close()
            guard.release()

    async def start_tcp(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=128)
        self.sock.setblocking(False)
        self._spawn(self._accept(self.sock))

    async def start_unix(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
            self.sock.listen(16)
        except OSError:
            self.sock.close()
            self.sock = None
            raise
        self.sock.setblocking(False)
        self._spawn(self._accept(self.sock))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def guard_of(request: web.BaseRequest) -> _Guard | None:
    """The connection guard behind a request (None for test clients without one)."""
    guard = getattr(request.protocol, "guard", None)
    return guard if isinstance(guard, _Guard) else None


def guard_middleware() -> Callable[..., Any]:
    """Tells the connection guard a request head arrived (stops its header timer) and when
    the handler is done; adds the security headers to every response."""

    @web.middleware
    async def mark(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        guard = guard_of(request)
        if guard is not None:
            guard.request_started()
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = exc
        finally:
            if guard is not None:
                guard.request_done()
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["Server"] = SERVER_NAME
        return response

    return mark
