"""A write-only front for a fleet's central Prometheus (docs/fleet.md).

Prometheus' own remote-write receiver trusts every label it is sent and every user of its
web config can read everything: vantage A's credential could write series labelled
`vantage="B"` and read the whole fleet through /api/v1/query. This front sits before it
(Prometheus listens only where the front can reach it) and enforces who may do what:

- a vantage's credential may only `POST /api/v1/write` (remote-write 1.0: snappy-compressed
  protobuf); every series it sends gets `vantage="<that credential's name>"`, whatever
  label it carried (a `vantage` label is replaced, never trusted);
- a reader's credential (Grafana's) may only read: `GET`/`POST` of /api/v1/query,
  query_range, series, labels, label values, metadata, and the status endpoints Grafana asks;
- anything else is 401 (no or wrong credential) or 403.

    python -m probe.serve.receiver --config receiver.yaml --listen :9091

receiver.yaml:

    upstream: http://prometheus:9090     # the Prometheus behind it (not published)
    upstream_username: receiver          # optional: the front's own user in Prometheus'
    upstream_password_file: /run/secrets/receiver-password   # web config (basic auth)
    vantages:                            # name: bcrypt hash (python -m probe.serve.webconfig hash)
      ams-1: $2b$12$...
    readers:
      grafana: $2b$12$...

Bodies are bounded (8 MiB compressed, 32 MiB decompressed, as Prometheus bounds them);
a body that is not valid snappy or protobuf is 400 and never reaches Prometheus.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import yaml
from aiohttp import web

log = logging.getLogger("probe.receiver")

MAX_BODY = 8 << 20
MAX_DECODED = 32 << 20
VANTAGE = b"vantage"
READ_PATHS = re.compile(
    r"^/api/v1/(query|query_range|query_exemplars|series|labels|label/[^/]+/values|metadata"
    r"|status/buildinfo|status/runtimeinfo|format_query)$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class DecodeError(ValueError):
    """A remote-write body that is not what remote-write 1.0 sends."""


# ---- snappy (block format), protobuf wire format: the little remote-write needs ----------

def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def snappy_decode(data: bytes, limit: int = MAX_DECODED) -> bytes:
    """Snappy's block format, bounded by `limit` (checked before anything is produced)."""
    length, at = _varint(data, 0)
    if length > limit:
        raise DecodeError(f"decompresses to {length} bytes, over {limit}")
    out = bytearray()
    while at < len(data):
        tag = data[at]
        at += 1
        kind = tag & 3
        if kind == 0:
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[at:at + extra], "little")
                at += extra
            size += 1
            if at + size > len(data):
                raise DecodeError("literal past the end")
            out += data[at:at + size]
            at += size
        else:
            if kind == 1:
                size = 4 + ((tag >> 2) & 7)
                offset = ((tag >> 5) << 8) | data[at]
                at += 1
            else:
                width = 2 if kind == 2 else 4
                size = (tag >> 2) + 1
                offset = int.from_bytes(data[at:at + width], "little")
                at += width
            if offset == 0 or offset > len(out):
                raise DecodeError("copy before the start")
            for _ in range(size):
                out.append(out[-offset])
        if len(out) > length:
            raise DecodeError("longer than announced")
    if len(out) != length:
        raise DecodeError("shorter than announced")
    return bytes(out)


