"""MTProto: the unauthenticated first step of Telegram's handshake, over the apps' transports.

We send req_pq_multi and expect resPQ with our nonce echoed. A blackhole, a blockpage or a
TCP-terminating middlebox cannot echo the nonce, so a good answer proves a real Telegram
data centre (or a relay of one) is at the other end. Byte layouts: core.telegram.org/mtproto
(see shared/research/domain.md, 1.5-1.6).

The primary check (`mtproto`) speaks obfuscated2, as TDLib and Telegram Desktop do: what
the apps send is what a censor must let through for the apps to work. The plain
intermediate transport (`mtproto_plain`, fixed first bytes `eeeeeeee`) runs beside it as a
differential: a censor may filter one and not the other, in either direction, and the
classifier reads the pair. MTProxy (`probe.measure.checks.mtproxy`) reuses this exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
import time
from collections.abc import Callable

import probe.measure.wire.obfs2 as obfs2
from probe.measure.checks.base import Env, Step
from probe.measure.wire.net import converse, tcp_stats
from probe.model import failures
from probe.model.observation import Observation
from probe.sinks import scrub

INTERMEDIATE_TAG = obfs2.TAG_INTERMEDIATE
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
_RES_PQ_TEXT = f"{RES_PQ:#010x}"  # one string for every resPQ observation, not one each
TRANSPORT_ERRORS = {-404: "auth key not found", -429: "transport flood", -444: "invalid DC"}
TRANSPORT_CODE_RANGE = range(-1023, 0)  # transport errors are small negative numbers
# resPQ with one fingerprint is 88 bytes; a server has no reason to send more than a few.
MAX_REPLY = 1024
# Telegram rejects message ids more than 300 s in the past or 30 s in the future; a vantage
# whose clock is this far off sees the apps fail for a reason that is not the network.
CLOCK_SKEW_LIMIT = 30.0
REPLY_HEAD_BYTES = 64  # the raw first bytes of a reply kept as evidence (hex)
PADDED_MAX = 15  # padded intermediate adds 0-15 random bytes to a packet


def message_id(now: float | None = None) -> int:
    """A client message id: unix time * 2^32, divisible by 4, low 32 bits never zero (the
    spec forbids it; on a whole second they would be)."""
    msg_id = int((now if now is not None else time.time()) * 2**32) & ~3
    return msg_id if msg_id & 0xFFFFFFFF else msg_id | 4


def req_pq_message(nonce: bytes, now: float | None = None) -> bytes:
    """The 40-byte plaintext req_pq_multi message (unframed)."""
    body = struct.pack("<I", REQ_PQ_MULTI) + nonce
    return struct.pack("<qqi", 0, message_id(now), len(body)) + body


def req_pq_multi(nonce: bytes, now: float | None = None) -> bytes:
    """The framed plain-intermediate request: transport tag, length, and the message."""
    message = req_pq_message(nonce, now)
    return INTERMEDIATE_TAG + struct.pack("<i", len(message)) + message


def frame(tag: bytes, message: bytes) -> bytes:
    """One packet in the transport `tag` names (padded intermediate adds random padding)."""
    if tag == obfs2.TAG_ABRIDGED:
        words = len(message) // 4
        head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return head + message
    if tag == obfs2.TAG_PADDED:
        message += os.urandom(int.from_bytes(os.urandom(1)) % (PADDED_MAX + 1))
    return struct.pack("<i", len(message)) + message


class TransportError(failures.ProtocolError):
    """The server answered a transport error code: it speaks MTProto, but refused."""

    def __init__(self, code: int) -> None:
        super().__init__(f"transport code {code} ({TRANSPORT_ERRORS.get(code, 'unnamed')})")
        self.code = code


def parse_reply(payload: bytes, nonce: bytes, padded: bool = False) -> dict[str, object]:
    """Check a reply's payload; return evidence, or raise ProtocolError saying what is wrong.

    With `padded`, up to 15 bytes after the message are the transport's padding."""
    if len(payload) == 4:
        (code,) = struct.unpack("<i", payload)
        if code in TRANSPORT_CODE_RANGE:
            raise TransportError(code)
        raise failures.ProtocolError(f"4-byte reply {payload.hex()} is not resPQ")
    if len(payload) < 40:
        raise failures.ProtocolError(f"reply of {len(payload)} bytes is too short for resPQ")
    auth_key_id, msg_id, length, constructor = struct.unpack_from("<qqiI", payload)
    if auth_key_id != 0:
        raise failures.ProtocolError("reply is not a plaintext message (auth_key_id != 0)")
    if constructor != RES_PQ:
        raise failures.ProtocolError(f"constructor {constructor:#010x} is not resPQ")
    extra = len(payload) - 20 - length
    if extra != 0 and not (padded and 0 < extra <= PADDED_MAX):
        raise failures.ProtocolError(f"message length {length} does not match the frame")
    if payload[24:40] != nonce:
        raise failures.ProtocolError("resPQ does not echo our nonce")
    return {"constructor": _RES_PQ_TEXT, "server_nonce": payload[40:56].hex(),
            "server_msg_id": msg_id}


