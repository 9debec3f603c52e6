"""Obfuscated2 and MTProxy "fake TLS": the transports Telegram's apps actually send.

Why: the plain intermediate transport opens with fixed bytes (`eeeeeeee`, a length, a zero
auth_key_id), a trivial DPI signature that the apps never send. TDLib and Telegram Desktop
open with obfuscated2: a 64-byte random init that carries an AES-256-CTR key, with the
protocol tag and the DC id encrypted inside it, so that the whole connection looks random.
MTProxy mixes a shared secret into those keys (dd secrets add random padding) or wraps the
stream in TLS records after a ClientHello whose random field is an HMAC of the secret
(ee secrets, "fake TLS"). A censor can filter each of these differently, so reach sends
each the way the apps do. Sources: core.telegram.org/mtproto/mtproto-transports
("Transport obfuscation"), core.telegram.org/mtproto/mtproto-transports#padded-intermediate,
TDLib's TlsInit (fake TLS), MTProxy's key derivation sha256(key + secret).

This module is the codec only (no sockets): `ObfuscatedInit` makes the init and the two
ciphers, `client_hello` / `server_hello_ok` do the fake-TLS greeting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded on first use: only MTProxy checks need AES
    from cryptography.hazmat.primitives.ciphers import CipherContext

TAG_INTERMEDIATE = b"\xee\xee\xee\xee"
TAG_ABRIDGED = b"\xef\xef\xef\xef"
TAG_PADDED = b"\xdd\xdd\xdd\xdd"
TAGS = {"intermediate": TAG_INTERMEDIATE, "abridged": TAG_ABRIDGED, "padded": TAG_PADDED}

# A first word the server would read as another protocol (HTTP methods, the plain
# transports' tags, a TLS record header; 'PVrG' as Telethon also avoids), so never sent.
FORBIDDEN_FIRST_WORDS = frozenset({
    b"HEAD", b"POST", b"GET ", b"OPTI", b"PVrG", b"\xdd\xdd\xdd\xdd", b"\xee\xee\xee\xee",
    b"\x16\x03\x01\x02",
})


def forbidden(init: bytes | bytearray) -> bool:
    """True if a 64-byte init would be mistaken for another protocol (the spec's rules)."""
    return init[0] == 0xEF or bytes(init[:4]) in FORBIDDEN_FIRST_WORDS or init[4:8] == b"\0\0\0\0"


def _ctr(key: bytes, iv: bytes) -> CipherContext:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


@dataclass
class ObfuscatedInit:
    """One connection's obfuscation: the 64 bytes to send first and the two ciphers.

    The client encrypts with key init[8:40], iv init[40:56]; the server answers with the
    reversed bytes init[55:7:-1] (key the first 32, iv the next 16). With an MTProxy secret
    each key is sha256(key + secret). Bytes 56..60 hold the protocol tag and 60..62 the DC
    id (signed, negative for media DCs); 56..64 are sent encrypted, the rest as generated.
    """

    header: bytes
    encryptor: CipherContext
    decryptor: CipherContext

    @classmethod
    def make(cls, tag: bytes, dc_id: int, secret: bytes = b"",
             random: bytes | None = None) -> ObfuscatedInit:
        init = bytearray(random if random is not None else os.urandom(64))
        while forbidden(init):  # about 1 in 200 inits; a given `random` must already be valid
            init = bytearray(os.urandom(64))
        init[56:60] = tag
        init[60:62] = struct.pack("<h", dc_id)
        reverse = bytes(init[55:7:-1])
        enc_key, dec_key = bytes(init[8:40]), reverse[:32]
        if secret:
            enc_key = hashlib.sha256(enc_key + secret).digest()
            dec_key = hashlib.sha256(dec_key + secret).digest()
        encryptor = _ctr(enc_key, bytes(init[40:56]))
        decryptor = _ctr(dec_key, reverse[32:48])
        encrypted = encryptor.update(bytes(init))  # the stream cipher has now used 64 bytes
        header = bytes(init[:56]) + encrypted[56:64]
        return cls(header, encryptor, decryptor)

    def encrypt(self, data: bytes) -> bytes:
        return self.encryptor.update(data)

    def decrypt(self, data: bytes) -> bytes:
        return self.decryptor.update(data)


# --- MTProxy secrets -------------------------------------------------------------------


@dataclass(frozen=True)
class ProxySecret:
    """A parsed MTProxy secret. `kind`: "plain" (16 bytes), "dd" (padded intermediate) or
    "ee" (fake TLS; the domain to put in the SNI follows the 16 key bytes)."""

    kind: str
    key: bytes
    domain: str | None = None

    def __repr__(self) -> str:  # never let the key reach a log line or a traceback
        return f"ProxySecret(kind={self.kind!r}, domain={self.domain!r})"

    __str__ = __repr__


def parse_secret(text: str) -> ProxySecret:
    """A secret as operators write it: hex (`dd…`, `ee…` + hex domain, or 16 bytes), or the
    URL-safe base64 form Telegram links use. Raises ValueError without echoing the secret."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            raise ValueError("the MTProxy secret is neither hex nor base64") from None
    if len(raw) == 16:
        return ProxySecret("plain", raw)
    if len(raw) == 17 and raw[0] == 0xDD:
        return ProxySecret("dd", raw[1:])
    if len(raw) > 17 and raw[0] == 0xEE:
        try:
            domain = raw[17:].decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("the fake-TLS domain in the MTProxy secret is not ASCII") from None
        return ProxySecret("ee", raw[1:17], domain)
    raise ValueError(f"an MTProxy secret of {len(raw)} bytes is none of 16 bytes, dd + 16, ee + 16 + domain")


# --- fake TLS (ee secrets) -------------------------------------------------------------

TLS_HANDSHAKE = 0x16
TLS_CHANGE_CIPHER = 0x14
TLS_APPLICATION_DATA = 0x17
CHANGE_CIPHER_SPEC = b"\x14\x03\x03\x00\x01\x01"
HELLO_SIZE = 517  # what Chrome and TDLib pad their ClientHello to
RANDOM_OFFSET = 11  # record header (5) + handshake header (4) + version (2)
MAX_RECORD = 16384 + 256


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def _vec(body: bytes, size: int = 2) -> bytes:
    return len(body).to_bytes(size, "big") + body


def client_hello(secret: bytes, sni: str, now: float | None = None) -> bytes:
    """A TLS 1.3 ClientHello (browser-like cipher suites, SNI, x25519 key share, padded to
    517 bytes) whose 32-byte random is HMAC-SHA256(secret, hello with a zero random), the
    last 4 bytes XORed with the little-endian unix time, as TDLib's TlsInit does: the proxy
    recomputes the HMAC to recognise its clients."""
    host = sni.encode("idna")
    suites = b"".join(struct.pack(">H", s) for s in (
        0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
        0x009C, 0x009D, 0x002F, 0x0035))
    extensions = b"".join((
        _ext(0x0000, _vec(b"\x00" + _vec(host))),                      # server_name
        _ext(0x0017, b""),                                             # extended_master_secret
        _ext(0xFF01, b"\x00"),                                         # renegotiation_info
        _ext(0x000A, _vec(b"\x00\x1d\x00\x17\x00\x18")),               # supported_groups
        _ext(0x000B, b"\x01\x00"),                                     # ec_point_formats
        _ext(0x0010, _vec(_vec(b"h2", 1) + _vec(b"http/1.1", 1))),     # ALPN
        _ext(0x000D, _vec(b"\x04\x03\x08\x04\x04\x01\x05\x03\x08\x05\x05\x01\x08\x06\x06\x01")),
        _ext(0x0033, _vec(b"\x00\x1d" + _vec(os.urandom(32)))),        # key_share x25519
        _ext(0x002D, b"\x01\x01"),                                     # psk_key_exchange_modes
        _ext(0x002B, b"\x06\x03\x04\x03\x03\x03\x02"),                 # supported_versions
    ))
    body_wo_padding = (b"\x03\x03" + bytes(32) + _vec(os.urandom(32), 1) + _vec(suites)
                       + b"\x01\x00")
    fixed = 5 + 4 + len(body_wo_padding) + 2 + len(extensions) + 4  # + padding ext header
    extensions += _ext(0x0015, bytes(max(0, HELLO_SIZE - fixed)))      # padding
    body = body_wo_padding + _vec(extensions)
    handshake = b"\x01" + _vec(body, 3)
    hello = bytearray(bytes([TLS_HANDSHAKE]) + b"\x03\x01" + _vec(handshake))
    digest = bytearray(hmac.new(secret, bytes(hello), hashlib.sha256).digest())
    stamp = struct.pack("<I", int(now if now is not None else time.time()) & 0xFFFFFFFF)
    digest[28:32] = bytes(a ^ b for a, b in zip(digest[28:32], stamp, strict=True))
    hello[RANDOM_OFFSET:RANDOM_OFFSET + 32] = digest
    return bytes(hello)


def server_hello_ok(secret: bytes, hello: bytes, answer: bytes) -> bool:
    """True if the server's greeting proves it knows the secret: its ServerHello random is
    HMAC-SHA256(secret, our hello's random + the greeting with that random zeroed)."""
    if len(answer) < RANDOM_OFFSET + 32:
        return False
    zeroed = answer[:RANDOM_OFFSET] + bytes(32) + answer[RANDOM_OFFSET + 32:]
    expected = hmac.new(secret, hello[RANDOM_OFFSET:RANDOM_OFFSET + 32] + zeroed,
                        hashlib.sha256).digest()
    return hmac.compare_digest(expected, answer[RANDOM_OFFSET:RANDOM_OFFSET + 32])


def record(kind: int, payload: bytes) -> bytes:
    """One TLS record (TLS 1.2 version bytes, as every TLS 1.3 record carries)."""
    return bytes([kind]) + b"\x03\x03" + struct.pack(">H", len(payload)) + payload


def application_data(data: bytes) -> bytes:
    """Wrap bytes in application-data records of at most 16 KiB each."""
    return b"".join(record(TLS_APPLICATION_DATA, data[i:i + 16384])
                    for i in range(0, len(data), 16384)) or record(TLS_APPLICATION_DATA, b"")