def snappy_encode(data: bytes) -> bytes:
    """Valid snappy of `data` (literals only: Prometheus decodes it; size is not the point)."""
    out = bytearray(_put_varint(len(data)))
    for start in range(0, len(data), 1 << 16):
        chunk = data[start:start + (1 << 16)]
        size = len(chunk) - 1
        if size < 60:
            out.append(size << 2)
        else:
            width = (size.bit_length() + 7) // 8
            out.append((59 + width) << 2)
            out += size.to_bytes(width, "little")
        out += chunk
    return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, raw bytes of the whole field) of a protobuf message."""
    fields = []
    at = 0
    while at < len(data):
        start = at
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            size, at = _varint(data, at)
            at += size
        elif wire == 5:
            at += 4
        else:
            raise DecodeError(f"wire type {wire}")
        if at > len(data):
            raise DecodeError("field past the end")
        fields.append((number, wire, data[start:at]))
    return fields


def _payload(raw: bytes) -> bytes:
    """The bytes of a length-delimited field, without its key and length."""
    _, at = _varint(raw, 0)
    size, at = _varint(raw, at)
    return raw[at:at + size]


def _field(number: int, payload: bytes) -> bytes:
    return _put_varint(number << 3 | 2) + _put_varint(len(payload)) + payload


def force_vantage(write_request: bytes, vantage: str) -> tuple[bytes, int]:
    """A WriteRequest with every series' `vantage` label set to `vantage` (replaced if it
    was sent, added if not; labels kept sorted by name); and how many series."""
    name = vantage.encode()
    out = bytearray()
    series = 0
    for number, wire, raw in _fields(write_request):
        if number != 1 or wire != 2:  # metadata and anything newer: as sent
            out += raw
            continue
        series += 1
        labels: list[tuple[bytes, bytes]] = []
        rest = bytearray()
        for inner, inner_wire, inner_raw in _fields(_payload(raw)):
            if inner == 1 and inner_wire == 2:
                label = {n: _payload(r) for n, w, r in _fields(_payload(inner_raw)) if w == 2}
                if label.get(1, b"") != VANTAGE:
                    labels.append((label.get(1, b""), label.get(2, b"")))
            else:
                rest += inner_raw
        labels.append((VANTAGE, name))
        labels.sort()
        body = b"".join(_field(1, _field(1, n) + _field(2, v)) for n, v in labels) + bytes(rest)
        out += _field(1, body)
    return bytes(out), series


# ---- the front ---------------------------------------------------------------------------

@dataclass
class Credentials:
    vantages: dict[str, bytes]
    readers: dict[str, bytes]
    upstream: str
    upstream_auth: aiohttp.BasicAuth | None = None
    _ok: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # sha256 -> (role, name)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or not isinstance(data.get("upstream"), str):
            raise ValueError(f"{path}: upstream: required (the Prometheus URL behind the front)")
        tables: dict[str, dict[str, bytes]] = {}
        for role in ("vantages", "readers"):
            table = data.get(role) or {}
            if not isinstance(table, dict):
                raise ValueError(f"{path}: {role}: a mapping of name: bcrypt hash")
            for name, hashed in table.items():
                if not NAME.match(str(name)) or not str(hashed).startswith("$2"):
                    raise ValueError(f"{path}: {role}.{name}: a name of letters, digits, '.-_' "
                                     "and a bcrypt hash")
            tables[role] = {str(k): str(v).encode() for k, v in table.items()}
        overlap = set(tables["vantages"]) & set(tables["readers"])
        if overlap:
            raise ValueError(f"{path}: {', '.join(sorted(overlap))}: both a vantage and a reader")
        auth = None
        if data.get("upstream_username"):
            secret = Path(str(data.get("upstream_password_file") or ""))
            try:
                password = secret.read_text().strip()
            except OSError as exc:  # the file's name, never its content
                raise ValueError(f"{path}: upstream_password_file: cannot read {secret}: "
                                 f"{exc.strerror}") from None
            auth = aiohttp.BasicAuth(str(data["upstream_username"]), password)
        return cls(tables["vantages"], tables["readers"], data["upstream"].rstrip("/"), auth)

    async def who(self, header: str | None) -> tuple[str, str] | None:
        """(role, name) of a Basic credential, or None."""
        import base64
        import binascii

        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if key in self._ok:
            return self._ok[key]
        for role, table in (("vantage", self.vantages), ("reader", self.readers)):
            hashed = table.get(user)
            if hashed is not None and len(password.encode()) <= 72 and await asyncio.to_thread(
                    bcrypt.checkpw, password.encode(), hashed):
                if len(self._ok) > 1024:
                    self._ok.clear()
                self._ok[key] = (role, user)
                return role, user
        await asyncio.sleep(0.25)  # a failed login answers late (no cheap guessing)
        return None


CREDENTIALS = web.AppKey("credentials", Credentials)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def handle(request: web.Request) -> web.StreamResponse:
    credentials = request.app[CREDENTIALS]
    who = await credentials.who(request.headers.get("Authorization"))
    if who is None:
        return web.Response(status=401, text="Unauthorized\n",
                            headers={"WWW-Authenticate": 'Basic realm="reach receiver"'})
    role, name = who
    session = request.app[SESSION]
    if role == "vantage":
        if request.method != "POST" or request.path != "/api/v1/write":
            return web.Response(status=403, text="a vantage's credential may only remote-write\n")
        if "proto=io.prometheus.write.v2" in request.headers.get("Content-Type", ""):
            return web.Response(status=415, text="remote-write 1.0 only\n")
        try:
            body = await request.read()
            rewritten, series = force_vantage(snappy_decode(body), name)
        except (DecodeError, IndexError) as exc:
            return web.Response(status=400, text=f"not a remote-write request: {exc}\n")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "x-prometheus-remote-write-version", "user-agent")}
        headers["Content-Encoding"] = "snappy"
        async with session.post(credentials.upstream + "/api/v1/write", data=snappy_encode(rewritten),
                                headers=headers) as upstream:
            text = await upstream.read()
            log.debug("write from %s: %d series, upstream %d", name, series, upstream.status)
            return web.Response(status=upstream.status, body=text)
    if request.method not in ("GET", "POST") or not READ_PATHS.match(request.path):
        return web.Response(status=403, text="a reader's credential may only query\n")
    query_body: bytes | None = await request.read() if request.method == "POST" else None
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
    async with session.request(request.method, credentials.upstream + request.path,
                               params=request.query, data=query_body, headers=headers) as upstream:
        payload = await upstream.read()
        return web.Response(status=upstream.status, body=payload,
                            content_type=upstream.content_type or "application/json")


def make_app(credentials: Credentials) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[CREDENTIALS] = credentials

    async def session(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                             auth=credentials.upstream_auth)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probe.serve.receiver",
                                     description="A write-only front for a fleet's Prometheus.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:9091")
    args = parser.parse_args(argv)
    try:
        credentials = Credentials.load(args.config)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"receiver: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(make_app(credentials), host=host.strip("[]") or "0.0.0.0", port=int(port),
                access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
