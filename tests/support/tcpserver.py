"""Plain TCP listeners: reset at accept, tarpit, close, and a small HTTP server.

Why: a censor or a broken service shows up to the probe as one of a few TCP behaviours:
an RST right after the handshake (``connection_reset``), a peer that accepts and never
says anything (timeouts in the next step), a FIN (``eof_error``), or an HTTP answer — the
real page, a blockpage (Iran's 403 iframe to 10.10.34.34) or a big blob for throughput.

Modes: ``reset`` (SO_LINGER 0 close at accept), ``tarpit`` (accept, never read, hold until
stopped), ``close`` (accept, close with FIN), ``http`` (status/body/blobs), ``blockpage``
(``http`` preset: Iran's ``HTTP/1.1 403 Forbidden`` iframe page).

Standalone::

  python -m tests.support.tcpserver --listen 198.18.2.10:80 --mode http --blob /blob=4000000
  python -m tests.support.tcpserver --listen 198.18.1.80:8080 --mode blockpage
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tests.support._common import (
    IRAN_BLOCKPAGE_BODY,
    HttpSpec,
    StreamServer,
    abort_with_reset,
    add_listen_argument,
    listen_addresses,
    read_http_head,
    run_standalone,
    write_http_response,
)
from tests.support.tlsserver import add_http_arguments, http_spec_from_args

MODES = ("reset", "tarpit", "close", "http", "blockpage")


def blockpage_spec() -> HttpSpec:
    """Iran's national blockpage as an HttpSpec (every path)."""
    return HttpSpec(status=403, body=IRAN_BLOCKPAGE_BODY, server_header="nginx")


class TcpServer(StreamServer):
    """A TCP listener with one of :data:`MODES`."""

    kind = "tcp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        mode: str = "http",
        http: HttpSpec | None = None,
    ) -> None:
        super().__init__(host, port)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self.http = http or (blockpage_spec() if mode == "blockpage" else HttpSpec())
        #: (method, path) of every HTTP request served.
        self.requests: list[tuple[str, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            abort_with_reset(writer)
            return
        if self.mode == "close":
            writer.close()
            return
        if self.mode == "tarpit":
            # never read: the kernel buffers fill and the client's writes stall; wait until
            # the server is stopped (stop() cancels this task)
            await asyncio.Event().wait()
            return
        method, path = await read_http_head(reader)
        self.requests.append((method, path))
        await write_http_response(writer, self.http, method, path)


class ResetServer(TcpServer):
    """Resets every connection at accept."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, mode="reset")


class TarpitServer(TcpServer):
    """Accepts and never reads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port, mode="tarpit")


class HttpServer(TcpServer):
    """Plain HTTP with a configurable status/body and blobs (``HttpSpec``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, http: HttpSpec | None = None):
        super().__init__(host, port, mode="http", http=http)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.tcpserver", description=__doc__.split("\n\n")[0]
    )
    add_listen_argument(parser)
    parser.add_argument("--mode", choices=MODES, default="http")
    add_http_arguments(parser)
    args = parser.parse_args(argv)
    if args.mode == "blockpage":
        args.blockpage = True
    try:
        spec = http_spec_from_args(args)
        servers = [TcpServer(h, p, mode=args.mode, http=spec) for h, p in listen_addresses(args)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
