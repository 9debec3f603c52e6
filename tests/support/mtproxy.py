"""A small MTProxy for tests and the lab: dd / plain secrets (obfuscated2 keyed with the
secret) and ee secrets (fake TLS), relaying the client's MTProto stream to one data centre.

Why: reach's MTProxy check must be shown to reach a proxy, through it a DC, and back; and
the lab must be able to block the proxy by the SNI of its fake TLS. Written from the public
descriptions (core.telegram.org/mtproto/mtproto-transports; TDLib's TlsInit and MTProxy's
key derivation sha256(key + secret)), independently of probe.measure.wire.obfs2.

Fake TLS, server side: the ClientHello's random must be HMAC-SHA256(secret, hello with a
zero random), its last 4 bytes XORed with the client's unix time (within TIME_SKEW); the
answer is ServerHello + ChangeCipherSpec + one application-data record, the ServerHello
random being HMAC-SHA256(secret, client random + answer with a zero random). Then the
client's ChangeCipherSpec, and application-data records carrying obfuscated2.

Upstream, the proxy speaks the plain transport the client's init named (tag, then the
decrypted stream as is) to ``--upstream``: every DC id goes to the same lab DC.

Standalone::

  python -m tests.support.mtproxy --listen 198.18.80.1:443 --secret-file S --upstream 198.18.64.1:443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import struct
import sys
import time
from pathlib import Path

from tests.support._common import (
    StreamServer,
    add_listen_argument,
    listen_addresses,
    parse_listen,
    run_standalone,
)
from tests.support.mtproto import TAG_OBF_ABRIDGED, ObfuscatedWire

TIME_SKEW = 120  # seconds a fake-TLS client's clock may be off
RANDOM_AT = 11
UPSTREAM_TAGS = {b"\xee\xee\xee\xee": b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd": b"\xdd\xdd\xdd\xdd",
                 TAG_OBF_ABRIDGED: b"\xef"}


def parse_secret_hex(text: str) -> tuple[str, bytes]:
    """(kind, 16-byte key) from an operator's hex secret: 16 bytes, dd + 16, ee + 16 + domain."""
    raw = bytes.fromhex(text.strip())
    if len(raw) == 16:
        return "plain", raw
    if len(raw) == 17 and raw[0] == 0xDD:
        return "dd", raw[1:]
    if len(raw) > 17 and raw[0] == 0xEE:
        return "ee", raw[1:17]
    raise ValueError("not an MTProxy secret")


def hello_valid(key: bytes, hello: bytes, now: float) -> bool:
    """Does the ClientHello's random carry the HMAC of our secret (and a sane time)?"""
    if len(hello) < RANDOM_AT + 32:
        return False
    random = hello[RANDOM_AT:RANDOM_AT + 32]
    zeroed = hello[:RANDOM_AT] + bytes(32) + hello[RANDOM_AT + 32:]
    digest = hmac.new(key, zeroed, hashlib.sha256).digest()
    if not hmac.compare_digest(digest[:28], random[:28]):
        return False
    stamp = struct.unpack("<I", bytes(a ^ b for a, b in zip(digest[28:], random[28:], strict=True)))[0]
    return abs(stamp - now) <= TIME_SKEW


def server_greeting(key: bytes, client_random: bytes, session_id: bytes) -> bytes:
    """ServerHello (TLS 1.3 shape) + ChangeCipherSpec + an application-data record, keyed."""
    extensions = (struct.pack(">HH", 0x002B, 2) + b"\x03\x04"
                  + struct.pack(">HHHH", 0x0033, 36, 0x001D, 32) + os.urandom(32))
    body = (b"\x03\x03" + bytes(32) + bytes([len(session_id)]) + session_id + b"\x13\x01\x00"
            + struct.pack(">H", len(extensions)) + extensions)
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    records = (b"\x16\x03\x03" + struct.pack(">H", len(handshake)) + handshake
               + b"\x14\x03\x03\x00\x01\x01")
    filler = os.urandom(1024 + os.urandom(1)[0] * 4)
    records += b"\x17\x03\x03" + struct.pack(">H", len(filler)) + filler
    digest = hmac.new(key, client_random + records, hashlib.sha256).digest()
    return records[:RANDOM_AT] + digest + records[RANDOM_AT + 32:]


