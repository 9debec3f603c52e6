"""Shared plumbing for the test servers: sockets, lifecycle, standalone entry point, HTTP.

Why one base: every server needs the same things (IPv4 and IPv6 listen addresses, port 0,
clean stop that also kills open connections, a ``ready`` line for the lab's process
launcher, SIGTERM handling), and getting those subtly different per server is how lab runs
leak processes or hang.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import signal
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

# Linux socket options, not exported by the socket module on every Python build. FREEBIND
# lets a lab server bind an address before its interface has finished coming up.
IP_FREEBIND = 15
IPV6_FREEBIND = 78

#: Iran's national blockpage (OONI / getlantern detour fingerprint): a 403 whose body is an
#: iframe to 10.10.34.34. Served by the lab's censor for plain-HTTP requests.
IRAN_BLOCKPAGE_BODY = (
    b'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1256">'
    b"<title>M1-6</title></head><body>"
    b'<iframe src="http://10.10.34.34?type=Invalid Site&policy=MainPolicy" '
    b'style="width: 100%; height: 100%" scrolling="no" marginwidth="0" marginheight="0" '
    b'frameborder="0" vspace="0" hspace="0"></iframe></body></html>'
)


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``ADDR:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` (= 127.0.0.1) into (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad listen address {text!r}: want [V6ADDR]:PORT")
        return host, int(rest[1:])
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"bad listen address {text!r}: want ADDR:PORT")
    if ":" in host:
        raise ValueError(f"bad listen address {text!r}: put IPv6 addresses in brackets")
    return host or "127.0.0.1", int(port)


def format_addr(host: str, port: int) -> str:
    """The inverse of :func:`parse_listen` (brackets around IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A bound (and for TCP listening) non-blocking socket for ``host``.

    IPv6 sockets are V6ONLY so that a lab host can run separate v4 and v6 listeners on the
    same port; FREEBIND so that binding does not race the address coming up in a namespace.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(256)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def abort_with_reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with an RST instead of a FIN (SO_LINGER 0), as a reset would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class BaseServer:
    """Lifecycle shared by all servers: start() binds and returns the port, stop() undoes it."""

    #: Short name used in the ``ready`` line of the standalone process.
    kind = "server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        raise NotImplementedError

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) as bound."""
        return self.host, self.port

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class StreamServer(BaseServer):
    """A TCP (optionally TLS) server; subclasses implement :meth:`handle`.

    Tracks its connection tasks so that stop() really ends them: a tarpit or a silent
    MTProto responder would otherwise keep sockets open after a test finished.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        #: Number of accepted connections (tests assert that a probe really connected).
        self.connections = 0

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS servers return their context; plain servers None."""
        return None

    async def start(self) -> int:
        sock = make_socket(self.host, self.port, socket.SOCK_STREAM)
        self.port = sock.getsockname()[1]
        ctx = self.ssl_context()
        self._server = await asyncio.start_server(
            self._run,
            sock=sock,
            ssl=ctx,
            ssl_handshake_timeout=10 if ctx is not None else None,
        )
        return self.port

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        try:
            await self.handle(reader, writer)
        except (OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass  # peers (probes, fuzzers) hang up or send junk; that is their right
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            if not writer.transport.is_closing():
                writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection."""
        raise NotImplementedError

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None


