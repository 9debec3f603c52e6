"""A WhatsApp chat server as far as its first message: the responder's half of Noise XX.

Why: the probe's `noise` check proves a WhatsApp chat server answered by decrypting its
ServerHello and verifying the certificate chain against WhatsApp's root key. The lab puts
one of these on every chat address, with a *test* root (the probe's config replaces the
`whatsapp` anchor with `root_pem()`), and makes it misbehave on purpose.

Written independently of probe.measure.wire.noise (only `cryptography` is shared), so the
two halves check each other. Wire format (whatsmeow socket/, handshake.go; Baileys):
  client: [45 44 00 01 | len(3) | routing info] 57 41 06 03 | len(3) | HandshakeMessage{
          clientHello(2){ephemeral(1)}}
  server: len(3) | HandshakeMessage{serverHello(3){ephemeral(1), static(2), payload(3)}}
  symmetric state: h = ck = "Noise_XX_25519_AESGCM_SHA256\\0\\0\\0\\0"; h = H(h||prologue);
  h = H(h||ce); h = H(h||se); ck,k = HKDF(ck, DH(se,ce)); static = AESGCM(k, n=0, ad=h,
  s); h = H(h||static); ck,k = HKDF(ck, DH(s,ce)); payload = AESGCM(k, n=0, ad=h, chain)
  chain: CertChain{leaf(1), intermediate(2)} of NoiseCertificate{details(1), signature(2)};
  details{serial(1), issuerSerial(2), key(3), notBefore(4), notAfter(5)}; signatures are
  XEdDSA: an Ed25519 signature with the signer's Edwards sign bit in its top bit, the
  signer's key published as the Montgomery u-coordinate.

Modes (after the ClientHello was read):
  ok            a ServerHello with a chain to the test root
  foreign_root  the same, signed by another root (an interceptor's own key)
  wrong_leaf    a chain to the test root whose leaf is not this server's static key
  garbage       64 random bytes
  http          an HTTP 403 blockpage
  silent        keep reading, never answer
  close         close the connection (FIN)
  reset         close with RST

Standalone::

  python -m tests.support.noiseserver --listen 198.18.72.1:443 --listen 198.18.72.1:5222
  python -m tests.support.noiseserver --write-root /tmp/whatsapp-test-root.pem
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.support._common import (
    StreamServer,
    abort_with_reset,
    add_listen_argument,
    listen_addresses,
    run_standalone,
)

MODES = ("ok", "foreign_root", "wrong_leaf", "garbage", "http", "silent", "close", "reset")
NAME = b"Noise_XX_25519_AESGCM_SHA256\x00\x00\x00\x00"
P = 2**255 - 19
BLOCKPAGE = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: 20\r\n"
             b"Connection: close\r\n\r\n<h1>Blocked</h1>\r\n\r\n")


def _seeded(label: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


#: Deterministic, so the standalone servers in the lab and the probe's config agree.
TEST_ROOT = _seeded("reach lab: WhatsApp Noise test root")
FOREIGN_ROOT = _seeded("reach lab: an interceptor's root")
INTERMEDIATE = _seeded("reach lab: WhatsApp Noise test intermediate")


def varint(value: int) -> bytes:
    out = b""
    while value > 0x7F:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def ld(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def read_ld(data: bytes) -> dict[int, bytes]:
    """Length-delimited fields of a message (all a ClientHello has)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        key = data[pos]
        pos += 1
        if key & 7 != 2:
            raise ValueError("unexpected wire type")
        length = 0
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out[key >> 3] = data[pos:pos + length]
        pos += length
    return out