Cipher = Callable[[bytes], bytes]  # one direction of a stream cipher (obfuscated2's AES-CTR)


class Channel:
    """A connected socket with the transport's ciphers (identity for plain) and, for fake
    TLS, TLS application-data records around the stream. Keeps the first raw bytes it
    received, whatever they were, as evidence for a failure."""

    def __init__(self, sock: socket.socket, encrypt: Cipher | None = None, decrypt: Cipher | None = None,
                 records: bool = False, preamble: bytes = b"") -> None:
        self.sock = sock
        self._preamble = preamble  # raw bytes before the first record (fake TLS: CCS)
        self._encrypt = encrypt
        self._decrypt = decrypt
        self._records = records
        self._buffer = bytearray()  # decrypted bytes not yet consumed
        self.raw_head = bytearray()

    def use(self, encrypt: Cipher, decrypt: Cipher) -> None:
        """Switch the ciphers on (fake TLS: after the greeting, which is not encrypted)."""
        self._encrypt, self._decrypt = encrypt, decrypt

    async def send(self, data: bytes, opening: bytes = b"") -> None:
        """Send `data` through the cipher, after `opening` (the transport's header, which
        is sent as it is); both go in one segment, as the apps send them."""
        if self._encrypt is not None:
            data = self._encrypt(data)
        data = opening + data
        if self._records:
            data = obfs2.application_data(data)
        await asyncio.get_running_loop().sock_sendall(self.sock, self._preamble + data)
        self._preamble = b""

    async def send_raw(self, data: bytes) -> None:
        """Bytes onto the wire as they are (a fake-TLS ClientHello)."""
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv_raw(self, size: int) -> bytes:
        """Exactly `size` bytes off the wire, as they came."""
        loop = asyncio.get_running_loop()
        data = bytearray()
        while len(data) < size:
            chunk = await loop.sock_recv(self.sock, size - len(data))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(data), size)
            if len(self.raw_head) < REPLY_HEAD_BYTES:
                self.raw_head += chunk[:REPLY_HEAD_BYTES - len(self.raw_head)]
            data += chunk
        return bytes(data)

    def top_up_head(self) -> None:
        """After a failure: add what has already arrived to the evidence, without waiting
        (a blockpage's "HTTP" was read as a frame length, the rest is in the socket)."""
        missing = REPLY_HEAD_BYTES - len(self.raw_head)
        if missing > 0 and self.raw_head:
            with contextlib.suppress(OSError):
                self.raw_head += self.sock.recv(missing, socket.MSG_DONTWAIT)

    async def _fill(self) -> None:
        if not self._records:
            self._buffer += await self.recv_raw(1)
            return
        header = await self.recv_raw(5)
        (length,) = struct.unpack(">H", header[3:5])
        if header[:3] != b"\x17\x03\x03" or length > obfs2.MAX_RECORD:
            raise failures.ProtocolError(f"fake TLS: {header.hex()} is not an application-data record")
        self._buffer += await self.recv_raw(length)

    async def recv(self, size: int) -> bytes:
        """Exactly `size` bytes of the (decrypted) stream."""
        if self._records:
            while len(self._buffer) < size:
                await self._fill()
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        else:
            data = await self.recv_raw(size)
        return self._decrypt(data) if self._decrypt is not None else data


async def read_packet(channel: Channel, tag: bytes) -> bytes:
    """One packet of the transport `tag` names; a bare 4-byte transport error code is
    returned as it came (some servers send it unframed)."""
    if tag == obfs2.TAG_ABRIDGED:
        first = (await channel.recv(1))[0]
        words = first if first < 0x7F else int.from_bytes(await channel.recv(3), "little")
        length = words * 4
    else:
        header = await channel.recv(4)
        (length,) = struct.unpack("<i", header)
        if length in TRANSPORT_CODE_RANGE:
            return header
    if not 4 <= length <= MAX_REPLY:
        raise failures.ProtocolError(f"frame length {length} is not a plausible resPQ")
    return await channel.recv(length)


def clock_evidence(server_msg_id: int, received: float) -> dict[str, object]:
    """The server's clock against ours, from resPQ's msg_id (unix time * 2^32)."""
    offset = round(server_msg_id / 2**32 - received, 3)
    return {"server_clock_offset_seconds": offset, "clock_skewed": abs(offset) > CLOCK_SKEW_LIMIT}