class TlsRecords:
    """The client's stream inside TLS records: the payloads of its application-data
    records (ChangeCipherSpec skipped), read exactly or a record at a time."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()

    async def _record(self) -> bytes:
        while True:
            header = await self.reader.readexactly(5)
            (length,) = struct.unpack(">H", header[3:5])
            payload = await self.reader.readexactly(length)
            if header[0] == 0x17:
                return payload
            if header[0] != 0x14:
                raise ValueError(f"unexpected TLS record type {header[0]:#04x}")

    async def readexactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += await self._record()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read(self, size: int) -> bytes:
        """What is buffered, else the next record's payload (b"" never: EOF raises)."""
        if not self.buffer:
            self.buffer += await self._record()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class MtproxyServer(StreamServer):
    """The proxy. ``relayed`` counts clients whose stream went on to the DC, ``rejected``
    those whose hello or init did not match the secret."""

    kind = "mtproxy"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, secret: str,
                 upstream: tuple[str, int]) -> None:
        super().__init__(host, port)
        self.secret_kind, self.key = parse_secret_hex(secret)
        self.upstream = upstream
        self.relayed = 0
        self.rejected = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source: asyncio.StreamReader | TlsRecords = reader
        tls = self.secret_kind == "ee"
        if tls:
            header = await reader.readexactly(5)
            (length,) = struct.unpack(">H", header[3:5])
            hello = header + await reader.readexactly(length)
            if header[0] != 0x16 or not hello_valid(self.key, hello, time.time()):
                self.rejected += 1
                return  # MTProxy would forward this to the real site; closing is enough here
            session_id = hello[RANDOM_AT + 33:RANDOM_AT + 33 + hello[RANDOM_AT + 32]]
            writer.write(server_greeting(self.key, hello[RANDOM_AT:RANDOM_AT + 32], session_id))
            await writer.drain()
            source = TlsRecords(reader)
        init = await source.readexactly(64)
        wire = ObfuscatedWire.accept(init, reader, writer, self.key)
        if wire is None:
            self.rejected += 1
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.relayed += 1
        try:
            up_writer.write(UPSTREAM_TAGS[wire.tag])
            await asyncio.gather(self._to_dc(source, wire, up_writer),
                                 self._to_client(up_reader, wire, writer, tls))
        finally:
            up_writer.close()

    @staticmethod
    async def _to_dc(source: asyncio.StreamReader | TlsRecords, wire: ObfuscatedWire,
                     up_writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                chunk = await source.read(4096)
                if not chunk:
                    break
                up_writer.write(wire.decryptor.update(chunk))
                await up_writer.drain()
        if up_writer.can_write_eof():
            up_writer.write_eof()

    @staticmethod
    async def _to_client(up_reader: asyncio.StreamReader, wire: ObfuscatedWire,
                         writer: asyncio.StreamWriter, tls: bool) -> None:
        while chunk := await up_reader.read(4096):
            data = wire.encryptor.update(chunk)
            if tls:
                data = b"\x17\x03\x03" + struct.pack(">H", len(data)) + data
            writer.write(data)
            await writer.drain()
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.mtproxy",
                                     description=__doc__.split("\n\n")[0])
    add_listen_argument(parser)
    parser.add_argument("--secret-file", required=True, type=Path)
    parser.add_argument("--upstream", required=True, metavar="ADDR:PORT")
    args = parser.parse_args(argv)
    try:
        secret = args.secret_file.read_text()
        servers = [MtproxyServer(h, p, secret=secret, upstream=parse_listen(args.upstream))
                   for h, p in listen_addresses(args)]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
