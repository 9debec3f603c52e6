"""Hostile MTProto, WhatsApp Noise, TLS and HTTP peers on loopback: every check ends within its deadline
with a failure string of the vocabulary, and reads no more than it caps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.measure.checks.base import TrustStore
from probe.measure.checks.http import fetch
from probe.measure.checks.mtproto import parse_reply, req_pq_multi
from probe.measure.wire import noise as noise_wire
from probe.model import failures
from probe.model.observation import Observation
from tests.hardening._counts import CASES, EXAMPLES
from tests.hardening.hostile import ScriptedTCP
from tests.support import checks
from tests.support import noiseserver as noise_lab
from tests.support.mtproto import build_res_pq

FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLACK = 0.5
REQUEST_SIZE = len(req_pq_multi(b"\0" * 16))


def sane(obs: Observation, started: float, timeout: float) -> None:
    assert obs.failure is None or obs.failure in failures.FAILURES, obs.failure
    assert time.monotonic() - started <= timeout + SLACK, time.monotonic() - started
    json.dumps(obs.to_json())


# ---- MTProto ----------------------------------------------------------------------------

@settings(max_examples=EXAMPLES * 20, deadline=None)
@given(payload=st.binary(max_size=2048), nonce=st.binary(min_size=16, max_size=16))
def test_parse_reply_accepts_or_raises_protocol_error(payload: bytes, nonce: bytes) -> None:
    CASES["mtproto/parse_reply random payloads"] += 1
    try:
        evidence = parse_reply(payload, nonce)
    except failures.ProtocolError as exc:
        assert failures.classify(exc) == failures.MTPROTO_UNEXPECTED_RESPONSE
    else:
        assert payload[24:40] == nonce and evidence["constructor"] == "0x05162463"


def _nonce_of(request: bytes) -> bytes:
    return request[4 + 4 + 24: 4 + 4 + 40] if len(request) >= 48 else b"\0" * 16


@FUZZ
@given(data=st.data())
async def test_mtproto_hostile_replies(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(
        ["random", "short", "oversized-prefix", "negative-prefix", "wrong-constructor",
         "wrong-nonce", "truncated", "valid", "mutated"]))

    def script(request: bytes) -> list[tuple[str, object]]:
        nonce = _nonce_of(request)
        good = build_res_pq(nonce)
        if kind == "random":
            out = data.draw(st.binary(max_size=1500))
        elif kind == "short":
            out = data.draw(st.binary(max_size=7))
        elif kind == "oversized-prefix":
            out = struct.pack("<i", data.draw(st.integers(1025, 2**31 - 1))) + good
        elif kind == "negative-prefix":
            out = struct.pack("<i", data.draw(st.integers(-(2**31), -1)))
        elif kind == "wrong-constructor":
            body = bytearray(good)
            body[20:24] = struct.pack("<I", data.draw(st.integers(0, 2**32 - 1)))
            out = struct.pack("<i", len(body)) + bytes(body)
        elif kind == "wrong-nonce":
            out = struct.pack("<i", len(good)) + build_res_pq(bytes(16))
        elif kind == "truncated":
            framed = struct.pack("<i", len(good)) + good
            out = framed[: data.draw(st.integers(0, len(framed) - 1))]
        elif kind == "mutated":
            framed = bytearray(struct.pack("<i", len(good)) + good)
            i = data.draw(st.integers(0, len(framed) - 1))
            framed[i] ^= data.draw(st.integers(1, 255))
            out = bytes(framed)
        else:
            out = struct.pack("<i", len(good)) + good
        return [("send", out), ("close", None)]

    async with ScriptedTCP(script, read_first=REQUEST_SIZE) as server:
        started = time.monotonic()
        (obs,) = await checks.run("mtproto_plain", checks.target("127.0.0.1", server.port), checks.env(1.0))
    CASES["mtproto/hostile replies"] += 1
    sane(obs, started, 1.0)
    if kind == "valid":
        assert obs.failure is None, obs.details
    elif kind in ("wrong-nonce", "wrong-constructor", "oversized-prefix"):
        assert obs.failure == failures.MTPROTO_UNEXPECTED_RESPONSE, obs.details


@pytest.mark.parametrize("script, expected", [
    ([("stall", None)], failures.GENERIC_TIMEOUT),                      # tarpit: never reads
    ([("read", 64), ("stall", None)], failures.GENERIC_TIMEOUT),        # reads, never answers
    ([("read", 64), ("send", b"\x58\x00\x00\x00"), ("stall", None)], failures.GENERIC_TIMEOUT),
    ([("read", 64), ("drip", (b"\x58\x00\x00\x00" + b"\0" * 88, 0.05))], failures.GENERIC_TIMEOUT),
    ([("read", 64), ("reset", None)], failures.CONNECTION_RESET),
    ([("read", 64), ("close", None)], failures.EOF_ERROR),
])
async def test_mtproto_stalls_and_drops(script: list[tuple[str, object]], expected: str) -> None:
    async with ScriptedTCP(script) as server:
        started = time.monotonic()
        (obs,) = await checks.run("mtproto_plain", checks.target("127.0.0.1", server.port), checks.env(0.5))
    CASES["mtproto/stalls and drops"] += 1
    sane(obs, started, 0.5)
    assert obs.failure == expected, obs.details


# ---- TLS --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def handshake(port: int, timeout: float, ca_file: Path | None,
                    explain: bool = True) -> list[Observation]:
    """The TLS step as a round runs it: the handshake, then (if it failed) the neutral SNI."""
    where = checks.target("127.0.0.1", port, name="w/v4", domain="web.telegram.org")
    environment = checks.env(timeout, ca_file=ca_file)
    observations = await checks.run("tls", where, environment)
    if explain and not observations[0].ok:
        observations += await checks.run("tls_neutral_sni", where, environment, role="differential",
                                         options={"neutral_sni": "neutral.example"},
                                         explains=observations[0])
    return observations


def _record(content_type: int, body: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes([content_type]) + version + struct.pack("!H", len(body)) + body


@FUZZ
@given(data=st.data())
async def test_tls_peer_sends_garbage(data: st.DataObject, ca_file: Path) -> None:
    kind = data.draw(st.sampled_from(["random", "record-garbage", "alert", "huge-record", "http"]))
    if kind == "random":
        out = data.draw(st.binary(min_size=1, max_size=2000))
    elif kind == "record-garbage":
        out = _record(22, data.draw(st.binary(max_size=1000)))
    elif kind == "alert":
        out = _record(21, bytes([2, data.draw(st.integers(0, 255))]))
    elif kind == "huge-record":
        out = b"\x16\x03\x03\xff\xff" + data.draw(st.binary(max_size=200))
    else:
        out = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    end = data.draw(st.sampled_from(["close", "reset", "close", "reset", "stall"]))
    async with ScriptedTCP([("read", 2048), ("send", out), (end, None)]) as server:
        started = time.monotonic()
        observations = await handshake(server.port, 0.3, ca_file)
    CASES["tls/garbage peers"] += 1
    for obs in observations:
        assert obs.failure is not None
    sane(observations[0], started, 2 * 0.3)  # the handshake and its differential


async def test_tls_stall_mid_handshake(ca: trustme.CA, ca_file: Path) -> None:
    """A peer that answers the ClientHello with the start of a real ServerHello, then stalls."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("web.telegram.org").configure_cert(server_ctx)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = server_ctx.wrap_bio(incoming, outgoing, server_side=True)

    def script(hello: bytes) -> list[tuple[str, object]]:
        incoming.write(hello)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        flight = outgoing.read()
        return [("send", flight[: len(flight) // 2]), ("stall", None)]

    async with ScriptedTCP(script, read_first=4096) as server:
        started = time.monotonic()
        observations = await handshake(server.port, 0.5, ca_file)
    CASES["tls/stalls mid-handshake"] += 1
    assert observations[0].failure == failures.GENERIC_TIMEOUT, observations[0].details
    sane(observations[0], started, 2 * 0.5)


async def test_tls_tarpit_and_drip() -> None:
    drip = ("drip", (b"\x16\x03\x03\x00\x40" + b"\0" * 64, 0.05))
    for script in ([("stall", None)], [("read", 2048), drip]):
        async with ScriptedTCP(script) as server:
            started = time.monotonic()
            observations = await handshake(server.port, 0.4, None, explain=False)
        CASES["tls/stalls mid-handshake"] += 1
        assert observations[0].failure in (failures.GENERIC_TIMEOUT, failures.SSL_FAILED_HANDSHAKE)
        sane(observations[0], started, 0.4)


# ---- HTTP -------------------------------------------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"


def http_options(timeout: float = 1.0, max_bytes: int = 1 << 20) -> dict[str, object]:
    return {"address": None, "context": TrustStore(None, {}).context("system"), "timeout": timeout,
            "max_bytes": max_bytes, "transfer_seconds": 0.5, "blockpages": []}


async def _get(server: ScriptedTCP, **options: object) -> tuple[str | None, dict[str, object]]:
    opts = {**http_options(), **options}
    return await fetch(f"http://127.0.0.1:{server.port}/", **opts)  # type: ignore[arg-type]


HOSTILE_HTTP = {
    "endless-headers": [("read", 4096), ("send", HEAD), ("forever", b"X-Pad: " + b"a" * 60 + b"\r\n")],
    "huge-header-line": [("read", 4096), ("send", HEAD + b"X-Big: "), ("forever", b"a" * 4096)],
    "endless-body": [("read", 4096), ("send", HEAD + b"Transfer-Encoding: chunked\r\n\r\n"),
                     ("forever", b"4000\r\n" + b"x" * 0x4000 + b"\r\n")],
    "lying-length": [("read", 4096), ("send", HEAD + b"Content-Length: 99999999999\r\n\r\nshort"),
                     ("close", None)],
    "slow-drip-status": [("read", 4096), ("drip", (HEAD + b"\r\n", 0.1))],
    "garbage-status": [("read", 4096), ("send", b"\x00\xff garbage \r\n\r\n"), ("close", None)],
    "no-reply": [("read", 4096), ("stall", None)],
    "reset": [("read", 4096), ("reset", None)],
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HTTP))
async def test_http_hostile_servers(name: str) -> None:
    async with ScriptedTCP(HOSTILE_HTTP[name]) as server:
        started = time.monotonic()
        failure, details = await _get(server, max_bytes=256 * 1024)
    CASES["http/hostile servers"] += 1
    assert failure is None or failure in failures.FAILURES
    assert time.monotonic() - started <= 1.0 + SLACK
    json.dumps(details)
    assert int(str(details.get("bytes", 0))) <= 256 * 1024
    if name == "endless-body":
        assert failure is None and details["bytes"] == 256 * 1024 and not details["complete"]
    if name in ("endless-headers", "huge-header-line", "garbage-status"):
        assert failure is not None


@pytest.mark.parametrize("name", ["endless-headers", "huge-header-line", "endless-body"])
async def test_http_memory_is_bounded(name: str) -> None:
    """What the check holds stays small however much the server sends (traced allocations)."""
    tracemalloc.start()
    try:
        async with ScriptedTCP(HOSTILE_HTTP[name]) as server:
            await _get(server, max_bytes=256 * 1024, timeout=2.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    CASES["http/hostile servers"] += 1
    assert peak < 8 << 20, f"{name}: {peak} bytes allocated at peak"


@FUZZ
@given(response=st.binary(max_size=3000), end=st.sampled_from(["close", "reset"]))
async def test_http_random_responses(response: bytes, end: str) -> None:
    async with ScriptedTCP([("read", 4096), ("send", response), (end, None)]) as server:
        started = time.monotonic()
        failure, details = await _get(server)
    CASES["http/random responses"] += 1
    assert failure is None or failure in failures.FAILURES
    assert time.monotonic() - started <= 1.0 + SLACK
    json.dumps(details)
    await asyncio.sleep(0)


# ---- WhatsApp Noise -----------------------------------------------------------------------

NOISE_REQUEST = 4 + 3 + 36  # prologue, frame length, ClientHello
NOISE_STATIC = X25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def noise_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("noise") / "root.pem"
    path.write_bytes(noise_lab.root_pem())
    return path


@settings(max_examples=EXAMPLES * 20, deadline=None)
@given(payload=st.binary(max_size=2048))
def test_noise_parsers_accept_or_raise_their_own_errors(payload: bytes) -> None:
    CASES["noise/parsers random payloads"] += 1
    try:
        hello = noise_wire.parse_server_hello(payload)
    except noise_wire.NoiseError as exc:
        assert failures.classify(exc) == failures.NOISE_UNEXPECTED_RESPONSE
    else:
        assert len(hello.ephemeral) == 32 and len(hello.static) == 48
    try:
        noise_wire.verify_chain(payload, bytes(32), bytes(32))
    except noise_wire.CertificateError as exc:
        assert failures.classify(exc) == failures.NOISE_INVALID_CERTIFICATE
    else:
        raise AssertionError("a random chain verified")


@FUZZ
@given(data=st.data())
async def test_noise_hostile_replies(data: st.DataObject, noise_root: Path) -> None:
    kind = data.draw(st.sampled_from(
        ["random", "short", "oversized-prefix", "zero-prefix", "truncated", "valid", "mutated",
         "foreign-root"]))

    def script(request: bytes) -> list[tuple[str, object]]:
        client_e = request[11:43] if len(request) >= 43 else bytes(32)
        root = noise_lab.FOREIGN_ROOT if kind == "foreign-root" else noise_lab.TEST_ROOT
        good = noise_lab.server_hello(request[:4], client_e, NOISE_STATIC, noise_lab.cert_chain(
            NOISE_STATIC.public_key().public_bytes_raw(), root))
        if kind == "random":
            out = data.draw(st.binary(max_size=1500))
        elif kind == "short":
            out = data.draw(st.binary(max_size=2))
        elif kind == "oversized-prefix":
            length = data.draw(st.integers(noise_wire.MAX_SERVER_HELLO + 1, 2**24 - 1))
            out = length.to_bytes(3, "big") + good[3:]
        elif kind == "zero-prefix":
            out = b"\0\0\0" + good[3:]
        elif kind == "truncated":
            out = good[: data.draw(st.integers(0, len(good) - 1))]
        elif kind == "mutated":
            framed = bytearray(good)
            i = data.draw(st.integers(0, len(framed) - 1))
            framed[i] ^= data.draw(st.integers(1, 255))
            out = bytes(framed)
        else:
            out = good
        return [("send", out), ("close", None)]

    async with ScriptedTCP(script, read_first=NOISE_REQUEST) as server:
        started = time.monotonic()
        (obs,) = await checks.run("noise", checks.target("127.0.0.1", server.port, messenger="whatsapp",
                                                         trust="whatsapp"),
                                  checks.env(1.0, trust={"whatsapp": noise_root}))
    CASES["noise/hostile replies"] += 1
    sane(obs, started, 1.0)
    if kind == "valid":
        assert obs.failure is None, obs.details
    elif kind == "foreign-root":
        assert obs.failure == failures.NOISE_INVALID_CERTIFICATE, obs.details
    elif kind in ("oversized-prefix", "zero-prefix", "mutated"):
        assert obs.failure is not None, obs.details
    if kind == "oversized-prefix":
        assert obs.failure == failures.NOISE_UNEXPECTED_RESPONSE, obs.details


@pytest.mark.parametrize("script, expected", [
    ([("stall", None)], failures.GENERIC_TIMEOUT),                      # tarpit: never reads
    ([("read", 64), ("stall", None)], failures.GENERIC_TIMEOUT),        # reads, never answers
    ([("read", 64), ("send", b"\x00\x01\x50"), ("stall", None)], failures.GENERIC_TIMEOUT),
    ([("read", 64), ("drip", (b"\x00\x01\x50" + b"\0" * 336, 0.05))], failures.GENERIC_TIMEOUT),
    ([("read", 64), ("reset", None)], failures.CONNECTION_RESET),
    ([("read", 64), ("close", None)], failures.EOF_ERROR),
])
async def test_noise_stalls_and_drops(script: list[tuple[str, object]], expected: str,
                                      noise_root: Path) -> None:
    async with ScriptedTCP(script) as server:
        started = time.monotonic()
        (obs,) = await checks.run("noise", checks.target("127.0.0.1", server.port, messenger="whatsapp",
                                                         trust="whatsapp"),
                                  checks.env(0.5, trust={"whatsapp": noise_root}))
    CASES["noise/stalls and drops"] += 1
    sane(obs, started, 0.5)
    assert obs.failure == expected, obs.details
