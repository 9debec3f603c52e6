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
from probe.checks.base import Env, Step
from probe.checks.net import converse
from probe.observation import Observation

INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
TRANSPORT_ERRORS = {-404: "auth key not found", -429: "transport flood", -444: "invalid DC"}
TRANSPORT_CODE_RANGE = range(-1023, 0)  # transport errors are small negative numbers
# resPQ with one fingerprint is 88 bytes; a server has no reason to send more than a few.
MAX_REPLY = 1024


def req_pq_multi(nonce: bytes, now: float | None = None) -> bytes:
    """The framed request: transport tag, length, and the 40-byte plaintext message."""
    message_id = int((now if now is not None else time.time()) * 2**32) & ~3
    body = struct.pack("<I", REQ_PQ_MULTI) + nonce
    message = struct.pack("<qqi", 0, message_id, len(body)) + body
    return INTERMEDIATE_TAG + struct.pack("<i", len(message)) + message


class TransportError(failures.ProtocolError):
    """The server answered a transport error code: it speaks MTProto, but refused."""

    def __init__(self, code: int) -> None:
        super().__init__(f"transport error {code} ({TRANSPORT_ERRORS.get(code, 'unnamed')})")
        self.code = code


def parse_reply(payload: bytes, nonce: bytes) -> dict[str, object]:
    """Check a reply's payload; return evidence, or raise ProtocolError saying what is wrong."""
    if len(payload) == 4:
        (code,) = struct.unpack("<i", payload)
        if code in TRANSPORT_CODE_RANGE:
            raise TransportError(code)
        raise failures.ProtocolError(f"4-byte reply {payload.hex()} is not resPQ")
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
    if length in TRANSPORT_CODE_RANGE:  # a bare transport error, as some servers send it unframed
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


async def check(step: Step, env: Env) -> list[Observation]:
    """Connect, send req_pq_multi, and require a resPQ that echoes our nonce."""
    assert step.address is not None
    nonce = os.urandom(16)

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        try:
            evidence, raw = await _exchange(sock, nonce)
        except TransportError as exc:
            details["transport_error"] = exc.code
            raise
        details.update(evidence)
        details["reply_head"] = raw[:64].hex()

    failure, details, watch = await converse(step.address, step.port, env.timeout, env.source, talk)
    return [step.observe("mtproto", failures.MTPROTO_HANDSHAKE, failure, watch,
                         {"transport": "intermediate", "nonce": nonce.hex(), **details})]