async def exchange(channel: Channel, opening: bytes, tag: bytes, nonce: bytes,
                   details: dict[str, object]) -> None:
    """Send `opening` (transport header) with req_pq_multi, read resPQ, fill in evidence.

    On any failure the first raw bytes received are kept (hex), and a transport error code
    goes in details["transport_error"]: the classifier reads codes, not messages."""
    try:
        await channel.send(frame(tag, req_pq_message(nonce)), opening)
        payload = await read_packet(channel, tag)
        received = time.time()
        evidence = parse_reply(payload, nonce, padded=tag == obfs2.TAG_PADDED)
    except TransportError as exc:
        details["transport_error"] = exc.code
        raise
    except Exception:
        channel.top_up_head()
        raise
    finally:
        if channel.raw_head:
            details["reply_head"] = scrub.raw(bytes(channel.raw_head)).hex()
    server_msg_id = evidence.pop("server_msg_id")
    assert isinstance(server_msg_id, int)
    details.update(evidence)
    details.update(clock_evidence(server_msg_id, received))


def dc_id(step: Step) -> int:
    """The DC id the obfuscated init carries: the step's `dc` option, else the number in the
    endpoint's name (dc2 -> 2; a media-only DC, dc2-media, -> -2, the negative id the apps
    use for it), else 2 (a DC every client may ask for)."""
    if "dc" in step.options:
        return int(step.options["dc"])
    found = re.fullmatch(r"dc(\d{1,4})(-media)?", step.target.endpoint)
    if found is None:
        return 2
    return -int(found.group(1)) if found.group(2) else int(found.group(1))


def tag_of(step: Step, default: str = "intermediate") -> tuple[str, bytes]:
    name = str(step.options.get("protocol", default))
    if name not in obfs2.TAGS:
        raise ValueError(f"unknown MTProto protocol {name!r} (one of {', '.join(obfs2.TAGS)})")
    return name, obfs2.TAGS[name]


async def check(step: Step, env: Env) -> list[Observation]:
    """Obfuscated2, as the apps connect: the 64-byte init (protocol tag and DC id
    encrypted inside it), req_pq_multi in the AES-CTR stream, resPQ with our nonce."""
    assert step.address is not None
    nonce = os.urandom(16)
    protocol, tag = tag_of(step)
    dc = dc_id(step)

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        init = obfs2.ObfuscatedInit.make(tag, dc)
        channel = Channel(sock, init.encrypt, init.decrypt)
        await exchange(channel, init.header, tag, nonce, details)
        details.update(tcp_stats(sock))  # retransmissions: the service's loss (probe.judge.vantage)

    failure, details, watch = await converse(step.address, step.port, env.timeout, env.source, talk)
    return [step.observe("mtproto", failures.MTPROTO_HANDSHAKE, failure, watch,
                         {"transport": "obfuscated2", "protocol": protocol, "dc": dc,
                          "nonce": nonce.hex(), **details})]


async def plain(step: Step, env: Env) -> list[Observation]:
    """The plain intermediate transport (`eeeeeeee`, then length-prefixed packets): what no
    app sends, kept as the differential that tells a filter on its fixed first bytes from
    one on the apps' random-looking bytes. It is a plan step of its own (it runs whether
    the primary failed or not) that always reports as a differential: its failure alone
    says nothing about the apps."""
    assert step.address is not None
    nonce = os.urandom(16)

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        await exchange(Channel(sock), INTERMEDIATE_TAG, INTERMEDIATE_TAG, nonce, details)
        details.update(tcp_stats(sock))

    failure, details, watch = await converse(step.address, step.port, env.timeout, env.source, talk)
    return [step.observe("mtproto", failures.MTPROTO_HANDSHAKE, failure, watch,
                         {"transport": "intermediate", "nonce": nonce.hex(), **details},
                         role="differential")]


HTTP_PROBE = b"POST /api HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _post_empty(sock: socket.socket, details: dict[str, object]) -> None:
    loop = asyncio.get_running_loop()
    address: str = sock.getpeername()[0]
    host = f"[{address}]" if ":" in address else address  # an IPv6 literal goes in brackets
    await loop.sock_sendall(sock, HTTP_PROBE % host.encode())
    head = await loop.sock_recv(sock, 512)
    if not head:
        raise asyncio.IncompleteReadError(b"", 1)
    # the status line only (what answered), never the headers a server may echo us in
    details["reply_head"] = scrub.raw(head[:64]).split(b"\r\n", 1)[0].decode("latin-1")
    if not head.startswith(b"HTTP/"):
        raise failures.UnexpectedStatus("the answer to HTTP is not HTTP")


async def plain_http(step: Step, env: Env) -> list[Observation]:
    """The protocol differential: an empty HTTP POST to the same address and port.

    Telegram's DCs answer plain HTTP (nginx, 404/501), as OONI's test relies on. If HTTP
    gets an answer where MTProto was reset or silenced, the filter keys on the protocol; if
    HTTP fails the same way, the address is what is filtered.
    """
    assert step.address is not None
    failure, details, watch = await converse(step.address, step.port, env.timeout, env.source,
                                             _post_empty)
    return [step.observe("http", failures.HTTP_ROUND_TRIP, failure, watch,
                         {"purpose": "protocol_differential", **details})]