class ThreadedServer:
    """Run an async server on its own event loop in a daemon thread.

    Why: hypothesis tests and the benchmark are synchronous; they need a real server without
    owning an event loop. ``with ThreadedServer(DnsServer(...)) as srv: srv.port``.
    """

    def __init__(self, server: BaseServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> BaseServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def add_listen_argument(parser: argparse.ArgumentParser) -> None:
    """``--listen ADDR:PORT`` (repeatable: one process can serve several lab addresses)."""
    parser.add_argument(
        "--listen",
        action="append",
        default=None,
        metavar="ADDR:PORT",
        help="address to listen on, [v6]:port for IPv6; repeatable (default 127.0.0.1:0)",
    )


def listen_addresses(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The parsed ``--listen`` values (default 127.0.0.1:0)."""
    return [parse_listen(x) for x in (args.listen or ["127.0.0.1:0"])]


async def serve_until_signal(servers: Sequence[BaseServer], reload: Callable[[], None] | None = None) -> None:
    """Start all servers, print one ``ready`` line, run until SIGTERM/SIGINT, stop them.

    With ``reload``, SIGHUP calls it and prints ``reloaded`` (or ``reload-error ...``): the
    lab flips a resolver's behaviour between scenarios without a process restart.
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if reload is not None:
        hook = reload

        def on_hup() -> None:
            try:
                hook()
            except Exception as exc:
                print(f"reload-error {exc}", flush=True)
            else:
                print("reloaded", flush=True)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
    started: list[BaseServer] = []
    try:
        for server in servers:
            await server.start()
            started.append(server)
        kind = servers[0].kind if servers else "server"
        addrs = " ".join(format_addr(s.host, s.port) for s in started)
        print(f"ready {kind} {addrs}", flush=True)
        await done.wait()
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                await server.stop()


def run_standalone(servers: Sequence[BaseServer], reload: Callable[[], None] | None = None) -> int:
    """Entry point body for ``python -m tests.support.X``: exit 0 on SIGTERM, 1 on bind error."""
    try:
        asyncio.run(serve_until_signal(servers, reload))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


# --------------------------------------------------------------------------------------
# Minimal HTTP/1.1 (enough for probes' http checks, blockpages and throughput blobs)


@dataclass
class HttpSpec:
    """What an HTTP responder answers: one status/body for every path, plus big blobs.

    ``blobs`` maps a path (e.g. ``/blob``) to a size in bytes; those paths stream that many
    bytes, which the probe uses to measure throughput (throttling scenario).
    """

    status: int = 200
    body: bytes = b"reach lab\n"
    content_type: str = "text/html; charset=utf-8"
    server_header: str = "reach-lab"
    blobs: dict[str, int] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)
    #: Pace blob bodies to this many bits/s per connection (None = as fast as possible).
    #: Why: on loopback/veth an unpaced transfer runs at CPU speed, so comparing two of them
    #: measures scheduler noise; a real path has a bottleneck, and the lab gives every
    #: connection the same one.
    rate_bps: float | None = None


#: Request heads larger than this are refused (fuzzers must not make the server buffer forever).
MAX_REQUEST_HEAD = 64 * 1024
_CHUNK = b"\0" * 16384


async def read_http_head(reader: asyncio.StreamReader, prefix: bytes = b"") -> tuple[str, str]:
    """Read a request head; return (method, path). Raises ValueError on junk."""
    data = prefix
    if b"\r\n\r\n" not in data:
        try:
            data += await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise ValueError("request head too large") from exc
    if len(data) > MAX_REQUEST_HEAD:
        raise ValueError("request head too large")
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {line!r}")
    return parts[0], parts[1]


async def write_http_response(writer: asyncio.StreamWriter, spec: HttpSpec, method: str, path: str) -> None:
    """Write one response (Connection: close) according to ``spec``."""
    path_only = path.split("?", 1)[0]
    if path_only in spec.blobs:
        status, length, body = 200, spec.blobs[path_only], None
        ctype = "application/octet-stream"
    else:
        status, length, body = spec.status, len(spec.body), spec.body
        ctype = spec.content_type
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    headers = {
        "Server": spec.server_header,
        "Content-Type": ctype,
        "Content-Length": str(length),
        "Connection": "close",
        **spec.extra_headers,
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode("latin-1") + b"\r\n")
    if method != "HEAD":
        if body is not None:
            writer.write(body)
        else:
            await _write_blob(writer, length, spec.rate_bps)
    await writer.drain()


async def _write_blob(writer: asyncio.StreamWriter, length: int, rate_bps: float | None) -> None:
    """Stream ``length`` zero bytes, paced to ``rate_bps`` if given."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while sent < length:
        chunk = _CHUNK[: min(length - sent, len(_CHUNK))]
        writer.write(chunk)
        sent += len(chunk)
        await writer.drain()
        if rate_bps:
            ahead = sent * 8 / rate_bps - (loop.time() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
