"""WhatsApp's Noise handshake: the `noise` check against the lab chat server (a real
responder on loopback, written independently of the check), in every way it can go."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from probe.measure.wire import noise as wire
from probe.model import failures as F
from tests.support import checks
from tests.support.noiseserver import (
    FOREIGN_ROOT,
    TEST_ROOT,
    NoiseServer,
    cert_chain,
    montgomery,
    root_pem,
    xsign,
)


@pytest.fixture
def root_file(tmp_path: Path) -> Path:
    path = tmp_path / "whatsapp-test-root.pem"
    path.write_bytes(root_pem())
    return path


async def _run(server: NoiseServer, root_file: Path,
               timeout: float = 2.0) -> tuple[str | None, dict[str, object]]:
    (obs,) = await checks.run("noise", checks.target(
        "127.0.0.1", server.port, name="e1.whatsapp.net/v4:443", messenger="whatsapp",
        trust="whatsapp"), checks.env(timeout, trust={"whatsapp": root_file}))
    assert obs.check == "noise" and obs.operation == F.NOISE_HANDSHAKE
    return obs.failure, obs.details


async def test_a_server_with_a_chain_to_the_root_is_proven(root_file: Path) -> None:
    async with NoiseServer() as server:
        failure, details = await _run(server, root_file)
    assert failure is None, details
    assert details["stage"] == "verified"
    assert details["server_static_key"] == server.static.public_key().public_bytes_raw().hex()
    assert details["leaf_serial"] == 4242 and details["intermediate_serial"] == 7
    # what went out: "WA" 6 3, then one frame of a 36-byte ClientHello
    assert server.prologues == [b"WA\x06\x03"] and len(server.hellos) == 1
    assert details["sent_bytes"] == 4 + 3 + 36


@pytest.mark.parametrize(("mode", "failure", "stage"), [
    ("foreign_root", F.NOISE_INVALID_CERTIFICATE, "certificate"),
    ("wrong_leaf", F.NOISE_INVALID_CERTIFICATE, "certificate"),
    ("garbage", F.NOISE_UNEXPECTED_RESPONSE, "server_hello"),
    ("http", F.NOISE_UNEXPECTED_RESPONSE, "server_hello"),
    ("reset", F.CONNECTION_RESET, "server_hello"),
    ("close", F.EOF_ERROR, "server_hello"),
    ("silent", F.GENERIC_TIMEOUT, "server_hello"),
])
async def test_each_stage_fails_with_its_own_string(root_file: Path, mode: str, failure: str,
                                                    stage: str) -> None:
    async with NoiseServer(mode=mode) as server:
        got, details = await _run(server, root_file, timeout=0.5 if mode == "silent" else 2.0)
    assert (got, details["stage"]) == (failure, stage), details
    if mode == "http":
        assert bytes.fromhex(str(details["reply_head"])).startswith(b"HTTP/1.1 403")


async def test_the_real_root_rejects_the_lab_server() -> None:
    """With the shipped anchor (WhatsApp's real root), a lab chain is an interceptor's."""
    async with NoiseServer() as server:
        (obs,) = await checks.run("noise", checks.target(
            "127.0.0.1", server.port, messenger="whatsapp", trust="whatsapp"), checks.env(2.0))
    assert obs.failure == F.NOISE_INVALID_CERTIFICATE
    assert "root" in str(obs.details["error"])


async def test_an_unreadable_root_is_a_deployment_fault(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key\n")
    async with NoiseServer() as server:
        (obs,) = await checks.run("noise", checks.target(
            "127.0.0.1", server.port, messenger="whatsapp", trust="whatsapp"),
            checks.env(2.0, trust={"whatsapp": tmp_path / "bad.pem"}))
    assert obs.failure == F.UNKNOWN_FAILURE and server.connections == 0
    assert "root key" in str(obs.details["error"])


def test_shipped_root_is_whatsmeows_key() -> None:
    from probe.measure.checks.base import bundled_anchor

    root = wire.load_root(bundled_anchor("whatsapp").read_bytes())
    assert root.hex() == "142375574d0a587166aae71ebe516437c4a28b73e3695c6ce1f7f9545da8ee6b"


def test_xeddsa_round_trip_and_tampering() -> None:
    key = Ed25519PrivateKey.generate()
    signature = xsign(key, b"details")
    assert wire.xeddsa_verify(montgomery(key), b"details", signature)
    assert not wire.xeddsa_verify(montgomery(key), b"detailz", signature)
    flipped = signature[:63] + bytes([signature[63] ^ 0x80])  # the sign bit names the key
    assert not wire.xeddsa_verify(montgomery(key), b"details", flipped)
    assert wire.montgomery_from_edwards(key.public_key().public_bytes_raw()) == montgomery(key)


def test_chain_checks_each_link() -> None:
    static = bytes(range(32))
    root = montgomery(TEST_ROOT)
    assert wire.verify_chain(cert_chain(static, TEST_ROOT), static, root)["leaf_serial"] == 4242
    with pytest.raises(wire.CertificateError, match="root"):
        wire.verify_chain(cert_chain(static, FOREIGN_ROOT), static, root)
    with pytest.raises(wire.CertificateError, match="static key"):
        wire.verify_chain(cert_chain(static, TEST_ROOT), bytes(32), root)
    with pytest.raises(wire.CertificateError, match="not valid now"):
        wire.verify_chain(cert_chain(static, TEST_ROOT, now=1_000_000), static, root)
