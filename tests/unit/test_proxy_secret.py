"""An MTProxy secret never appears in any output: `probe once` (table and JSON, stdout and
stderr), `probe check-config`, and a running `probe run` (its log, /metrics, /api/status,
the status page, the evidence log). Whoever holds a proxy's secret can use the proxy, and
in a hostile network can prove that a vantage uses it; the probe only names where the
secret is kept (a file, a variable).

Two proxies on loopback (ee secret from a variable, dd secret from a file) in front of the
test DC; both must be checked and `ok`, so the secrets were really used, and then every
output is searched for the secrets in every spelling (hex, without their prefix, base64,
the raw key bytes)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import yaml

from tests.hardening.util import PROBE, ROOT, cli, http_get, loopback_config, probe_run
from tests.support._common import ThreadedServer
from tests.support.mtproto import MtprotoServer
from tests.support.mtproxy import MtproxyServer

EE = "ee" + "c0ffee15" * 4 + b"front.lab.example".hex()
DD = "dd" + "5ec7e75e" * 4


def spellings(secret: str) -> list[bytes]:
    raw = bytes.fromhex(secret)
    key = raw[1:17]
    return [secret.encode(), secret[2:34].encode(), secret.upper().encode(), key,
            key.hex().upper().encode(), base64.urlsafe_b64encode(raw).rstrip(b"="),
            base64.b64encode(raw).rstrip(b"="), base64.b64encode(key).rstrip(b"=")]


def assert_no_secret(where: str, data: bytes) -> None:
    for secret in (EE, DD):
        for spelling in spellings(secret):
            assert spelling not in data, f"a spelling of a proxy secret is in {where}"


def config_with_proxies(tmp_path: Path, dc_port: int, ee_port: int, dd_port: int) -> Path:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=dc_port, timeout=2, interval=1,
                           evidence=tmp_path / "evidence")
    data = yaml.safe_load(path.read_text())
    (tmp_path / "dd.secret").write_text(DD + "\n")
    data["messengers"]["telegram"]["proxies"] = [
        {"name": "ee-proxy", "address": "127.0.0.1", "port": ee_port, "secret_env": "REACH_TEST_EE"},
        {"name": "dd-proxy", "address": "127.0.0.1", "port": dd_port, "secret_file": "dd.secret"},
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_no_output_carries_a_proxy_secret(tmp_path: Path) -> None:
    env = {**os.environ, "REACH_TEST_EE": EE}
    with ThreadedServer(MtprotoServer()) as dc, \
            ThreadedServer(MtproxyServer(secret=EE, upstream=("127.0.0.1", dc.port))) as ee, \
            ThreadedServer(MtproxyServer(secret=DD, upstream=("127.0.0.1", dc.port))) as dd:
        config = config_with_proxies(tmp_path, dc.port, ee.port, dd.port)
        checked = cli("check-config", str(config))
        assert checked.returncode == 0, checked.stderr
        assert_no_secret("check-config", (checked.stdout + checked.stderr).encode())

        for fmt in ("json", "table"):
            once = subprocess.run([*PROBE, "once", "--config", str(config), "--format", fmt],
                                  capture_output=True, timeout=120, cwd=ROOT, env=env)
            assert once.returncode == 0, once.stderr
            assert_no_secret(f"probe once --format {fmt}", once.stdout + once.stderr)
        assert b'"ee-proxy-v4:' in once.stdout or b"ee-proxy-v4:" in once.stdout

        os.environ["REACH_TEST_EE"] = EE  # probe_run passes the environment on
        try:
            log = tmp_path / "run.log"
            with probe_run(config, log=log) as (_, port):
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    status_code, status = http_get(f"{base}/api/status")
                    if status_code == 200 and '"ee-proxy-v4:' in status and '"dd-proxy-v4:' in status:
                        break
                    time.sleep(0.3)
                outputs = {"/api/status": status, "/metrics": http_get(f"{base}/metrics")[1],
                           "/": http_get(f"{base}/")[1]}
        finally:
            del os.environ["REACH_TEST_EE"]
    outputs["log"] = log.read_text(errors="replace")
    for path in sorted((tmp_path / "evidence").glob("*.jsonl")):
        outputs[f"evidence {path.name}"] = path.read_text(errors="replace")
    assert any(k.startswith("evidence") for k in outputs)
    for where, text in outputs.items():
        assert_no_secret(where, text.encode())
    # the proxies were really checked with their secrets, and reached the DC through them
    status_round = json.loads(outputs["/api/status"])["round"]
    verdicts = {v["target"]: v for v in status_round["verdicts"]}
    for name in (f"ee-proxy-v4:{ee.port}", f"dd-proxy-v4:{dd.port}"):
        assert verdicts[name]["verdict"] == "ok", verdicts[name]
    assert "ee-proxy" in outputs["/metrics"] and "front.lab.example" in outputs["evidence evidence.jsonl"]
