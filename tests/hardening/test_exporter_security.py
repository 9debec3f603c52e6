"""TLS and basic auth on `probe run` (Prometheus web-config format), with real clients:
curl and aiohttp against a real `probe run` process, certificates from a trustme CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme

from probe.serve.webconfig import load_web_config
from tests.hardening.util import loopback_config, probe_run

PASSWORD = "s3cret-scrape"
AUTH = {"Authorization": aiohttp.encode_basic_auth("prometheus", PASSWORD)}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus.example")
    files = {"ca": directory / "ca.pem", "cert": directory / "probe.crt", "key": directory / "probe.key",
             "client": directory / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


def web_config(directory: Path, pki: dict[str, Path], client_auth: str | None = None) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    text = (f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n"
            + (f"  client_auth_type: {client_auth}\n  client_ca_file: {pki['ca']}\n" if client_auth else "")
            + f"basic_auth_users:\n  prometheus: '{hashed}'\n"
            + "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n")
    path = directory / "web.yml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def secured(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("secured")
    config = loopback_config(directory / "probe.yaml", dc_port=9, timeout=0.2)
    with probe_run(config, "--web-config-file", str(web_config(directory, pki))) as (_, port):
        yield port


def curl(*args: str) -> tuple[int, str]:
    result = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                             *args], capture_output=True, text=True, timeout=20)
    return result.returncode, result.stdout + result.stderr


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@needs_curl
def test_curl_right_and_wrong_credentials(secured: int, pki: dict[str, Path]) -> None:
    url = f"https://127.0.0.1:{secured}"
    ca = ["--cacert", str(pki["ca"])]
    for path in ("/metrics", "/api/status", "/healthz", "/"):
        assert curl(*ca, "-u", f"prometheus:{PASSWORD}", url + path) == (0, "200"), path
    assert curl(*ca, "-u", "prometheus:wrong", url + "/metrics") == (0, "401")
    assert curl(*ca, "-u", f"nobody:{PASSWORD}", url + "/metrics") == (0, "401")
    assert curl(*ca, url + "/metrics") == (0, "401")
    assert curl(*ca, "-X", "POST", url + "/-/reload") == (0, "401")  # reload is guarded too
    assert curl(*ca, url + "/healthz") == (0, "200")  # open: the container health check has no password
    assert curl(*ca, url + "/healthz/") == (0, "401")  # and only that exact path
    code, _ = curl(url + "/metrics")  # the CA is not trusted by default: TLS refuses
    assert code != 0
    code, _ = curl("-u", f"prometheus:{PASSWORD}", f"http://127.0.0.1:{secured}/metrics")
    assert code != 0  # no plain HTTP on a TLS listener


async def test_aiohttp_client(secured: int, pki: dict[str, Path]) -> None:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    url = f"https://127.0.0.1:{secured}/metrics"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context, headers=AUTH) as r:
            assert r.status == 200
            assert "reach_config_last_reload_successful" in await r.text()
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        for _ in range(20):  # cached after the first bcrypt check: fast and still right
            async with session.get(url, ssl=context, headers=AUTH) as r:
                assert r.status == 200
        wrong = {"Authorization": aiohttp.encode_basic_auth("prometheus", "nope")}
        async with session.get(url, ssl=context, headers=wrong) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        async with session.get(url, ssl=context, headers={"Authorization": "Basic !!!not-base64"}) as r:
            assert r.status == 401
        async with session.get(url, ssl=context, headers={"Authorization": "Basic " + "A" * 5000}) as r:
            assert r.status in (400, 401)
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{secured}/metrics"):
                pass


@needs_curl
def test_client_certificates_required(pki: dict[str, Path], tmp_path: Path) -> None:
    config = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.2)
    web = web_config(tmp_path, pki, "RequireAndVerifyClientCert")
    with probe_run(config, "--web-config-file", str(web)) as (_, port):
        url = f"https://127.0.0.1:{port}/metrics"
        base = ["--cacert", str(pki["ca"]), "-u", f"prometheus:{PASSWORD}"]
        assert curl(*base, "--cert", str(pki["client"]), url) == (0, "200")
        code, _ = curl(*base, url)
        assert code != 0  # no client certificate: the handshake fails


def test_web_config_paths_are_relative_to_the_file(pki: dict[str, Path], tmp_path: Path) -> None:
    for name in ("cert", "key"):
        shutil.copy(pki[name], tmp_path / pki[name].name)
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: probe.crt\n  key_file: probe.key\n")
    loaded = load_web_config(web)
    assert loaded.ssl_context is not None and loaded.scheme == "https" and not loaded.users
    assert loaded.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
