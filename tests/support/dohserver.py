"""DNS over HTTPS (RFC 8484, POST /dns-query) with a lab CA's certificate.

Why: a vantage whose baseline a censor blocks proves that it is online through
authenticated answers from outside (issue 14), and a DoH control whose certificate verifies
is one. A plain resolver's answer proves nothing (the vantage's own resolver answers while
nothing beyond it does). The answers are a DnsServer's (same zone file, same behaviours),
carried over HTTPS instead of UDP/TCP.

Standalone::

  python -m tests.support.dohserver --listen 198.18.3.43:443 --ca-dir CA \\
      --name 198.18.3.43 --config zone.yaml
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from tests.support._common import (
    BaseServer,
    add_listen_argument,
    listen_addresses,
    make_socket,
    run_standalone,
)
from tests.support.dnsserver import DnsServer, load_config
from tests.support.tlsserver import LabCA

MAX_QUERY = 4096  # a DNS query is small: a larger body is junk


class DohServer(BaseServer):
    """Answers DNS messages POSTed to /dns-query from `dns`'s zone, over TLS."""

    kind = "doh"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ca: LabCA,
                 names: Sequence[str], dns: DnsServer) -> None:
        super().__init__(host, port)
        self.ca, self.names, self.dns = ca, list(names), dns
        self.queries = 0
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        if request.content_type != "application/dns-message":
            return web.Response(status=415)
        wire = await request.content.read(MAX_QUERY + 1)
        replies = self.dns.respond(wire, "tcp") if len(wire) <= MAX_QUERY else []
        self.queries += 1
        if not replies:
            return web.Response(status=400)
        return web.Response(body=replies[0][1], content_type="application/dns-message")

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/dns-query", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = make_socket(self.host, self.port, socket.SOCK_STREAM)
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=self.ca.server_context(self.names))
        await site.start()
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.dohserver",
                                     description=__doc__.split("\n\n")[0])
    add_listen_argument(parser)
    parser.add_argument("--ca-dir", required=True, help="directory with ca.pem/ca.key")
    parser.add_argument("--name", action="append", default=[], help="certificate name or address")
    parser.add_argument("--config", required=True, help="zone file (as tests.support.dnsserver)")
    args = parser.parse_args(argv)
    try:
        ca = LabCA.load_or_create(args.ca_dir)
        data = load_config(args.config)
        servers = [DohServer(h, p, ca=ca, names=args.name or [h], dns=DnsServer.from_config(data))
                   for h, p in listen_addresses(args)]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
