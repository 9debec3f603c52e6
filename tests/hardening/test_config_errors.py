"""Every broken config gives one line naming file, line and key, exit 2, no traceback,
whichever command reads it; a bad reload keeps the running config and says so."""

from __future__ import annotations

import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from probe.cli import main
from probe.inputs.config import load_config
from probe.serve.service import Service
from tests.hardening.util import cli, free_port, http_get, loopback_config, metric, probe_run, wait_metric

CORPUS = sorted((Path(__file__).parent / "configs").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ").replace("{file}", str(path))


def commands(path: Path) -> list[list[str]]:
    return [["check-config", str(path)], ["once", "--config", str(path)],
            ["run", "--config", str(path), "--listen", f"127.0.0.1:{free_port()}"]]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_every_command_names_file_line_and_key(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (fast) for the whole corpus: the CLI's own entry point, as a user runs it."""
    want = f"probe: error: {expected(path)}"
    for args in commands(path):
        monkeypatch.setattr(sys, "argv", ["probe", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2, (args, err)
        assert err.strip() == want, (args[0], err)
        assert out == ""


@pytest.mark.parametrize("name", ["dup_key", "binary", "unknown_messenger", "bad_yaml"])
def test_as_a_subprocess_no_traceback(name: str) -> None:
    path = Path(__file__).parent / "configs" / f"{name}.yaml"
    want = f"probe: error: {expected(path)}"
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda args: cli(*args, timeout=30), commands(path)))
    for args, result in zip(commands(path), results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip() == want, (args[0], result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert result.stdout == ""


BAD_WEB_CONFIGS = {
    "unknown key": ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cert_fiel: c\n",
                    ":4: tls_server_config.cert_fiel: unknown key"),
    "missing key": ("tls_server_config:\n  cert_file: a.pem\n",
                    ":1: tls_server_config.key_file: required key is missing"),
    "no such cert": ("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n",
                     ":2: tls_server_config.cert_file: cannot load certificate and key"),
    "plain password": ("basic_auth_users:\n  prometheus: secret\n",
                       ":2: basic_auth_users.prometheus: not a bcrypt hash"),
    "bad auth type": ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n",
                      ":4: tls_server_config.client_auth_type: 'Maybe' is not one of: NoClientCert,"),
    "bad yaml": ("basic_auth_users: [\n", ": invalid YAML"),
}


@pytest.mark.parametrize("name", sorted(BAD_WEB_CONFIGS))
def test_bad_web_config_is_one_line_exit_2(name: str, tmp_path: Path) -> None:
    text, fragment = BAD_WEB_CONFIGS[name]
    web = tmp_path / "web.yaml"
    web.write_text(text)
    config = loopback_config(tmp_path / "probe.yaml", dc_port=9)
    result = cli("run", "--config", str(config), "--listen", "127.0.0.1:1",
                 "--web-config-file", str(web), timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith(f"probe: error: {web}"), result.stderr
    assert fragment in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


async def test_bad_reload_keeps_config_in_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.2)
    service = Service(path, load_config(path))
    good = service.config
    for broken in sorted(CORPUS)[:8]:
        path.write_bytes(broken.read_bytes())
        with caplog.at_level(logging.ERROR, logger="probe"):
            ok, message = service.reload()
        assert not ok and message == expected(broken).replace(str(broken), str(path))
        assert service.config is good
        assert service.last_reload_error == message
        assert metric(service.metrics.render().decode(), "reach_config_last_reload_successful") == 0
        assert message in caplog.text
        await service.run_one()  # the old config still runs
    loopback_config(path, dc_port=9, timeout=0.3)
    assert service.reload() == (True, "reloaded")
    assert service.config.schedule.timeouts["dns"] == 0.3
    assert metric(service.metrics.render().decode(), "reach_config_last_reload_successful") == 1


def test_sighup_with_bad_file(tmp_path: Path) -> None:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.2)
    log = tmp_path / "probe.log"
    with probe_run(path, log=log) as (process, port):
        base = f"http://127.0.0.1:{port}"
        path.write_text(path.read_text() + "vantge: typo\n")
        process.send_signal(signal.SIGHUP)
        assert wait_metric(base, "reach_config_last_reload_successful", 0) == 0
        status, body = http_get(f"{base}/-/reload", method="POST", data=b"")
        assert status == 403 and "not enabled" in body  # lifecycle API off by default
        status, body = http_get(f"{base}/api/status")
        assert status == 200 and "vantge: unknown key" in body
        assert http_get(f"{base}/healthz")[0] == 200  # still serving, old config running
        assert process.poll() is None
        loopback_config(path, dc_port=9, timeout=0.2)
        process.send_signal(signal.SIGHUP)
        assert wait_metric(base, "reach_config_last_reload_successful", 1) == 1
    text = log.read_text()
    assert "reload refused, keeping the running config" in text and "vantge: unknown key" in text
    assert "Traceback" not in text
