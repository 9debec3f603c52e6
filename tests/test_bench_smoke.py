"""The benchmark in its smoke size: both tools run every check; no timing assertions.

Needs nginx and prometheus-blackbox-exporter (Debian packages nginx-light and
prometheus-blackbox-exporter); skipped without them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probe.inputs.catalog import builtin

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["workload", "N", "tool", "checks", "ok", "wall_s", "checks_per_s", "cpu_s_per_1k",
           "rss_peak_mb", "rss_start_mb"]
N = 48  # a multiple of the 4 MTProto ports, so the dc workload has exactly N targets
# The dc workload runs the built-in catalogue's DC steps (tcp, mtproto, mtproto_plain, ...).
DC_STEPS = len(builtin("telegram").groups["datacenters"].steps)

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))
    or not shutil.which("prometheus-blackbox-exporter"),
    reason="needs nginx and prometheus-blackbox-exporter",
)


def _table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not line.startswith("|-"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows[0], rows[1:]


def test_bench_smoke(tmp_path: Path) -> None:
    offset = random.randrange(100, 2000, 10)  # beside a full benchmark run, if one is going
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--sizes", str(N), "--repeats", "1", "--loops", "asyncio",
         "--port-offset", str(offset), "--max-minutes", "5", "--json", str(tmp_path / "raw.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = _table(proc.stdout, "## Throughput")
    assert header == COLUMNS
    got = {(r[0], r[2]) for r in rows}
    assert got == {("tcp", "reach/asyncio"), ("tcp", "blackbox"), ("dc", "reach/asyncio"),
                   ("tls", "reach/asyncio"), ("tls", "blackbox")}
    for r in rows:
        workload, n, tool, checks, ok = r[:5]
        assert int(n) == N
        expected = DC_STEPS * N + 1 if workload == "dc" else N  # dc: each DC step, + baseline
        assert int(checks) == expected, r
        assert int(ok) == int(checks), f"{tool} did not complete every {workload} check: {r}"
    ratio_header, ratios = _table(proc.stdout, "## Ratios")
    assert ratio_header[:3] == ["workload", "N", "ratio"]
    assert {(r[0], r[2]) for r in ratios} == {("tcp", "reach/asyncio / blackbox"),
                                              ("tls", "reach/asyncio / blackbox")}
    for heading in ("## reach cost growth", "## Timing fidelity", "## DC rounds", "## Targets"):
        assert heading in proc.stdout
    # one handshake per check: nginx accepted exactly the connections the checks account for
    check_header, checks = _table(proc.stdout, "## Self-check")
    assert check_header == ["workload", "N", "tool", "passes", "checks", "expected_accepts",
                            "farm_accepts", "self_check"]
    assert {(r[0], r[2]) for r in checks} == got
    for r in checks:
        assert r[7] == "passed" and r[5] == r[6], r
        if r[0] != "dc":
            assert int(r[6]) >= int(r[4])  # every check was a connection nginx accepted
    header, goals = _table(proc.stdout, "## Side by side")
    assert header == ["measure", "tool", "reach", "blackbox", "ratio", "goal", "met"]
    assert any(g[0].startswith("TLS CPU per check") for g in goals)
