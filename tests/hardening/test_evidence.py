"""The evidence log under crashes, full disks, rotation and retention; and it never holds
the vantage's own address."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.inputs.config import Config, load_config
from probe.model.observation import Observation, RoundDraft, RoundResult
from probe.serve.service import Service
from probe.sinks.evidence import CURRENT, EvidenceLog, read_rounds, summarise
from tests.hardening._counts import CASES
from tests.hardening.hostile import ScriptedTCP, ScriptedUDP
from tests.hardening.hostile import dns_answer as good_reply
from tests.hardening.util import ROOT, cli, loopback_config, metric


def synthetic_round(config: Config, observations: int = 50) -> RoundResult:
    now = time.time()
    result = RoundDraft(config.vantage.identity(), [], now, now + 1)
    for i in range(observations):
        result.observations.append(Observation(
            "telegram", f"dc{i}-v4:443", "tcp", "connect", None, "198.18.64.1", 443, now, 0.01,
            {"pad": "x" * 200}, id=i))
    return result.judged([])


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(loopback_config(tmp_path / "probe.yaml", dc_port=9, evidence=tmp_path / "ev"))


WRITER = """
import sys, time
from probe.inputs.config import load_config
from probe.sinks.evidence import EvidenceLog
from tests.hardening.test_evidence import synthetic_round
config = load_config(sys.argv[1])
log = EvidenceLog.for_config(config)
print("ready", flush=True)
for _ in range(100000):
    log.append_round(synthetic_round(config, 3000))
"""


def test_kill_9_mid_write_loses_at_most_the_line_being_written(tmp_path: Path, config: Config) -> None:
    directory = config.evidence.directory
    assert directory is not None
    rng = random.Random(6)
    kills = torn_seen = 0
    for _ in range(int(os.environ.get('HARDENING_KILLS', '6'))):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "probe.yaml")],
                                 stdout=subprocess.PIPE, cwd=ROOT)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        for _ in range(200):  # a loaded machine may take a while over the first line
            if (directory / CURRENT).exists():
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        before = summarise(directory)
        assert len(before["torn_lines"]) <= 1 + torn_seen  # at most the line being written
        torn_by_this_kill = len(before["torn_lines"]) > torn_seen
        torn_seen = len(before["torn_lines"])
        if torn_by_this_kill:  # an earlier kill's torn line was closed and is no longer the last
            last = before["torn_lines"][-1]
            lines = (directory / CURRENT).read_bytes().count(b"\n")
            assert last["line"] >= lines  # the torn one is the last line of the file
        # the next writer closes the torn line and its own line stays whole
        assert EvidenceLog.for_config(config).append_round(synthetic_round(config, 10))
        after = summarise(directory)
        assert after["rounds"] == before["rounds"] + 1
        assert len(after["torn_lines"]) == torn_seen
        assert (directory / CURRENT).read_bytes().endswith(b"\n")
    CASES["faults/kill -9 mid-write"] += kills
    CASES["faults/kill -9 torn lines reported"] += torn_seen
    # the CLI says what was lost
    result = cli("evidence", str(directory))
    assert result.returncode == (1 if torn_seen else 0)
    assert f"{after['rounds']} rounds" in result.stdout
    assert result.stdout.count("torn line skipped") == torn_seen


def test_torn_tail_is_reported_and_closed(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    log = EvidenceLog.for_config(config)
    for _ in range(3):
        assert log.append_round(synthetic_round(config))
    path = log.directory / CURRENT  # type: ignore[operator]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])  # a crash tore the last line
    with caplog.at_level(logging.WARNING):
        assert log.append_round(synthetic_round(config))
    summary = summarise(path)
    assert summary["rounds"] == 3 and [t["line"] for t in summary["torn_lines"]] == [3]
    assert "torn" in caplog.text and "incomplete or damaged line skipped" in caplog.text


def test_rotation_never_overwrites_and_retention_prunes(tmp_path: Path) -> None:
    config = load_config(loopback_config(tmp_path / "p.yaml", dc_port=9, evidence=tmp_path / "ev"))
    config = config.model_copy(update={"evidence": config.evidence.model_copy(
        update={"max_file_bytes": 20_000, "retention_days": 1})})
    log = EvidenceLog.for_config(config)
    for _ in range(40):  # ~15 kB a round: a rotation nearly every round, within one second
        assert log.append_round(synthetic_round(config))
    directory = tmp_path / "ev"
    assert len(list(directory.glob("evidence-*.jsonl"))) >= 20
    assert summarise(directory)["rounds"] == 40  # nothing overwritten
    old = time.time() - 2 * 86400
    for path in sorted(directory.glob("evidence-*.jsonl"))[:10]:
        os.utime(path, (old, old))
    assert len(log.prune()) == 10
    assert summarise(directory)["rounds"] == 30


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "reach-hardening", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_disk_full_is_counted_logged_and_probing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tiny_tmpfs(tmp_path / "full") as directory:
        async with ScriptedTCP([("close", None)]) as server:
            path = loopback_config(tmp_path / "probe.yaml", dc_port=server.port, datacenters=40,
                                   evidence=directory, timeout=0.3)
            service = Service(path, load_config(path))
            with caplog.at_level(logging.ERROR):
                for _ in range(30):
                    await service.run_one()
        assert service.rounds == 30  # probing never stopped
        errors = service.evidence.write_errors
        assert errors > 0, "the tmpfs never filled up"
        text = service.metrics.render().decode()
        assert metric(text, "reach_evidence_write_errors_total") == errors
        assert metric(text, "reach_evidence_last_write_successful") == 0
        assert "No space left on device" in caplog.text
        summary = summarise(directory)
        assert summary["torn_lines"] == []  # failed writes were cut back to whole lines
        assert summary["rounds"] == 30 - errors
        assert (directory / CURRENT).read_bytes().endswith(b"\n")
    CASES["faults/disk full writes"] += errors


async def test_log_never_holds_the_vantage_address(tmp_path: Path) -> None:
    """Connections go out from 127.0.0.2 (the config's source_address); the log never says so."""
    peers: list[str] = []
    udp = ScriptedUDP(lambda q: [good_reply(q, "127.0.0.1")])
    async with ScriptedTCP([("close", None)]) as tcp, udp:
        original = tcp._handle

        async def record(reader, writer):  # type: ignore[no-untyped-def]
            peers.append(writer.get_extra_info("peername")[0])
            await original(reader, writer)

        tcp._handle = record  # type: ignore[method-assign]
        await tcp.stop()
        await tcp.start()
        path = loopback_config(
            tmp_path / "probe.yaml", dc_port=tcp.port, evidence=tmp_path / "ev", source="127.0.0.2",
            resolvers=[{"name": "udp", "address": "127.0.0.1", "port": udp.port, "protocol": "udp"}],
            domains=[{"name": "web.telegram.org"}], timeout=0.3)
        service = Service(path, load_config(path))
        for _ in range(3):
            await service.run_one()
    assert peers and set(peers) == {"127.0.0.2"}, peers
    assert udp.queries >= 3
    text = "\n".join(p.read_text() for p in (tmp_path / "ev").iterdir())
    assert "127.0.0.2" not in text
    rounds = list(read_rounds(tmp_path / "ev" / CURRENT))
    assert len(rounds) == 3 and json.dumps(rounds).count("127.0.0.1") > 0
    status = json.dumps([o.to_json() for o in service.latest.observations])  # type: ignore[union-attr]
    assert "127.0.0.2" not in status and "127.0.0.2" not in service.metrics.render().decode()
