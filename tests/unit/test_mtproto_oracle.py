"""An independent oracle: Telethon (a maintained client library, its own obfuscated2 and
MTProxy code, pure-Python AES via pyaes, its own TL serialisation) against reach's client
and against the test DC / test MTProxy that reach's checks talk to.

If reach's client and the test servers shared a mistake (a key derivation, a reversed IV,
a tag offset), reach's tests would pass against each other; here each side meets code
written by someone else:
- Telethon's client speaks to the test DC (req_pq_multi -> ResPQ, parsed by Telethon's TL),
  and through the test MTProxy with a dd secret;
- reach's init, for the same random bytes, is byte-identical to Telethon's (obfuscated2 and
  MTProxy derivations), and reach's wire bytes decrypt with Telethon's AES-CTR into a
  request Telethon's TL reader parses as ReqPqMultiRequest with reach's nonce.
Everything runs on loopback; nothing contacts Telegram.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
from typing import Any

import pytest
from telethon.crypto import AESModeCTR
from telethon.extensions import BinaryReader
from telethon.network.connection import ConnectionTcpMTProxyRandomizedIntermediate, ConnectionTcpObfuscated
from telethon.network.connection.tcpabridged import AbridgedPacketCodec
from telethon.network.connection.tcpintermediate import (
    IntermediatePacketCodec,
    RandomizedIntermediatePacketCodec,
)
from telethon.network.connection.tcpmtproxy import MTProxyIO
from telethon.network.connection.tcpobfuscated import ObfuscatedIO
from telethon.network.mtprotoplainsender import MTProtoPlainSender
from telethon.tl.functions import ReqPqMultiRequest
from telethon.tl.types import ResPQ

from probe.measure.wire import obfs2
from tests.hardening.hostile import ScriptedTCP
from tests.support import checks
from tests.support.mtproto import MtprotoServer
from tests.support.mtproxy import MtproxyServer

LOGGERS: Any = collections.defaultdict(lambda: logging.getLogger("telethon-oracle"))
DD_SECRET = "dd" + "4b" * 16


async def telethon_req_pq(connection: Any) -> tuple[int, Any]:
    """Telethon's own plain sender: its msg_id, its serialisation, its parser."""
    await connection.connect(timeout=5)
    try:
        nonce = int.from_bytes(os.urandom(16), "big", signed=True)
        answer = await MTProtoPlainSender(connection, loggers=LOGGERS).send(ReqPqMultiRequest(nonce))
        return nonce, answer
    finally:
        await connection.disconnect()


async def test_telethon_obfuscated2_client_gets_res_pq_from_the_test_dc() -> None:
    async with MtprotoServer() as dc:
        nonce, answer = await telethon_req_pq(ConnectionTcpObfuscated("127.0.0.1", dc.port, 2,
                                                                      loggers=LOGGERS))
    assert isinstance(answer, ResPQ) and answer.nonce == nonce
    assert answer.server_public_key_fingerprints  # Telethon's TL read the vector too
    assert dc.transports == ["obfuscated2/abridged"]  # Telethon's obfuscated codec is abridged


async def test_telethon_mtproxy_dd_client_goes_through_the_test_proxy() -> None:
    async with MtprotoServer() as dc, \
            MtproxyServer(secret=DD_SECRET, upstream=("127.0.0.1", dc.port)) as proxy:
        connection = ConnectionTcpMTProxyRandomizedIntermediate(
            "149.154.167.51", 443, 2, loggers=LOGGERS, proxy=("127.0.0.1", proxy.port, DD_SECRET))
        nonce, answer = await telethon_req_pq(connection)
    assert isinstance(answer, ResPQ) and answer.nonce == nonce
    assert proxy.relayed == 1 and dc.transports == ["padded"]  # the proxy's upstream leg


def _valid_random() -> bytes:
    while True:
        random = bytearray(os.urandom(64))
        if not obfs2.forbidden(random):
            random[60:62] = struct.pack("<h", 2)  # Telethon leaves the DC id random; reach writes it
            return bytes(random)


@pytest.mark.parametrize(("codec", "tag"), [
    (AbridgedPacketCodec, obfs2.TAG_ABRIDGED), (IntermediatePacketCodec, obfs2.TAG_INTERMEDIATE),
    (RandomizedIntermediatePacketCodec, obfs2.TAG_PADDED)])
def test_reach_init_is_byte_identical_to_telethons(monkeypatch: pytest.MonkeyPatch, codec: Any,
                                                   tag: bytes) -> None:
    for _ in range(20):
        random = _valid_random()
        monkeypatch.setattr(os, "urandom", lambda n, r=random: r[:n])
        theirs, their_encrypt, their_decrypt = ObfuscatedIO.init_header(codec)
        monkeypatch.undo()
        ours = obfs2.ObfuscatedInit.make(tag, 2, random=random)
        assert ours.header == bytes(theirs)
        payload = os.urandom(100)
        assert ours.encrypt(payload) == their_encrypt.encrypt(payload)
        assert ours.decrypt(payload) == their_decrypt.encrypt(payload)


def test_reach_mtproxy_keys_are_telethons(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = bytes.fromhex(DD_SECRET)
    for dc in (2, -4):
        random = bytearray(_valid_random())
        monkeypatch.setattr(os, "urandom", lambda n, r=bytes(random): r[:n])
        theirs, their_encrypt, their_decrypt = MTProxyIO.init_header(
            secret, dc, RandomizedIntermediatePacketCodec)
        monkeypatch.undo()
        ours = obfs2.ObfuscatedInit.make(obfs2.TAG_PADDED, dc, secret[1:], random=bytes(random))
        assert ours.header == bytes(theirs)
        payload = os.urandom(64)
        assert ours.encrypt(payload) == their_encrypt.encrypt(payload)
        assert ours.decrypt(payload) == their_decrypt.encrypt(payload)


async def test_reachs_wire_bytes_decode_with_telethon() -> None:
    """Capture what reach's check sends; decrypt it with Telethon's AES-CTR and parse the
    request with Telethon's TL reader."""
    captured: list[bytes] = []

    def script(first: bytes) -> list[tuple[str, object]]:
        captured.append(first)
        return [("close", None)]

    async with ScriptedTCP(script, read_first=4096) as server:
        (obs,) = await checks.run("mtproto", checks.target("127.0.0.1", server.port), checks.env(1.0),
                                  options={"dc": 5})
    wire = captured[0]
    cipher = AESModeCTR(wire[8:40], wire[40:56])
    plain = cipher.decrypt(wire[:64])  # advances the counter over the init, as the server does
    assert plain[56:60] == b"\xee" * 4 and struct.unpack("<h", plain[60:62])[0] == 5
    stream = cipher.decrypt(wire[64:])
    (length,) = struct.unpack("<i", stream[:4])
    with BinaryReader(stream[4:4 + length]) as reader:
        assert reader.read_long() == 0  # auth_key_id
        msg_id = reader.read_long()
        assert msg_id % 4 == 0 and msg_id & 0xFFFFFFFF
        assert reader.read_int() == 20
        request = reader.tgread_object()
    assert isinstance(request, ReqPqMultiRequest)
    assert request.nonce.to_bytes(16, "little", signed=True) == bytes.fromhex(obs.details["nonce"])