def montgomery(key: Ed25519PrivateKey) -> bytes:
    """The signer's public key as Curve25519 publishes it: u = (1+y)/(1-y)."""
    y = int.from_bytes(key.public_key().public_bytes_raw(), "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, P - 2, P) % P).to_bytes(32, "little")


def xsign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    sign_bit = key.public_key().public_bytes_raw()[31] & 0x80
    signature = bytearray(key.sign(message))
    signature[63] |= sign_bit
    return bytes(signature)


def root_pem(root: Ed25519PrivateKey = TEST_ROOT) -> bytes:
    """The test root as the probe reads an anchor file: a PEM X25519 public key."""
    return X25519PublicKey.from_public_bytes(montgomery(root)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_chain(static: bytes, root: Ed25519PrivateKey, now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    inter = (vi(1, 7) + vi(2, 0) + ld(3, montgomery(INTERMEDIATE)) + vi(4, int(now) - 86400)
             + vi(5, int(now) + 86400))
    leaf = vi(1, 4242) + vi(2, 7) + ld(3, static) + vi(4, int(now) - 3600) + vi(5, int(now) + 3600)
    return (ld(1, ld(1, leaf) + ld(2, xsign(INTERMEDIATE, leaf)))
            + ld(2, ld(1, inter) + ld(2, xsign(root, inter))))


class _State:
    def __init__(self) -> None:
        self.h = NAME
        self.ck = NAME
        self.key = b""

    def mix(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, secret: bytes) -> None:
        out = HKDF(hashes.SHA256(), 64, salt=self.ck, info=None).derive(secret)
        self.ck, self.key = out[:32], out[32:]

    def encrypt(self, plain: bytes) -> bytes:
        ct = AESGCM(self.key).encrypt(bytes(12), plain, self.h)  # counter 0 after each mix
        self.mix(ct)
        return ct


def server_hello(prologue: bytes, client_e: bytes, static: X25519PrivateKey, chain: bytes) -> bytes:
    """The framed ServerHello answering `client_e`."""
    state = _State()
    state.mix(prologue)
    state.mix(client_e)
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes_raw()
    peer = X25519PublicKey.from_public_bytes(client_e)
    state.mix(eph_pub)
    state.mix_key(eph.exchange(peer))
    static_ct = state.encrypt(static.public_key().public_bytes_raw())
    state.mix_key(static.exchange(peer))
    payload_ct = state.encrypt(chain)
    message = ld(3, ld(1, eph_pub) + ld(2, static_ct) + ld(3, payload_ct))
    return len(message).to_bytes(3, "big") + message


class NoiseServer(StreamServer):
    """WhatsApp chat responder; ``mode`` may be changed between connections by tests."""

    kind = "noise"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, mode: str = "ok") -> None:
        super().__init__(host, port)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self.static = X25519PrivateKey.generate()
        #: The client ephemeral keys received, in order (tests check what came).
        self.hellos: list[bytes] = []
        #: The prologues received (the `WA` bytes, after any routing header).
        self.prologues: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(4)
        if head[:2] == b"ED":
            length = int.from_bytes(await reader.readexactly(3), "big")
            await reader.readexactly(length)
            head = await reader.readexactly(4)
        if head[:2] != b"WA":
            return  # not a WhatsApp client: the real server closes too
        self.prologues.append(head)
        length = int.from_bytes(await reader.readexactly(3), "big")
        if length > 4096:
            return
        hello = read_ld(read_ld(await reader.readexactly(length)).get(2, b""))
        client_e = hello.get(1, b"")
        if len(client_e) != 32:
            return
        self.hellos.append(client_e)
        if self.mode == "reset":
            abort_with_reset(writer)
            return
        if self.mode == "close":
            writer.close()
            return
        if self.mode == "silent":
            while await reader.read(65536):
                pass
            return
        if self.mode == "garbage":
            writer.write(os.urandom(64))
        elif self.mode == "http":
            writer.write(BLOCKPAGE)
        else:
            static = self.static.public_key().public_bytes_raw()
            if self.mode == "wrong_leaf":
                static = X25519PrivateKey.generate().public_key().public_bytes_raw()
            root = FOREIGN_ROOT if self.mode == "foreign_root" else TEST_ROOT
            writer.write(server_hello(head, client_e, self.static, cert_chain(static, root)))
        await writer.drain()
        await reader.read(65536)  # a real client would send ClientFinish; the probe hangs up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.noiseserver",
                                     description=__doc__.split("\n\n")[0])
    add_listen_argument(parser)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--write-root", metavar="FILE", help="write the test root (PEM) and exit")
    args = parser.parse_args(argv)
    if args.write_root:
        with open(args.write_root, "wb") as handle:
            handle.write(root_pem())
        return 0
    try:
        servers = [NoiseServer(h, p, mode=args.mode) for h, p in listen_addresses(args)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
