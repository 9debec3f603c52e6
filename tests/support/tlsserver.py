"""A TLS server with a private (trustme) CA, and an optional small HTTP/1.1 responder.

Why: the probe's TLS check must accept a certificate from the configured extra CA
(``tls.ca_file``) and tell a wrong name (``ssl_invalid_hostname``) from an unknown issuer
(``ssl_unknown_authority``, what a TLS-intercepting censor produces). Handshakes complete
for any SNI with the one configured certificate, which is what makes the SNI differential
(service name vs neutral name to the same address) meaningful.

Modes: ``good`` (certificate for ``names`` from the lab CA), ``wrong_name`` (lab CA, but for
``wrong.reach-lab.example``), ``unknown_ca`` (for ``names`` from a CA nobody trusts).

Standalone (the CA is shared with the probe config through the files in --ca-dir)::

  python -m tests.support.tlsserver --listen 198.18.64.10:443 --ca-dir /tmp/lab/ca \
      --name telegram.org --name web.telegram.org --blob /blob=4000000
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import trustme

from tests.support._common import (
    IRAN_BLOCKPAGE_BODY,
    HttpSpec,
    StreamServer,
    add_listen_argument,
    listen_addresses,
    read_http_head,
    run_standalone,
    write_http_response,
)

MODES = ("good", "wrong_name", "unknown_ca")
WRONG_NAME = "wrong.reach-lab.example"


class LabCA:
    """A trustme CA that can be saved to and loaded from PEM files.

    Why files: lab servers run as separate processes inside namespaces and the probe reads
    the CA from its config, so all of them must share one CA on disk.
    """

    def __init__(self, ca: trustme.CA | None = None, organization: str = "reach lab CA") -> None:
        self.ca = ca or trustme.CA(organization_name=organization)

    @classmethod
    def load(cls, cert_path: str | Path, key_path: str | Path) -> LabCA:
        """Load a CA saved with :meth:`save`."""
        return cls(trustme.CA.from_pem(Path(cert_path).read_bytes(), Path(key_path).read_bytes()))

    @classmethod
    def load_or_create(cls, directory: str | Path) -> LabCA:
        """``directory``/ca.pem + ca.key, created on first use."""
        d = Path(directory)
        cert, key = d / "ca.pem", d / "ca.key"
        if cert.exists() and key.exists():
            return cls.load(cert, key)
        ca = cls()
        ca.save(cert, key)
        return ca

    def save(self, cert_path: str | Path, key_path: str | Path) -> None:
        """Write the CA certificate and key (key mode 0600)."""
        Path(cert_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cert_path).write_bytes(self.ca.cert_pem.bytes())
        key = Path(key_path)
        key.touch(mode=0o600)
        key.write_bytes(self.ca.private_key_pem.bytes())

    def write_ca_pem(self, path: str | Path) -> Path:
        """Write only the CA certificate: the file for the probe config's ``tls.ca_file``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.ca.cert_pem.bytes())
        return p

    def server_context(self, names: Sequence[str]) -> ssl.SSLContext:
        """A server context with a leaf certificate for ``names`` (SAN list)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*names, common_name=names[0]).configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA (for tests)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def write_ca_pem(ca: LabCA | trustme.CA, path: str | Path) -> Path:
    """Write a CA's certificate PEM to ``path`` (the probe config's ``tls.ca_file``)."""
    lab = ca if isinstance(ca, LabCA) else LabCA(ca)
    return lab.write_ca_pem(path)


class TlsServer(StreamServer):
    """TLS listener; after the handshake serves ``http`` (or, if None, holds the line).

    ``server_names`` records the SNI of every handshake (None when the client sent none).
    """

    kind = "tls"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ca: LabCA | None = None,
        names: Sequence[str] = ("localhost",),
        mode: str = "good",
        http: HttpSpec | None = None,
        serve_http: bool = True,
    ) -> None:
        super().__init__(host, port)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if not names:
            raise ValueError("need at least one certificate name")
        self.ca = ca or LabCA()
        self.names = list(names)
        self.mode = mode
        self.http = (http or HttpSpec()) if serve_http else None
        self.server_names: list[str | None] = []
        self._ctx: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ctx is None:
            if self.mode == "good":
                ctx = self.ca.server_context(self.names)
            elif self.mode == "wrong_name":
                ctx = self.ca.server_context([WRONG_NAME])
            else:
                ctx = LabCA(organization="not the lab CA").server_context(self.names)

            def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                self.server_names.append(name)

            ctx.sni_callback = record_sni  # type: ignore[assignment]
            self._ctx = ctx
        return self._ctx

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.http is None:
            while await reader.read(65536):
                pass
            return
        method, path = await read_http_head(reader)
        await write_http_response(writer, self.http, method, path)


def http_spec_from_args(args: argparse.Namespace) -> HttpSpec:
    """The HttpSpec described by --status/--body/--blob/--blockpage (shared with tcpserver)."""
    spec = HttpSpec(status=args.status, body=args.body.encode(), rate_bps=args.rate)
    if getattr(args, "blockpage", False):
        spec.status, spec.body, spec.server_header = 403, IRAN_BLOCKPAGE_BODY, "nginx"
    for item in args.blob:
        path, _, size = item.partition("=")
        spec.blobs[path] = int(size)
    for item in getattr(args, "header", []):
        name, _, value = item.partition("=")
        spec.extra_headers[name] = value
    return spec


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """--status, --body, --blob PATH=BYTES, --header NAME=VALUE, --blockpage."""
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--body", default="reach lab\n")
    parser.add_argument("--blob", action="append", default=[], metavar="PATH=BYTES")
    parser.add_argument("--rate", type=float, default=None, help="pace blobs to BITS/s")
    parser.add_argument("--blockpage", action="store_true", help="answer Iran's 403 iframe blockpage")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra response header (e.g. Location=https://... with --status 301)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.tlsserver", description=__doc__.split("\n\n")[0]
    )
    add_listen_argument(parser)
    parser.add_argument("--ca-dir", required=True, help="directory with ca.pem/ca.key")
    parser.add_argument("--name", action="append", default=[], help="certificate name (SAN)")
    parser.add_argument("--mode", choices=MODES, default="good")
    parser.add_argument("--no-http", action="store_true", help="hold the line after handshake")
    add_http_arguments(parser)
    args = parser.parse_args(argv)
    try:
        ca = LabCA.load_or_create(args.ca_dir)
        spec = http_spec_from_args(args)
        servers = [
            TlsServer(
                h,
                p,
                ca=ca,
                names=args.name or ["localhost"],
                mode=args.mode,
                http=spec,
                serve_http=not args.no_http,
            )
            for h, p in listen_addresses(args)
        ]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
