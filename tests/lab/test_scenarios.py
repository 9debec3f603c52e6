"""Every lab scenario: real `probe once` in both vantages, verdicts and failure strings
asserted against tests/lab/scenarios.py (the one expectation table).

Run: ``sudo .venv/bin/pytest -m lab tests/lab`` (root: namespaces, iptables, tc). The run
records observed verdicts in build/lab-results.json; ``python -m tests.lab.report``
renders docs/lab-results.md from it.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.lab import plan
from tests.lab.harness import run_scenario
from tests.lab.scenarios import SCENARIOS, Scenario
from tests.lab.topology import Lab, lab_available, root_mgmt_links

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]

#: Scenarios whose mismatch is a known classifier/engine gap (scenario id -> reason).
#: Marked xfail(strict=True): when the engine is fixed the test fails until this is removed.
KNOWN_GAPS: dict[str, str] = {}


def _param(s: Scenario) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[s.id])] if s.id in KNOWN_GAPS else []
    return pytest.param(s, id=s.id, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_scenario(lab: Lab, lab_records: list[dict[str, Any]], scenario: Scenario) -> None:
    record, results = run_scenario(lab, scenario)
    record["known_gap"] = KNOWN_GAPS.get(scenario.id)
    lab_records.append(record)
    for vantage in (plan.SUBJECT, plan.CONTROL):
        assert results[vantage]["vantage"]["role"] == vantage
        assert results[vantage]["verdicts"], f"{vantage}: no verdicts"
        for verdict in results[vantage]["verdicts"]:
            assert verdict["rule"] and "evidence" in verdict, verdict
    assert not record["mismatches"], "\n".join(record["mismatches"])


def test_teardown_leaves_nothing(lab: Lab) -> None:
    """Runs last (conftest moves it there): tear the lab down and check no namespace, lab
    process or management veth (root-namespace end of the fleet e2e test's out-of-band
    links) is left.

    (The session fixture tears down again; down() is idempotent.)"""
    pids = [p.pid for p in lab.processes.values()]
    lab.down()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in names.split() if n in plan.NETNS], names
    assert not root_mgmt_links(), f"management veths left: {root_mgmt_links()}"
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"tests.support" in f.read():
                    alive.append(pid)
        except OSError:
            pass
    assert not alive, f"lab processes left: {alive}"
