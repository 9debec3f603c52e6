"""An MTProto responder: answers req_pq_multi with resPQ, or misbehaves on purpose.

Why: the probe's strongest "this peer really is the service" check is the unauthenticated
first exchange (req_pq_multi -> resPQ echoing our nonce). A blackhole, a blockpage or a
TCP-terminating middlebox cannot echo the nonce; a protocol filter lets TCP through but
drops or resets the MTProto bytes. The lab puts one of these on every DC address.

Wire format (domain research 1.5-1.6; all integers little-endian):
  transport tag: intermediate ``ee ee ee ee`` (each packet: 4-byte length + payload),
  abridged ``ef`` (1-byte length/4, or ``7f`` + 3-byte length/4), padded intermediate
  ``dd dd dd dd`` (answered with 0-15 bytes of random padding).
  obfuscated2 (what the apps send): a 64-byte init; AES-256-CTR with key init[8:40], iv
  init[40:56] from the client, the same 48 bytes reversed from the server; decrypted,
  init[56:60] is one of the tags above (abridged as ``ef ef ef ef``) and init[60:62] the DC
  id. The packets follow inside the stream.
  req_pq_multi: auth_key_id 0 (8) | msg_id (8) | length 20 (4) | be7e8ef1 (4) | nonce (16)
  resPQ: auth_key_id 0 | msg_id | length | 05162463 | nonce | server_nonce | pq (TL string)
         | 1cb5c415 (vector) | count | fingerprints (int64 each)

Modes (what happens after the first request was read):
  ok              resPQ echoing the nonce
  garbage         64 random bytes, unframed
  transport_error the 4-byte transport error -404 (``6c fe ff ff``) framed as a packet
  wrong_nonce     a well-formed resPQ with a different nonce
  silent          keep reading, never answer
  close           close the connection (FIN)
  reset           close with RST (SO_LINGER 0)
A request starting with an HTTP method gets ``HTTP/1.1 501 Not Implemented`` from
``nginx/0.3.33``, as real DCs answer (OONI ts-020), unless the mode is silent/close/reset.

Standalone::

  python -m tests.support.mtproto --listen 198.18.64.1:443 --listen [2001:db8:64::1]:443
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from tests.support._common import (
    StreamServer,
    abort_with_reset,
    add_listen_argument,
    listen_addresses,
    run_standalone,
)

MODES = ("ok", "garbage", "transport_error", "wrong_nonce", "silent", "close", "reset")

TAG_INTERMEDIATE = b"\xee\xee\xee\xee"
TAG_PADDED = b"\xdd\xdd\xdd\xdd"
TAG_ABRIDGED = b"\xef"
TAG_OBF_ABRIDGED = b"\xef\xef\xef\xef"  # abridged as an obfuscated init names it
REQ_PQ_MULTI = 0xBE7E8EF1
REQ_PQ = 0x60469778  # the older constructor, still answered by servers
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
#: The production RSA key fingerprint (domain research 1.6), plus the retired one.
FINGERPRINTS = (0xD09D1D85DE64FD85, 0xC3B42B026CE86B21)
#: Doc sample pq = 0x494C553B * 0x53911073 (both prime), as the real server sends p*q < 2^63.
PQ = 0x494C553B * 0x53911073
TRANSPORT_ERROR_404 = struct.pack("<i", -404)  # 6c fe ff ff
HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"DELE", b"PATC", b"CONN", b"TRAC")
HTTP_501 = (
    b"HTTP/1.1 501 Not Implemented\r\n"
    b"Server: nginx/0.3.33\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
#: Largest packet we accept: a req_pq_multi is 40 bytes; anything huge is a fuzzer.
MAX_PACKET = 1 << 16


def tl_bytes(data: bytes) -> bytes:
    """TL serialisation of a short byte string: length byte, data, pad to 4."""
    out = bytes([len(data)]) + data
    return out + b"\0" * (-len(out) % 4)


def build_req_pq_multi(nonce: bytes, msg_id: int | None = None) -> bytes:
    """The 40-byte plaintext message a client sends first (for tests and the fuzzers)."""
    if msg_id is None:
        msg_id = int(time.time()) << 32
    return struct.pack("<qqiI", 0, msg_id, 20, REQ_PQ_MULTI) + nonce


def build_res_pq(
    nonce: bytes, server_nonce: bytes | None = None, fingerprints: tuple[int, ...] = FINGERPRINTS,
    now: float | None = None,
) -> bytes:
    """A resPQ plaintext message answering ``nonce``."""
    server_nonce = server_nonce or os.urandom(16)
    body = (
        struct.pack("<I", RES_PQ)
        + nonce
        + server_nonce
        + tl_bytes(PQ.to_bytes(8, "big"))
        + struct.pack("<Ii", VECTOR, len(fingerprints))
        + b"".join(struct.pack("<Q", fp) for fp in fingerprints)
    )
    # server message ids: unix time * 2^32, mod 4 == 1
    msg_id = (int((time.time() if now is None else now) * 2**32) & ~3) | 1
    return struct.pack("<qqi", 0, msg_id, len(body)) + body


def parse_req_pq(payload: bytes) -> bytes | None:
    """The nonce of a req_pq_multi / req_pq message, or None if it is not one."""
    if len(payload) < 40:
        return None
    auth_key_id, _msg_id, length, ctor = struct.unpack_from("<qqiI", payload)
    if auth_key_id != 0 or length < 20 or ctor not in (REQ_PQ_MULTI, REQ_PQ):
        return None
    return payload[24:40]


def frame(payload: bytes, abridged: bool) -> bytes:
    """Wrap a packet in the transport the client chose."""
    if not abridged:
        return struct.pack("<i", len(payload)) + payload
    words = len(payload) // 4
    if words < 0x7F:
        return bytes([words]) + payload
    return b"\x7f" + words.to_bytes(3, "little") + payload


def frame_tag(payload: bytes, tag: bytes) -> bytes:
    """Frame for a transport tag; padded intermediate gets 0-15 random bytes of padding."""
    if tag == TAG_PADDED:
        payload += os.urandom(os.urandom(1)[0] % 16)
    return frame(payload, tag == TAG_OBF_ABRIDGED)


def transport_name(tag: bytes, obfuscated: bool) -> str:
    name = {TAG_INTERMEDIATE: "intermediate", TAG_PADDED: "padded", TAG_OBF_ABRIDGED: "abridged"}[tag]
    return f"obfuscated2/{name}" if obfuscated else name


class Wire:
    """The server's side of a connection: plain bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def readexactly(self, size: int) -> bytes:
        return await self.reader.readexactly(size)

    def write(self, data: bytes) -> None:
        self.writer.write(data)


