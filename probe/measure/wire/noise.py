"""WhatsApp's Noise handshake, as far as the server's first message: the bytes and the crypto.

The apps (and WhatsApp Web, over a WebSocket) open a chat connection with a prologue, then
run Noise_XX_25519_AESGCM_SHA256 in length-prefixed frames. Sources (read, not copied):
whatsmeow `socket/constants.go` (prologue, pattern name), `socket/framesocket.go` (frames),
`socket/noisehandshake.go` (the symmetric state), `handshake.go` (the exchange and the
certificate check), `proto/waWa6/WAWebProtobufsWa6.proto` and `proto/waCert/WACert.proto`
(field numbers); Baileys `src/Defaults/index.ts` (NOISE_MODE, NOISE_WA_HEADER) and
`src/Utils/noise-handler.ts` (the optional `ED` routing header).

On the wire (client first):
  prologue      57 41 06 03          "WA", magic 6, dictionary version 3 (whatsmeow
                                     token.DictVersion; Baileys DICT_VERSION). A client that
                                     holds edge routing info from an earlier session puts
                                     45 44 00 01 | 3-byte length | routing info before it; a
                                     first connection (all a probe can be) has none.
  frame         3-byte big-endian length | payload (the prologue goes before the first frame
                only, in the same segment)
  ClientHello   HandshakeMessage{ clientHello(2){ ephemeral(1): 32 bytes } }  (36 bytes)
  ServerHello   HandshakeMessage{ serverHello(3){ ephemeral(1): 32, static(2): 48 (AES-GCM
                of the server's static key), payload(3): AES-GCM of a CertChain } }

The symmetric state (Noise, with WhatsApp's details): h = ck = the 32-byte pattern name
"Noise_XX_25519_AESGCM_SHA256\\0\\0\\0\\0"; h = SHA-256(h || prologue); h = SHA-256(h || e);
on the server's e: h = SHA-256(h || re), (ck, k) = HKDF-SHA256(salt ck, ikm DH(e, re)) and
the nonce counter restarts; decrypt with AES-256-GCM, nonce = 8 zero bytes || counter (big
endian), associated data h, then h = SHA-256(h || ciphertext). The server's static key s is
decrypted, mixed in (DH(e, s)), and the payload decrypted with the new key.

The payload is a CertChain{ leaf(1), intermediate(2) }, each NoiseCertificate{ details(1),
signature(2) }, details = { serial(1), issuerSerial(2), key(3), notBefore(4), notAfter(5) }.
The intermediate's details are signed by WhatsApp's root key, the leaf's by the
intermediate's key; the leaf's key must be the static key the server used in this very
handshake (so a replayed certificate does not pass). Signatures are XEdDSA (Signal's
Curve25519 signatures): the keys are Montgomery (X25519) public keys, and the Ed25519 key
that verifies is the birationally equivalent Edwards point, with its sign bit carried in
the signature's top bit.

Nothing here completes the handshake: no ClientFinish, no static key of ours, no login.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from probe.model import failures

PATTERN: Final = b"Noise_XX_25519_AESGCM_SHA256\x00\x00\x00\x00"  # 32 bytes: used as h itself
MAGIC: Final = 6
DICT_VERSION: Final = 3
PROLOGUE: Final = bytes([ord("W"), ord("A"), MAGIC, DICT_VERSION])
ROUTING_MAGIC: Final = b"ED\x00\x01"
FRAME_LENGTH_BYTES: Final = 3
# A ServerHello is ~350 bytes; a certificate chain has no reason to be larger than a few KB.
MAX_SERVER_HELLO: Final = 16 * 1024
KEY_BYTES: Final = 32
TAG_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
# whatsmeow handshake.go WACertIssuerSerial: the intermediate is issued by root serial 0.
ROOT_SERIAL: Final = 0


class NoiseError(failures.NoiseResponseError):
    """The peer's answer is not a WhatsApp ServerHello (framing, protobuf, decryption)."""


class CertificateError(failures.NoiseCertificateError):
    """The ServerHello decrypted, but its certificate chain does not prove WhatsApp's key."""


# --- protobuf, the few fields this exchange has (proto2 wire format, by hand) ------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def field_varint(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return _varint(number << 3) + _varint(value)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise NoiseError("protobuf: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise NoiseError("protobuf: varint longer than 10 bytes")


Fields = dict[int, bytes | int]


