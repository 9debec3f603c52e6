"""Evidence a hostile network cannot make unbounded: per-observation lists are capped (the
dns check, test_fuzz_dns.py), the directory is capped by size as well as age, the page's
history is rebuilt by streaming, and files are opened as the probe's own."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from probe.inputs.config import Config, load_config
from probe.model.observation import Observation, RoundDraft, RoundResult
from probe.sinks.evidence import CURRENT, EvidenceLog
from probe.sinks.statuspage.history import History
from tests.hardening.util import PROBE, ROOT, free_port, http_get, loopback_config, wait_listening

MiB = 1 << 20


def hostile_line(started: float, answers: int = 3600, observations: int = 17) -> bytes:
    """A round as the pre-cap probe wrote it behind the review's resolver: 17 replies of
    thousands of addresses each, about 2.8 MB of JSON."""
    addresses = [f"10.{i % 250}.{i // 250 % 250}.{i % 7}" for i in range(answers)]
    stamp = datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds")
    observations_json = [{
        "id": i, "messenger": "telegram", "target": "web.telegram.org/v4", "check": "dns",
        "operation": "resolve", "failure": None, "started": stamp,
        "details": {"answers": addresses, "late_answers": [addresses] * 2, "bogons": addresses},
    } for i in range(observations)]
    return (json.dumps({
        "vantage": {"name": "hardening", "country": "ZZ", "asn": 64500, "network": None, "role": None},
        "started": stamp, "finished": stamp, "observations": observations_json,
        "verdicts": [{"messenger": "telegram", "target": f"dc{t}", "verdict": "ok", "rule": "r",
                      "reason": "", "evidence": []} for t in range(3)],
    }, separators=(",", ":")) + "\n").encode()


def hostile_directory(directory: Path, rounds: int = 61, per_file: int = 10) -> int:
    """`rounds` rounds of the last hours in rotated files and the current one; its size."""
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time()
    written = 0
    for start in range(0, rounds, per_file):
        count = min(per_file, rounds - start)
        last = start + count >= rounds
        path = directory / (CURRENT if last else f"evidence-x-{start:04d}.jsonl")
        with path.open("wb") as handle:
            for index in range(start, start + count):
                line = hostile_line(now - (rounds - index) * 60)
                handle.write(line)
                written += len(line)
    return written


def test_history_load_keeps_only_what_the_page_needs(tmp_path: Path) -> None:
    size = hostile_directory(tmp_path / "ev", rounds=6, per_file=3)
    assert size > 6 * 2 * MiB
    history = History()
    assert history.load(tmp_path / "ev") == 6
    assert sorted(history.runs) == [("telegram", "dc0"), ("telegram", "dc1"), ("telegram", "dc2")]
    assert all(run.rounds == 6 and run.verdict == "ok" for runs in history.runs.values() for run in runs)


def test_evidence_directory_is_capped_by_size(tmp_path: Path, config: Config) -> None:
    directory = tmp_path / "ev"
    evidence = EvidenceLog.for_config(config.model_copy(update={"evidence": config.evidence.model_copy(
        update={"directory": directory, "max_file_bytes": 40_000, "max_directory_bytes": 200_000})}))
    result = padded_round(config, 20_000)
    for _ in range(60):  # 1.2 MB of rounds into a 200 KB directory
        assert evidence.append_round(result)
    total = sum(p.stat().st_size for p in directory.iterdir())
    assert total <= 200_000, total
    assert (directory / CURRENT).exists() and len(list(directory.glob("evidence-*.jsonl"))) >= 3


def padded_round(config: Config, pad: int) -> RoundResult:
    now = time.time()
    result = RoundDraft(config.vantage.identity(), [], now, now + 1)
    result.observations.append(Observation("telegram", "dc0", "tcp", "connect", None, "198.18.64.1",
                                           443, now, 0.01, {"pad": "x" * pad}, id=0))
    return result.judged([])


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(loopback_config(tmp_path / "probe.yaml", dc_port=9, evidence=tmp_path / "ev"))


def test_symlink_as_evidence_file_is_refused(tmp_path: Path, config: Config) -> None:
    directory = tmp_path / "ev"
    directory.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (directory / CURRENT).symlink_to(victim)
    evidence = EvidenceLog.for_config(config)
    assert not evidence.append_round(padded_round(config, 10))
    assert evidence.write_errors == 1 and victim.read_text() == "keep\n"


def test_new_directories_are_0750_whatever_the_umask(tmp_path: Path, config: Config) -> None:
    directory = tmp_path / "a" / "b" / "ev"
    evidence = EvidenceLog.for_config(config.model_copy(update={"evidence": config.evidence.model_copy(
        update={"directory": directory})}))
    old = os.umask(0)
    try:
        assert evidence.append_round(padded_round(config, 10))
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", directory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o750, path
    assert stat.S_IMODE((directory / CURRENT).stat().st_mode) == 0o640


def _limited(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


AS_LIMIT = 768 * MiB  # address space, not RSS: Python, its threads' stacks and arenas included


@pytest.fixture
def running_under_limit(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, int]]:
    evidence = tmp_path / "ev"
    size = hostile_directory(evidence)
    config = loopback_config(tmp_path / "probe.yaml", dc_port=9, evidence=evidence, interval=30)
    log = tmp_path / "probe.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*PROBE, "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=lambda: _limited(AS_LIMIT),
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"})
        try:
            yield process, port, log, size
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def test_start_with_a_hostile_evidence_directory_under_a_memory_limit(
        running_under_limit: tuple[subprocess.Popen[bytes], int, Path, int]) -> None:
    """The review's directory (61 rounds of 2.8 MB: 173 MB) under a memory limit: before,
    the history took 855 MB at start and compose's 512 MiB limit killed the probe on every
    restart. Now it starts, loads the history, answers, and its peak RSS stays small."""
    process, port, log, size = running_under_limit
    assert size > 150 * MiB
    wait_listening(process, port, "probe run")
    deadline = time.monotonic() + 120
    while b"rounds of history" not in log.read_bytes():
        assert process.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    loaded = re.search(rb"(\d+) rounds of history", log.read_bytes())
    assert loaded and int(loaded[1]) >= 61  # and the probe's own first round, if it came first
    status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200, body
    status, page = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "dc0" in page
    peak = int(next(line.split()[1] for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))) * 1024
    print(f"hostile evidence {size / MiB:.0f} MiB: peak RSS {peak / MiB:.0f} MiB "
          f"under RLIMIT_AS {AS_LIMIT / MiB:.0f} MiB")
    assert peak < 200 * MiB, peak / MiB
