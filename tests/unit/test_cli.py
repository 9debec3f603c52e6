"""The CLI as a user meets it: real `probe` processes, their output and exit codes."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.unit.conftest import World

PROBE = [sys.executable, "-m", "probe"]


def run_probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBE, *args], capture_output=True, text=True, timeout=60)


async def run_probe_async(*args: str) -> tuple[int, str, str]:
    """A probe process while this test's event loop keeps the servers answering."""
    process = await asyncio.create_subprocess_exec(
        *PROBE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def write_config(world: World, path: Path, **overrides: object) -> Path:
    path.write_text(yaml.safe_dump(world.config_data(**overrides)))
    return path


def test_version() -> None:
    result = run_probe("--version")
    assert result.returncode == 0 and result.stdout.startswith("probe 0.")


BAD_CONFIGS = {
    "bad_yaml.yaml": ("vantage: {name: x\n", r"bad_yaml.yaml:2: invalid YAML"),
    "unknown_key.yaml": ("vantage:\n  name: x\n  colour: red\n",
                         "unknown_key.yaml:3: vantage.colour: unknown key"),
    "bad_address.yaml": (
        "vantage: {name: x}\nresolvers:\n  servers:\n    - {name: a, address: 300.1.1.1}\n",
        "bad_address.yaml:4: resolvers.servers[0].address: '300.1.1.1' is not an IP address"),
    "bad_role.yaml": ("vantage:\n  name: x\n  role: victim\n", "bad_role.yaml:3: vantage.role:"),
    "no_vantage.yaml": ("schedule: {interval: 60}\n", "no_vantage.yaml:1: vantage: required key is missing"),
    "not_mapping.yaml": ("- a\n- b\n", "not_mapping.yaml:1: the config must be a YAML mapping"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["check-config", "once", "run"])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, name: str, command: str) -> None:
    text, expected = BAD_CONFIGS[name]
    path = tmp_path / name
    path.write_text(text)
    result = run_probe(command, "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args", [
    ["once", "--config", "/no/such/file.yaml"],
    ["check-config", "/no/such/file.yaml"],  # the older positional form
    ["check-config", "-c", "/no/such/file.yaml"],
    ["check-config"],
    ["check-config", "-c", "configs/probe.example.yaml", "configs/probe.example.yaml"],
    ["once"],
    ["once", "--config", "configs/probe.example.yaml", "--format", "xml"],
    ["run", "--config", "configs/probe.example.yaml", "--listen", "nowhere"],
    ["catalog", "whatsup"],
    ["no-such-command"],
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    result = run_probe(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("probe: error: ")


def test_catalog_lists_every_dc_and_family() -> None:
    result = run_probe("catalog", "telegram")
    assert result.returncode == 0
    data = yaml.safe_load(result.stdout)
    addresses = {a for dc in data["groups"]["datacenters"]["endpoints"] for a in dc["addresses"]}
    assert {"149.154.175.50", "149.154.167.51", "95.161.76.100", "149.154.175.100",
            "149.154.167.91", "149.154.171.5", "2001:67c:4e8:f002::a"} <= addresses
    assert len(data["groups"]["datacenters"]["endpoints"]) == 5
    assert data["groups"]["datacenters"]["ports"] == [443, 80, 5222]
    assert "149.154.160.0/20" in data["address_space"]


def test_check_config_accepts_the_example() -> None:
    result = run_probe("check-config", "configs/probe.example.yaml")
    assert result.returncode == 0
    assert "ok" in result.stdout and "3 messenger(s), 159 targets" in result.stdout


async def test_once_json_matches_the_contract(world: World, tmp_path: Path) -> None:
    config = write_config(world, tmp_path / "probe.yaml")
    code, stdout, stderr = await run_probe_async("once", "--config", str(config), "--format", "json")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert set(data) >= {"vantage", "started", "observations", "verdicts"}
    assert data["vantage"] == {"name": "unit", "country": "IR", "asn": 64500, "network": "",
                               "role": "subject"}
    ids = {o["id"] for o in data["observations"]}
    for verdict in data["verdicts"]:
        assert set(verdict) >= {"messenger", "target", "verdict", "rule", "evidence"}
        assert all(e["observation"] in ids for e in verdict["evidence"])
    by_target = {v["target"]: v["verdict"] for v in data["verdicts"]}
    assert by_target[f"dc1-v4:{world.dc_port}"] == "ok"
    assert by_target["web.telegram.org/v4"] == "ok"


async def test_fail_on_block(world: World, tmp_path: Path) -> None:
    await world.dcs[0].stop()
    config = write_config(world, tmp_path / "probe.yaml")
    code, stdout, _ = await run_probe_async("once", "--config", str(config))
    assert code == 0 and "tcp_reset" in stdout  # a block is a finding, not an error
    code, _, _ = await run_probe_async("once", "--config", str(config), "--fail-on-block")
    assert code == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_exporter_end_to_end(world: World, tmp_path: Path) -> None:
    config = write_config(world, tmp_path / "probe.yaml",
                          schedule={"interval": 2, "timeouts": {"dns": 1, "connect": 1, "tls": 1,
                                                                 "mtproto": 1, "http": 2}})
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *PROBE, "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                await asyncio.sleep(0.1)
                try:
                    async with session.get(f"{base}/api/status") as response:
                        status = await response.json()
                    if status["round"] is not None:
                        break
                except aiohttp.ClientError:
                    continue
            assert status["round"]["vantage"]["name"] == "unit"
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
            dc1 = f'vantage="unit",messenger="telegram",target="dc1-v4:{world.dc_port}"'
            web = 'vantage="unit",messenger="telegram",target="web.telegram.org/v4"'
            assert f'reach_check_success{{{dc1},check="mtproto"}} 1' in metrics
            assert f'reach_verdict{{{web},verdict="ok"}} 1' in metrics
            assert 'reach_baseline_success{vantage="unit"} 1' in metrics
            assert 'reach_round_event_loop_lag_seconds{vantage="unit"} ' in metrics
            if shutil.which("promtool"):
                lint = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                                      capture_output=True, text=True, timeout=30)
                assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == ""
            async with session.get(f"{base}/") as response:
                page = await response.text()
            assert "web.telegram.org/v4" in page and "all_checks_ok" in page
            # a bad config is refused and the old one keeps running
            good = config.read_text()
            config.write_text("vantage: {name: unit, oops: 1}\n")
            async with session.post(f"{base}/-/reload") as response:
                assert response.status == 403  # lifecycle API off by default: SIGHUP reloads
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            async with session.get(f"{base}/api/status") as response:
                assert "vantage.oops: unknown key" in (await response.json())["config"]["last_reload_error"]
            async with session.get(f"{base}/metrics") as response:
                assert 'reach_config_last_reload_successful{vantage="unit"} 0.0' in await response.text()
            config.write_text(good)
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            async with session.get(f"{base}/metrics") as response:
                assert 'reach_config_last_reload_successful{vantage="unit"} 1.0' in await response.text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "reload refused" in log and "Traceback" not in log


def test_rules_doc_is_generated_from_the_rule_table() -> None:
    result = run_probe("rules", "--format", "markdown")
    assert result.returncode == 0
    assert Path("docs/classifier.md").read_text() == result.stdout, \
        "docs/classifier.md is stale: run `probe rules --format markdown > docs/classifier.md`"
    assert "| 1 | `baseline_unreachable` | `vantage_offline` |" in result.stdout


async def test_once_on_uvloop(world: World, tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    data = world.config_data()
    data["schedule"]["event_loop"] = "uvloop"
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump(data))
    code, stdout, stderr = await run_probe_async("once", "--config", str(config), "--format", "json")
    assert code == 0, stderr
    verdicts = {v["target"]: v["verdict"] for v in json.loads(stdout)["verdicts"]}
    assert verdicts[f"dc1-v4:{world.dc_port}"] == "ok" and verdicts["web.telegram.org/v4"] == "ok"


async def test_table_says_once_why_the_vantage_is_offline(world: World, tmp_path: Path) -> None:
    await world.cut_off()
    config = write_config(world, tmp_path / "probe.yaml")
    code, stdout, _ = await run_probe_async("once", "--config", str(config))
    assert code == 0
    assert "baseline IPv4 DOWN" in stdout
    assert stdout.count("connection_refused") == 1  # the baseline's failure, said once
    assert "vantage_offline" in stdout and "tcp_reset" not in stdout
