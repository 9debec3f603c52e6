"""The probe's own byte count against the subject interface's counters.

`probe once` in the subject namespace with the three messengers: what the round's sockets
say it sent and received (the `traffic` of its JSON, reach_bytes_total in `probe run`)
must be what `ip -s link` counted on the subject's uplink, within 10%. The round runs
transfers too (probe once is a full round), so the HTTP bodies count.

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_traffic.py`` (about a minute).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.topology import PROBE_BIN, ROOT, Lab, lab_available, ns_exec, ns_run

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]


def uplink() -> tuple[int, int]:
    out = json.loads(ns_run(plan.SUBJECT, "ip", "-s", "-j", "link", "show", "dev",
                            plan.SUBJECT_LINK.left_if))
    stats = out[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])


def test_socket_count_matches_the_interface(lab: Lab) -> None:
    if not lab.status()["namespaces"]:
        lab.up()
    lab.reset()
    config = probe_config(plan.SUBJECT, lab.workdir, lab.ca_dir / "ca.pem", plan.MESSENGERS)
    path = lab.workdir / "configs" / "traffic.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    before = uplink()
    proc = subprocess.run([*ns_exec(plan.SUBJECT), str(PROBE_BIN), "once", "--config", str(path),
                           "--format", "json"], capture_output=True, text=True, timeout=180)
    after = uplink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    traffic = json.loads(proc.stdout)["traffic"]
    sent, received = after[0] - before[0], after[1] - before[1]
    assert set(traffic["by_messenger"]) == {"telegram", "whatsapp", "signal", "baseline"}
    print(f"sockets {traffic['bytes_sent']}/{traffic['bytes_received']}, interface {sent}/{received}")
    assert abs(traffic["bytes_sent"] - sent) <= 0.1 * sent, (traffic, sent, received)
    assert abs(traffic["bytes_received"] - received) <= 0.1 * received, (traffic, sent, received)


SCREEN_SCRIPT = """
import asyncio, json, sys
from probe.inputs.config import load_config
from probe.inputs.plan import plan
from probe.measure.round import run_round
config = load_config(sys.argv[1])
names = [t.name for p in plan(config) for t in p.targets]
result = asyncio.run(run_round(config, only=set(), sites=set(), transfers=False, screen=names))
print(json.dumps({"targets": len(names), "screened": len(result.screened),
                  "traffic": result.traffic_json(),
                  "steps": sorted({(o.check, o.role) for o in result.observations}),
                  "failed": sorted(o.target for o in result.observations if o.failure)}))
"""


def test_a_screening_costs_a_few_hundred_bytes_a_target(lab: Lab) -> None:
    """probe run's screening (probe.serve.schedule: between full-depth sweeps, each target's
    lookup at the vantage's own resolver and its TCP connect): every target of the three
    messengers screened in one round, counted on the sockets and on the interface."""
    if not lab.status()["namespaces"]:
        lab.up()
    lab.reset()
    config = probe_config(plan.SUBJECT, lab.workdir, lab.ca_dir / "ca.pem", plan.MESSENGERS)
    path = lab.workdir / "configs" / "screen.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    before = uplink()
    proc = subprocess.run([*ns_exec(plan.SUBJECT), sys.executable, "-c", SCREEN_SCRIPT, str(path)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    after = uplink()
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    sent, received = after[0] - before[0], after[1] - before[1]
    traffic = got["traffic"]
    per_target = (sent + received) / got["targets"]
    print(f"screening {got['targets']} targets: sockets {traffic['bytes_sent']}/"
          f"{traffic['bytes_received']}, interface {sent}/{received}, {per_target:.0f} B a target")
    assert got["screened"] == got["targets"] > 100
    # the lookup at the vantage's own resolver (no control) and the connect, nothing else
    assert {tuple(s) for s in got["steps"]} <= {("dns", "primary"), ("tcp", "primary")}
    assert got["failed"] == []  # nothing blocked: every lookup and connect succeeded
    assert per_target <= 1000  # a full-depth measurement costs ~5 kB a target here
    total = traffic["bytes_sent"] + traffic["bytes_received"]
    assert abs(total - (sent + received)) <= 0.1 * (sent + received), (traffic, sent, received)
