"""Issue 12, findings 7 and 8: hostile config files. Loading is bounded (aliases, size,
targets, regular files only) and check-config refuses what a round could not render."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

import pytest

from probe.inputs.config import MAX_CONFIG_BYTES, MAX_TARGETS, ConfigError, load_config
from probe.serve.service import Service
from tests.hardening.util import ROOT, cli, http_get, loopback_config, probe_run


def bomb(levels: int, width: int = 9) -> str:
    """A billion-laughs document: `levels` anchors, each `width` aliases of the one before."""
    lines = ["vantage: {name: bomb}", 'a0: &a0 ["lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{','.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [9, 12])
def test_alias_bomb_is_refused_at_once(tmp_path: Path, levels: int) -> None:
    """Was: a 488-byte bomb took 4.3 s and 335 MB (and a 7.2 MB "one-line" error); a
    665-byte one ran past 120 s and 6.4 GB."""
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(levels))
    assert path.stat().st_size < 700
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        load_config(path)
    took = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 1.0 and peak < 20 << 20, (took, peak)
    assert "YAML aliases expand the document past 1,000,000 nodes" in str(error.value)
    result = cli("check-config", str(path), timeout=30)
    assert result.returncode == 2 and len(result.stderr) < 300 and "\n" not in result.stderr.strip()


def test_aliases_that_stay_small_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text("vantage: {name: anchors}\nmessengers:\n  telegram:\n"
                    "    datacenters: [{name: d, addresses: [&lo 127.0.0.1]}]\n"
                    "baseline: {targets: [{name: site, address: *lo}]}\n")
    assert str(load_config(path).baseline.targets[0].address) == "127.0.0.1"


def test_a_million_targets_from_a_small_file_is_refused(tmp_path: Path) -> None:
    """Was: a 17.7 KB file expanding to 1,000,010 targets was accepted."""
    addresses = ",".join(["127.0.0.1"] * 1001)
    ports = ",".join(str(p) for p in range(1, 1000))
    path = tmp_path / "many.yaml"
    path.write_text(f"vantage: {{name: many}}\nmessengers:\n  telegram:\n"
                    f"    datacenters: [{{name: d, addresses: [{addresses}]}}]\n    ports: [{ports}]\n")
    assert path.stat().st_size < 18_000
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert time.monotonic() - started < 2
    # the 1001 x 999 DC targets, and those of the catalogue's groups the config leaves as
    # they are (web names, media DCs, the web client's hosts), as the plan builds them
    from probe.inputs.plan import plan

    rest = tmp_path / "rest.yaml"
    rest.write_text("vantage: {name: many}\nmessengers:\n  telegram:\n    datacenters: []\n")
    others = sum(len(p.targets) for p in plan(load_config(rest)))
    assert f"messengers: {1001 * 999 + others:,} targets; the limit is {MAX_TARGETS:,}" in str(error.value)


def test_oversized_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("w") as handle:
        handle.write("vantage: {name: big}\n#" + "x" * (MAX_CONFIG_BYTES + 10) + "\n")
    with pytest.raises(ConfigError, match="larger than 16 MiB, the limit for a config"):
        load_config(path)


def test_fifo_does_not_freeze_check_config_or_the_service(tmp_path: Path) -> None:
    """Was: a FIFO at the config path froze the service."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    result = cli("check-config", str(fifo), timeout=10)
    assert result.returncode == 2
    assert result.stderr.strip() == f"probe: error: {fifo}: not a regular file (a FIFO, device or socket); " \
                                    "a config is a YAML text file"
    assert cli("check-config", "/dev/zero", timeout=10).returncode == 2
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.2)
    with probe_run(path) as (process, port):
        path.unlink()
        os.mkfifo(path)
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert http_get(f"http://127.0.0.1:{port}/healthz", timeout=3)[0] == 200
        status, body = http_get(f"http://127.0.0.1:{port}/api/status", timeout=3)
        assert status == 200 and "not a regular file" in body


async def test_a_bomb_reload_keeps_the_loop_turning(tmp_path: Path) -> None:
    """Was: a bomb on reload froze the loop for 5.7 s and sent a 7.2 MB error to a client."""
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.2)
    service = Service(path, load_config(path))
    path.write_text(bomb(12))
    started = time.monotonic()
    ok, message = await service.reload_async()
    assert not ok and len(message) < 300 and time.monotonic() - started < 1.0
    assert service.last_reload_error == message and "alias bomb" in message


def test_lone_surrogate_is_refused_by_check_config(tmp_path: Path) -> None:
    """Was: `network: "isp\\ud800x"` passed check-config, then every round failed while
    rendering metrics, no evidence was written, and /healthz said ok."""
    path = tmp_path / "probe.yaml"
    path.write_text('vantage:\n  name: x\n  network: "isp\\ud800x"\n')
    result = cli("check-config", str(path), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"probe: error: {path}:3: vantage.network: a lone surrogate "
                                     "(a \\ud800-style escape) that no output can encode")


async def test_rounds_that_never_finish_make_healthz_fail(tmp_path: Path) -> None:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.1, interval=1)
    service = Service(path, load_config(path))
    assert service.health() == (True, "starting")
    service.started_at -= 3 * 1 + 61
    ok, text = service.health()
    assert not ok and text.startswith("stale: no round finished")


async def test_evidence_is_kept_when_metrics_cannot_be_recorded(tmp_path: Path) -> None:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, timeout=0.1, evidence=tmp_path / "ev")
    service = Service(path, load_config(path))

    def broken(result: object) -> None:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    service.metrics.record_round = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(UnicodeEncodeError):
        await service.run_one()
    assert (tmp_path / "ev" / "evidence.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize("name", ["configs/probe.example.yaml", "loopback"])
def test_the_target_count_is_the_plans(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit counts what probe/inputs/plan.py would build, without building it."""
    import probe.inputs.config
    from probe.inputs.plan import plan

    path = ROOT / name if name != "loopback" else loopback_config(
        tmp_path / "p.yaml", dc_port=9, datacenters=7, domains=[{"name": "a.example"}])
    config = load_config(path)
    monkeypatch.setattr(probe.inputs.config, "MAX_TARGETS", -1)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    planned = sum(len(p.targets) for p in plan(config))
    assert f"messengers: {planned:,} targets" in str(error.value)