def parse_fields(data: bytes) -> Fields:
    """The message's fields by number (the last occurrence wins, as in proto2). Varint
    fields are ints, length-delimited ones bytes; fixed32/fixed64 are skipped; groups and
    unknown wire types are refused."""
    fields: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise NoiseError("protobuf: field number 0")
        if wire == 0:
            fields[number], pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if length > len(data) - pos:
                raise NoiseError("protobuf: field longer than the message")
            fields[number] = data[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > len(data) - pos:
                raise NoiseError("protobuf: truncated fixed-width field")
            pos += size
        else:
            raise NoiseError(f"protobuf: wire type {wire} is not used by this exchange")
    return fields


def _bytes(fields: Fields, number: int, what: str) -> bytes:
    value = fields.get(number)
    if not isinstance(value, bytes):
        raise NoiseError(f"{what} is missing")
    return value


def _int(fields: Fields, number: int) -> int:
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise CertificateError(f"field {number} is not a number")
    return value


# --- messages -----------------------------------------------------------------------------

def client_hello(ephemeral: bytes) -> bytes:
    """HandshakeMessage{clientHello{ephemeral}}: 36 bytes for a 32-byte key."""
    return field_bytes(2, field_bytes(1, ephemeral))


def intro(routing_info: bytes = b"") -> bytes:
    """What goes before the first frame: the prologue, after the `ED` routing header when
    the client has routing info."""
    if not routing_info:
        return PROLOGUE
    return ROUTING_MAGIC + len(routing_info).to_bytes(3, "big") + routing_info + PROLOGUE


def frame(payload: bytes) -> bytes:
    if len(payload) >= 1 << 24:
        raise ValueError("frame too large")
    return len(payload).to_bytes(FRAME_LENGTH_BYTES, "big") + payload


def frame_length(header: bytes) -> int:
    """The length a 3-byte frame header announces, refused when no ServerHello is that big
    (an HTTP answer's "HTT" reads as 4.7 MB)."""
    length = int.from_bytes(header, "big")
    if not 0 < length <= MAX_SERVER_HELLO:
        raise NoiseError(f"frame length {length} ({header.hex()}) is not a plausible ServerHello")
    return length


@dataclass(frozen=True, slots=True)
class ServerHello:
    ephemeral: bytes
    static: bytes  # encrypted
    payload: bytes  # encrypted


def parse_server_hello(message: bytes) -> ServerHello:
    """The three parts of a HandshakeMessage's serverHello; NoiseError if any is missing."""
    hello = _bytes(parse_fields(message), 3, "serverHello")
    fields = parse_fields(hello)
    ephemeral = _bytes(fields, 1, "serverHello.ephemeral")
    if len(ephemeral) != KEY_BYTES:
        raise NoiseError(f"server ephemeral key of {len(ephemeral)} bytes")
    static = _bytes(fields, 2, "serverHello.static")
    if len(static) != KEY_BYTES + TAG_BYTES:
        raise NoiseError(f"encrypted server static key of {len(static)} bytes")
    return ServerHello(ephemeral, static, _bytes(fields, 3, "serverHello.payload"))


# --- the symmetric state ------------------------------------------------------------------

def _iv(counter: int) -> bytes:
    return bytes(8) + counter.to_bytes(4, "big")


class Handshake:
    """The initiator's side of WhatsApp's XX, up to the server's message."""

    def __init__(self, prologue: bytes = PROLOGUE, ephemeral: X25519PrivateKey | None = None) -> None:
        self.ephemeral = ephemeral or X25519PrivateKey.generate()
        self.public = self.ephemeral.public_key().public_bytes_raw()
        self.hash = PATTERN
        self.chain = PATTERN
        self._key = AESGCM(PATTERN)
        self._counter = 0
        self.mix_hash(prologue)
        self.mix_hash(self.public)

    def mix_hash(self, data: bytes) -> None:
        self.hash = hashlib.sha256(self.hash + data).digest()

    def mix_key(self, secret: bytes) -> None:
        out = HKDF(hashes.SHA256(), 64, salt=self.chain, info=None).derive(secret)
        self.chain, self._key, self._counter = out[:32], AESGCM(out[32:]), 0

    def _dh(self, public: bytes) -> bytes:
        try:
            return self.ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError as exc:  # a low-order point: all-zero shared secret
            raise NoiseError(f"server key unusable for X25519: {exc}") from None

    def decrypt(self, ciphertext: bytes, what: str) -> bytes:
        try:
            plain = self._key.decrypt(_iv(self._counter), ciphertext, self.hash)
        except InvalidTag:
            raise NoiseError(f"{what} does not decrypt (not keyed to our ephemeral key)") from None
        self._counter += 1
        self.mix_hash(ciphertext)
        return plain

    def read_server_hello(self, hello: ServerHello) -> tuple[bytes, bytes]:
        """The server's static key and the certificate payload, in plaintext."""
        self.mix_hash(hello.ephemeral)
        self.mix_key(self._dh(hello.ephemeral))
        static = self.decrypt(hello.static, "the server's static key")
        self.mix_key(self._dh(static))
        return static, self.decrypt(hello.payload, "the certificate payload")


# --- XEdDSA verification (Curve25519 keys, Ed25519 signatures) -----------------------------

_P: Final = 2**255 - 19


def edwards_from_montgomery(u_bytes: bytes, sign: int) -> bytes:
    """The Ed25519 public key (y, sign of x) of a Montgomery u-coordinate: y = (u-1)/(u+1)."""
    u = int.from_bytes(u_bytes, "little") & ((1 << 255) - 1)
    if u >= _P or (u + 1) % _P == 0:
        raise CertificateError("key is not a usable Curve25519 public key")
    y = (u - 1) * pow(u + 1, _P - 2, _P) % _P
    return (y | (sign & 1) << 255).to_bytes(32, "little")


def montgomery_from_edwards(ed_public: bytes) -> bytes:
    """The inverse: u = (1+y)/(1-y), for publishing an Ed25519 key as a Curve25519 one
    (the lab's test root and intermediate)."""
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def xeddsa_verify(key: bytes, message: bytes, signature: bytes) -> bool:
    """Signal's curve25519 signature check: the sign bit of the Edwards key is the top bit
    of the signature, which is cleared before the Ed25519 verification."""
    if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    sign = signature[63] >> 7
    sig = signature[:63] + bytes([signature[63] & 0x7F])
    try:
        Ed25519PublicKey.from_public_bytes(edwards_from_montgomery(key, sign)).verify(sig, message)
    except (InvalidSignature, ValueError, CertificateError):
        return False
    return True


# --- the certificate chain ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Details:
    serial: int
    issuer_serial: int
    key: bytes
    not_before: int
    not_after: int

    @classmethod
    def parse(cls, data: bytes) -> Details:
        try:
            fields = parse_fields(data)
        except NoiseError as exc:
            raise CertificateError(f"certificate details: {exc}") from None
        key = fields.get(3, b"")
        if not isinstance(key, bytes):
            raise CertificateError("certificate key is not bytes")
        return cls(_int(fields, 1), _int(fields, 2), key, _int(fields, 4), _int(fields, 5))

    def encode(self) -> bytes:
        return (field_varint(1, self.serial) + field_varint(2, self.issuer_serial)
                + field_bytes(3, self.key) + field_varint(4, self.not_before)
                + field_varint(5, self.not_after))


def _certificate(fields: Fields, number: int, name: str) -> tuple[bytes, bytes]:
    cert = fields.get(number)
    if not isinstance(cert, bytes):
        raise CertificateError(f"the {name} certificate is missing")
    try:
        parts = parse_fields(cert)
    except NoiseError as exc:
        raise CertificateError(f"{name} certificate: {exc}") from None
    details, signature = parts.get(1), parts.get(2)
    if not isinstance(details, bytes) or not isinstance(signature, bytes):
        raise CertificateError(f"the {name} certificate lacks details or a signature")
    if len(signature) != SIGNATURE_BYTES:
        raise CertificateError(f"{name} signature of {len(signature)} bytes")
    return details, signature


def _valid_now(details: Details, name: str, now: float) -> None:
    if now < details.not_before or now > details.not_after:
        raise CertificateError(f"the {name} certificate is not valid now "
                               f"({details.not_before}..{details.not_after})")


def verify_chain(payload: bytes, static: bytes, root: bytes, now: float | None = None) -> dict[str, object]:
    """Check the CertChain against the root key and the server's static key; return its
    serials and validity as evidence, or raise CertificateError saying which link fails."""
    now = time.time() if now is None else now
    try:
        chain = parse_fields(payload)
    except NoiseError as exc:
        raise CertificateError(f"certificate chain: {exc}") from None
    inter_raw, inter_sig = _certificate(chain, 2, "intermediate")
    leaf_raw, leaf_sig = _certificate(chain, 1, "leaf")
    if not xeddsa_verify(root, inter_raw, inter_sig):
        raise CertificateError("the intermediate certificate is not signed by WhatsApp's root key")
    inter = Details.parse(inter_raw)
    if inter.issuer_serial != ROOT_SERIAL:
        raise CertificateError(f"intermediate issuer serial {inter.issuer_serial}, not {ROOT_SERIAL}")
    if len(inter.key) != KEY_BYTES:
        raise CertificateError(f"intermediate key of {len(inter.key)} bytes")
    if not xeddsa_verify(inter.key, leaf_raw, leaf_sig):
        raise CertificateError("the leaf certificate is not signed by the intermediate")
    _valid_now(inter, "intermediate", now)
    leaf = Details.parse(leaf_raw)
    if leaf.issuer_serial != inter.serial:
        raise CertificateError(f"leaf issuer serial {leaf.issuer_serial}, "
                               f"not the intermediate's {inter.serial}")
    if not hmac.compare_digest(leaf.key, static):
        raise CertificateError("the leaf certificate's key is not the server's static key")
    _valid_now(leaf, "leaf", now)
    return {"intermediate_serial": inter.serial, "leaf_serial": leaf.serial,
            "leaf_not_after": leaf.not_after}


def load_root(text: bytes) -> bytes:
    """The 32-byte root key from an anchor file: a PEM X25519 public key, or 64 hex digits
    (comments after `#` and blank lines are ignored)."""
    if b"-----BEGIN PUBLIC KEY-----" in text:
        key = load_pem_public_key(text)
        if not isinstance(key, X25519PublicKey):
            raise ValueError("the PEM key is not an X25519 public key")
        return key.public_bytes_raw()
    digits = "".join(line.split("#", 1)[0].strip()
                     for line in text.decode("ascii", "replace").splitlines())
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise ValueError("not 64 hex digits or a PEM X25519 public key") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a root key of {len(raw)} bytes, not 32")
    return raw
