"""What `probe` prints, as a user meets it: in a pipe, in an 80-column terminal, in --help,
and when a config is wrong. Real `probe` processes; a pseudo-terminal where a TTY matters."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from probe.judge.classify import RULES
from tests.unit.conftest import WEB, World
from tests.unit.test_cli import run_probe, run_probe_async, write_config

PROBE = [sys.executable, "-m", "probe"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(*args: str, columns: int = 80) -> str:
    """`probe ARGS` on a pseudo-terminal `columns` wide; what the terminal receives, with
    colour codes removed."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([*PROBE, *args], stdin=side, stdout=side, stderr=side,
                               env={**env, "TERM": "xterm-256color"})
    os.close(side)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_rules_keep_every_id_whole_in_an_80_column_terminal() -> None:
    out = run_in_terminal("rules", columns=80)
    assert "…" not in out
    for rule in RULES:
        assert re.search(rf"│ {re.escape(rule.id)} +│", out), rule.id
        for word in rule.condition.split():  # the condition wraps between words only
            assert word in out, (rule.id, word)


def test_rules_in_a_pipe_one_line_per_rule() -> None:
    result = run_probe("rules")
    assert result.returncode == 0
    for number, rule in enumerate(RULES, 1):
        lines = [line for line in result.stdout.splitlines() if f" {rule.id} " in line]
        assert len(lines) == 1, rule.id
        assert lines[0].startswith(f"│ {number} ") and rule.verdict in lines[0]
        assert rule.condition in lines[0]  # not folded either: nothing limits a pipe's width
    tsv = run_probe("rules", "--format", "tsv").stdout.splitlines()
    assert tsv[0] == "#\trule\tverdict\tcondition"
    assert [line.split("\t")[1] for line in tsv[1:]] == [rule.id for rule in RULES]


async def test_once_in_a_pipe_can_be_grepped(world: World, tmp_path: Path) -> None:
    """The issue's own example: an offline vantage's rows found by their rule id, whole."""
    await world.cut_off()
    config = write_config(world, tmp_path / "probe.yaml")
    code, stdout, stderr = await run_probe_async("once", "--config", str(config), "--format", "json")
    assert code == 0, stderr
    offline = {v["target"] for v in json.loads(stdout)["verdicts"] if v["rule"] == "baseline_unreachable"}
    assert offline
    shell = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m probe once --config {config} | grep baseline_unreachable",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(shell.communicate(), 60)
    assert shell.returncode == 0, err
    found = set()
    for line in out.decode().splitlines():
        match = re.fullmatch(r"│ telegram +│ (\S+) +│ vantage_offline +│ baseline_unreachable +│ +│", line)
        assert match, line
        found.add(match[1])
    assert found == offline


async def test_once_tsv_and_jsonl_are_one_line_per_target(world: World, tmp_path: Path) -> None:
    await world.dcs[0].stop()
    config = write_config(world, tmp_path / "probe.yaml")
    code, tsv_out, stderr = await run_probe_async("once", "--config", str(config), "--format", "tsv")
    assert code == 0, stderr
    rows = list(csv.DictReader(io.StringIO(tsv_out), delimiter="\t"))
    code, jsonl_out, stderr = await run_probe_async("once", "--config", str(config), "--format", "jsonl")
    assert code == 0, stderr
    objects = [json.loads(line) for line in jsonl_out.splitlines()]
    # every target of the world, once each (and nothing else: the world is all on loopback)
    world_targets = {f"dc1-v4:{world.dc_port}", f"dc2-v4:{world.dc_port}", f"{WEB}/v4", f"{WEB}/v6"}
    assert len(rows) == len(objects) == len(world_targets)
    assert {r["target"] for r in rows} == {o["target"] for o in objects} == world_targets
    assert list(rows[0]) == ["vantage", "messenger", "target", "verdict", "rule", "failures"]
    by_target = {r["target"]: r for r in rows}
    dc1 = by_target[f"dc1-v4:{world.dc_port}"]
    assert (dc1["vantage"], dc1["verdict"]) == ("unit", "tcp_reset")
    assert "tcp:connection_refused" in dc1["failures"].split(",")
    by_target_json = {o["target"]: o for o in objects}
    assert {o["vantage"] for o in objects} == {"unit"}
    assert by_target_json[f"dc1-v4:{world.dc_port}"]["verdict"] == "tcp_reset"
    assert by_target_json["web.telegram.org/v4"]["verdict"] == by_target["web.telegram.org/v4"]["verdict"]