def _ctr(key: bytes, iv: bytes) -> CipherContext:
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


def obfuscated_keys(init: bytes, secret: bytes = b"") -> tuple[CipherContext, CipherContext]:
    """The server's (decryptor, encryptor) for a client's 64-byte init, written from the
    transport docs independently of probe.measure.wire.obfs2: the client's key is init[8:40] and
    iv init[40:56]; the server's are the same 48 bytes reversed; an MTProxy secret is
    hashed into each key."""
    reverse = init[55:7:-1]
    client_key, server_key = init[8:40], reverse[:32]
    if secret:
        client_key = hashlib.sha256(client_key + secret).digest()
        server_key = hashlib.sha256(server_key + secret).digest()
    return _ctr(client_key, init[40:56]), _ctr(server_key, reverse[32:48])


class ObfuscatedWire(Wire):
    """An obfuscated2 connection: AES-256-CTR both ways, keyed by the client's init."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 decryptor: CipherContext, encryptor: CipherContext, tag: bytes, dc_id: int) -> None:
        super().__init__(reader, writer)
        self.decryptor = decryptor
        self.encryptor = encryptor
        self.tag = tag
        self.dc_id = dc_id

    @classmethod
    def accept(cls, init: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               secret: bytes = b"") -> ObfuscatedWire | None:
        """The wire for this init, or None if it does not decrypt to a known protocol tag."""
        decryptor, encryptor = obfuscated_keys(init, secret)
        plain = decryptor.update(init)
        tag = plain[56:60]
        if tag not in (TAG_INTERMEDIATE, TAG_PADDED, TAG_OBF_ABRIDGED):
            return None
        (dc_id,) = struct.unpack("<h", plain[60:62])
        return cls(reader, writer, decryptor, encryptor, tag, dc_id)

    async def readexactly(self, size: int) -> bytes:
        return self.decryptor.update(await self.reader.readexactly(size))

    def write(self, data: bytes) -> None:
        self.writer.write(self.encryptor.update(data))


async def read_packet(wire: Wire, tag: bytes) -> bytes:
    """One client packet in the transport `tag` names."""
    if tag == TAG_OBF_ABRIDGED:
        first = (await wire.readexactly(1))[0]
        words = first if first < 0x7F else int.from_bytes(await wire.readexactly(3), "little")
        length = words * 4
    else:
        (length,) = struct.unpack("<i", await wire.readexactly(4))
    if length < 0 or length > MAX_PACKET:
        raise ValueError(f"bad packet length {length}")
    return await wire.readexactly(length)


class MtprotoServer(StreamServer):
    """MTProto responder; ``mode`` may be changed between connections by tests."""

    kind = "mtproto"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        mode: str = "ok",
        fingerprints: tuple[int, ...] = FINGERPRINTS,
        clock_offset: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self.fingerprints = fingerprints
        #: Seconds the server's clock is ahead of ours (its resPQ msg_id says so).
        self.clock_offset = clock_offset
        #: Nonces of the requests received, in order (tests check the echo).
        self.nonces: list[bytes] = []
        #: Per connection: "intermediate", "obfuscated2/padded", ... (tests check what came).
        self.transports: list[str] = []
        #: DC ids carried by obfuscated inits, in order.
        self.dc_ids: list[int] = []

    async def _finish(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> bool:
        """Apply the connection-ending modes; True if the connection was ended."""
        if self.mode == "reset":
            abort_with_reset(writer)
            return True
        if self.mode == "close":
            writer.close()
            return True
        if self.mode == "silent":
            while await reader.read(65536):
                pass  # read and discard until the client gives up
            return True
        return False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(1)
        wire: Wire = Wire(reader, writer)
        if head == TAG_ABRIDGED:
            tag = TAG_OBF_ABRIDGED
        else:
            head += await reader.readexactly(3)
            if head in (TAG_INTERMEDIATE, TAG_PADDED):
                tag = head
            elif head in HTTP_METHODS:
                await reader.read(65536)  # the rest of the request, best effort
                if await self._finish(writer, reader):
                    return
                writer.write(HTTP_501)
                await writer.drain()
                return
            else:
                # obfuscated2: the rest of the 64-byte init says the keys and the protocol
                obfuscated = ObfuscatedWire.accept(head + await reader.readexactly(60), reader, writer)
                if obfuscated is None:  # junk: a real DC would wait for more; closing keeps fuzz fast
                    await self._finish(writer, reader)
                    return
                wire, tag = obfuscated, obfuscated.tag
                self.dc_ids.append(obfuscated.dc_id)
        self.transports.append(transport_name(tag, isinstance(wire, ObfuscatedWire)))
        await self.converse(wire, tag, reader, writer)

    async def converse(self, wire: Wire, tag: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        """Answer packets in the transport the client chose, until it goes away."""
        while True:
            try:
                payload = await read_packet(wire, tag)
            except (asyncio.IncompleteReadError, ValueError):
                return
            nonce = parse_req_pq(payload)
            if nonce is not None:
                self.nonces.append(nonce)
            if await self._finish(writer, reader):
                return
            if self.mode == "garbage":
                writer.write(os.urandom(64))
            elif self.mode == "transport_error" or nonce is None:
                wire.write(frame_tag(TRANSPORT_ERROR_404, tag))
            elif self.mode == "wrong_nonce":
                wire.write(frame_tag(build_res_pq(bytes(16), fingerprints=self.fingerprints), tag))
            else:
                wire.write(frame_tag(build_res_pq(nonce, fingerprints=self.fingerprints,
                                                  now=time.time() + self.clock_offset), tag))
            await writer.drain()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.mtproto", description=__doc__.split("\n\n")[0]
    )
    add_listen_argument(parser)
    parser.add_argument("--mode", choices=MODES, default="ok")
    args = parser.parse_args(argv)
    try:
        servers = [MtprotoServer(h, p, mode=args.mode) for h, p in listen_addresses(args)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_standalone(servers)


if __name__ == "__main__":
    sys.exit(main())
