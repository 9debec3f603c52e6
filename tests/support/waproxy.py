"""A WhatsApp proxy in miniature: a TCP relay to one chat server, TLS-terminating on
request, as github.com/WhatsApp/proxy's HAProxy relays the apps to g.whatsapp.net (its
:443 wraps the chat stream in TLS with a self-signed certificate; :5222 and :80 are plain).

Why: the probe's WhatsApp-proxy targets run the Noise handshake through the proxy and
verify the chain of the chat server behind it. The relay reads nothing and changes
nothing; it only carries bytes, so what the probe proves is the path through it.

Standalone::

  python -m tests.support.waproxy --listen 198.18.121.1:5222 --upstream 198.18.80.1:5222
  python -m tests.support.waproxy --listen 198.18.121.1:443 --upstream 198.18.80.1:443 --tls
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys

from tests.support._common import (
    StreamServer,
    add_listen_argument,
    listen_addresses,
    parse_listen,
    run_standalone,
)
from tests.support.tlsserver import LabCA


class WhatsappProxy(StreamServer):
    kind = "waproxy"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, upstream: tuple[str, int],
                 tls: bool = False) -> None:
        super().__init__(host, port)
        self.upstream = upstream
        self._context: ssl.SSLContext | None = None
        if tls:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            LabCA(organization="WhatsApp proxy (self-signed)").ca.issue_cert(
                "whatsapp-proxy.invalid").configure_cert(self._context)

    def ssl_context(self) -> ssl.SSLContext | None:
        return self._context

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.waproxy",
                                     description=__doc__.split("\n\n")[0])
    add_listen_argument(parser)
    parser.add_argument("--upstream", required=True, metavar="ADDR:PORT")
    parser.add_argument("--tls", action="store_true", help="terminate TLS (self-signed)")
    args = parser.parse_args(argv)
    try:
        upstream = parse_listen(args.upstream)
        servers = [WhatsappProxy(h, p, upstream=upstream, tls=args.tls) for h, p in listen_addresses(args)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
