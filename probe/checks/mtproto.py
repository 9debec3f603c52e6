"""MTProto: the unauthenticated first step of Telegram's handshake.

We send req_pq_multi over the intermediate transport and expect resPQ with our nonce
echoed. A blackhole, a blockpage or a TCP-terminating middlebox cannot echo the nonce, so
a good answer proves a real Telegram data centre (or a relay of one) is at the other end.
Byte layouts: core.telegram.org/mtproto (see shared/research/domain.md, 1.5-1.6).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

from probe import failures
from probe.checks.net import Source, converse
from probe.observation import Observation

INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
TRANSPORT_ERRORS = {-404: "auth key not found", -429: "transport flood", -444: "invalid DC"}
# resPQ with one fingerprint is 88 bytes; a server has no reason to send more than a few.
MAX_REPLY = 1024


def req_pq_multi(nonce: bytes, now: float | None = None) -> bytes:
    """The framed request: transport tag, length, and the 40-byte plaintext message."""
    message_id = int((now if now is not None else time.time()) * 2**32) & ~3
    body = struct.pack("<I", REQ_PQ_MULTI) + nonce
    message = struct.pack("<qqi", 0, message_id, len(body)) + body
    return INTERMEDIATE_TAG + struct.pack("<i", len(message)) + message


def parse_reply(payload: bytes, nonce: bytes) -> dict[str, object]:
    """Check a reply's payload; return evidence, or raise ProtocolError saying what is wrong."""
    if len(payload) == 4:
        (code,) = struct.unpack("<i", payload)
        if code in TRANSPORT_ERRORS:
            raise failures.ProtocolError(f"transport error {code} ({TRANSPORT_ERRORS[code]})")
        raise failures.ProtocolError(f"4-byte reply {payload.hex()} is neither resPQ nor a transport error")
    if len(payload) < 40:
        raise failures.ProtocolError(f"reply of {len(payload)} bytes is too short for resPQ")
    auth_key_id, _msg_id, length, constructor = struct.unpack_from("<qqiI", payload)
    if auth_key_id != 0:
        raise failures.ProtocolError("reply is not a plaintext message (auth_key_id != 0)")
    if constructor != RES_PQ:
        raise failures.ProtocolError(f"constructor {constructor:#010x} is not resPQ")
    if length != len(payload) - 20:
        raise failures.ProtocolError(f"message length {length} does not match the frame")
    if payload[24:40] != nonce:
        raise failures.ProtocolError("resPQ does not echo our nonce")
    return {"constructor": f"{constructor:#010x}", "server_nonce": payload[40:56].hex()}


async def _read_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(data), size)
        data += chunk
    return bytes(data)


async def _exchange(sock: socket.socket, nonce: bytes) -> tuple[dict[str, object], bytes]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, req_pq_multi(nonce))
    header = await _read_exactly(sock, 4)
    (length,) = struct.unpack("<i", header)
    if length in TRANSPORT_ERRORS:  # a bare transport error, as some servers send it unframed
        return parse_reply(header, nonce), header
    if not 4 <= length <= MAX_REPLY:
        raise failures.ProtocolError(f"frame length {length} is not a plausible resPQ")
    payload = await _read_exactly(sock, length)
    return parse_reply(payload, nonce), header + payload


HTTP_PROBE = b"POST /api HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

async def _post_empty(sock: socket.socket, details: dict[str, object]) -> None:
    loop = asyncio.get_running_loop()
    address: str = sock.getpeername()[0]
    host = f"[{address}]" if ":" in address else address  # an IPv6 literal goes in brackets
    await loop.sock_sendall(sock, HTTP_PROBE % host.encode())
    head = await loop.sock_recv(sock, 512)
    if not head:
        raise asyncio.IncompleteReadError(b"", 1)
    details["reply_head"] = head[:64].decode("latin-1")
    if not head.startswith(b"HTTP/"):
        raise failures.UnexpectedStatus("the answer to HTTP is not HTTP")


async def check_plain_http(
    messenger: str, target: str, address: str, port: int, timeout: float, source: Source
) -> Observation:
    """The protocol differential: an empty HTTP POST to the same address and port.

    Telegram's DCs answer plain HTTP (nginx, 404/501), as OONI's test relies on. If HTTP
    gets an answer where MTProto was reset or silenced, the filter keys on the protocol; if
    HTTP fails the same way, the address is what is filtered.
    """
    failure, details, watch = await converse(address, port, timeout, source, _post_empty)
    return Observation(
        messenger, target, "http", failures.HTTP_ROUND_TRIP, failure, address, port,
        watch.started, watch.elapsed(), {"purpose": "protocol_differential", **details}, aux=True,
    )


async def check_mtproto(
    messenger: str, target: str, address: str, port: int, timeout: float, source: Source
) -> Observation:
    """Connect, send req_pq_multi, and require a resPQ that echoes our nonce."""
    nonce = os.urandom(16)

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        evidence, raw = await _exchange(sock, nonce)
        details.update(evidence)
        details["reply_head"] = raw[:64].hex()

    failure, details, watch = await converse(address, port, timeout, source, talk)
    return Observation(
        messenger, target, "mtproto", failures.MTPROTO_HANDSHAKE, failure, address, port,
        watch.started, watch.elapsed(), {"transport": "intermediate", "nonce": nonce.hex(), **details},
    )