COMMANDS = ["once", "run", "check-config", "evidence", "rules", "export-config", "catalog", "prefixes"]


def test_every_command_is_in_the_help_test() -> None:
    import typer.main

    from probe.cli import app

    assert sorted(getattr(typer.main.get_command(app), "commands", {})) == sorted(COMMANDS)


@pytest.mark.parametrize("command", [[c] for c in COMMANDS] + [[]])
def test_help_has_no_bool_placeholders_and_lists_format_choices(command: list[str]) -> None:
    out = run_in_terminal(*command, "--help", columns=160)
    assert "Usage: " in out and "[OPTIONS]" in out
    assert "<bool>" not in out
    if command == ["once"]:
        assert "<table|json|tsv|jsonl>" in out
    if command == ["rules"]:
        assert "<table|markdown|tsv>" in out


def test_a_bad_format_names_the_choices() -> None:
    result = run_probe("once", "--config", "configs/probe.example.yaml", "--format", "xml")
    assert result.returncode == 2
    assert result.stderr == ("probe: error: Invalid value for '--format': 'xml' is not one of "
                             "'table', 'json', 'tsv', 'jsonl'.\n")


PLAIN_ERRORS = {
    "vantage:\n  name: x\n  country: ir\n":
        ":3: vantage.country: 'ir' is not two capital letters (an ISO 3166 country code, like IR)",
    "vantage:\n  name: x\n  role: victim\n": ":3: vantage.role: 'victim' is not one of: subject, control",
    "vantage: {name: x}\nschedule:\n  intervall: 60\n":
        ":3: schedule.intervall: unknown key; did you mean 'interval'?",
    "vantage: {name: x}\nresolvers:\n  servers:\n    - {name: a, adress: 192.0.2.1}\n":
        ":4: resolvers.servers[0].adress: unknown key; did you mean 'address'?",
    "vantage:\n  name: x\n  colour: red\n":
        ":3: vantage.colour: unknown key (known keys: name, country, asn, network, role,",
    "vantage: {name: x}\nschedule:\n  interval: 0\n":
        ":3: schedule.interval: 0 is too small: must be at least 1",
    "vantage: {name: x, asn: abc}\n": ":1: vantage.asn: 'abc' is not a whole number",
    "vantage:\n  name: a b\n": ":2: vantage.name: 'a b' is not 1 to 64 letters, digits, '_', '.' or '-'",
    "vantage:\n  name: x\n  country: ir\nschedule: {jitter: 2}\n":
        ":3: vantage.country: 'ir' is not two capital letters (an ISO 3166 country code, like IR) "
        "(also wrong: line 4 schedule.jitter)",
}


@pytest.mark.parametrize("text", sorted(PLAIN_ERRORS))
def test_config_errors_are_plain_words(tmp_path: Path, text: str) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text(text)
    result = run_probe("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"probe: error: {path}{PLAIN_ERRORS[text]}" in result.stderr
    for raw in ("should match pattern", "Input should be", "(and ", "Value error"):
        assert raw not in result.stderr


def test_export_config_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run_probe("export-config", str(tmp_path))
    assert first.returncode == 0, first.stderr
    written = first.stdout.split()
    assert f"{tmp_path}/configs/prometheus/rules/reach.alerts.yml" in written
    assert f"{tmp_path}/grafana/dashboards/fleet-overview.json" in written
    assert Path(tmp_path / "configs/probe.example.yaml").read_text() == \
        Path("configs/probe.example.yaml").read_text()
    again = run_probe("export-config", str(tmp_path))
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already exist; use --force to overwrite" in again.stderr
    assert run_probe("export-config", "--force", str(tmp_path)).returncode == 0
