"""Secrets are never echoed: a secret in the wrong key is refused naming the key only; a
secret file's errors name the file, never its content; a FIFO swapped in as the secret file
does not freeze the probe."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
import yaml

from probe.measure.checks.mtproxy import SecretUnavailable, read_secret
from tests.hardening.util import cli, loopback_config

HEX = "ee" + "0123456789abcdef" * 2 + b"example.com".hex()
B64 = base64.urlsafe_b64encode(bytes.fromhex(HEX)).decode().rstrip("=")
PLAIN = "0123456789abcdef" * 2
STD64 = base64.b64encode(bytes(range(200, 216))).decode()  # with + and /


def config_with(tmp_path: Path, proxy: dict[str, object], where: str = "proxy") -> Path:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9)
    data = yaml.safe_load(path.read_text())
    if where == "proxy":
        data["messengers"]["telegram"]["proxies"] = [{"name": "p", "address": "127.0.0.1", **proxy}]
    else:
        data["vantage"]["network"] = proxy["network"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("key", "secret"), [
    ("secret_env", HEX), ("secret_env", B64), ("secret_env", PLAIN), ("secret_env", STD64),
    ("secret_file", HEX), ("name", PLAIN), ("sni", HEX)])
def test_a_secret_in_the_wrong_key_is_refused_naming_the_key_only(
        tmp_path: Path, key: str, secret: str) -> None:
    proxy: dict[str, object] = {"secret_env": "PROXY_SECRET", key: secret}
    if key == "secret_file":
        proxy.pop("secret_env")
    path = config_with(tmp_path, proxy)
    commands = [["check-config", str(path)]]
    if (key, secret) == ("secret_env", HEX):  # the review's case: once ran, the secret in every round
        commands.append(["once", "--config", str(path)])
    for command in commands:
        result = cli(*command)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "messengers.telegram.proxies[0]" in lines[0], lines[0]
        for form in (secret, secret.lower(), secret[:16], secret[-16:]):
            assert form not in result.stderr + result.stdout


def test_a_secret_as_the_network_name_is_refused(tmp_path: Path) -> None:
    path = config_with(tmp_path, {"network": B64}, where="vantage")
    result = cli("check-config", str(path))
    assert result.returncode == 2 and "vantage.network: looks like a secret" in result.stderr
    assert B64 not in result.stderr


def test_names_and_descriptions_are_not_taken_for_secrets(tmp_path: Path) -> None:
    for network in ("moscow_rostelecom_fibre", "Rostelecom-2024-Moscow-Fiber", "AS12389 PJSC Rostelecom"):
        path = config_with(tmp_path, {"network": network}, where="vantage")
        assert cli("check-config", str(path)).returncode == 0, network


def test_secret_file_errors_name_the_file_never_its_content(tmp_path: Path) -> None:
    bad = tmp_path / "secret"
    bad.write_text(HEX[:-3] + "zz!")  # a secret one typo away from valid
    with pytest.raises(SecretUnavailable) as caught:
        read_secret({"secret_file": str(bad)})
    assert str(bad) in str(caught.value) and HEX[:16] not in str(caught.value)
    bad.write_bytes(HEX.encode() + b"\xff")
    with pytest.raises(SecretUnavailable) as caught:
        read_secret({"secret_file": str(bad)})
    assert "not ASCII" in str(caught.value) and HEX[:16] not in str(caught.value)
    bad.write_text(HEX * 200)
    with pytest.raises(SecretUnavailable, match="larger than 4096 bytes"):
        read_secret({"secret_file": str(bad)})
    bad.write_text(HEX + "\n")
    assert read_secret({"secret_file": str(bad)}) is not None


def test_a_fifo_as_the_secret_file_does_not_freeze(tmp_path: Path) -> None:
    """Before: open() of a FIFO nobody writes blocked the whole process (healthz dead,
    SIGTERM ignored). Now it is refused at once, and so are directories and devices."""
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path, Path("/dev/zero")):
        started = time.monotonic()
        with pytest.raises(SecretUnavailable, match="not a regular file"):
            read_secret({"secret_file": str(path)})
        assert time.monotonic() - started < 1
