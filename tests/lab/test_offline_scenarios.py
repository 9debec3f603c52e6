"""Issue 14 in the lab: real `probe once` in both vantages, verdicts and the round's
`network` record asserted against tests/lab/scenarios_offline.py.

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_offline_scenarios.py`` (root). Records
go into build/lab-results.json with the other scenarios' (``python -m tests.lab.report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab import plan
from tests.lab.configs import domestic_site
from tests.lab.harness import run_scenario
from tests.lab.scenarios_offline import SCENARIOS, OfflineScenario
from tests.lab.topology import Lab, lab_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]


def network_mismatches(scenario: OfflineScenario, results: dict[str, dict[str, Any]]) -> list[str]:
    """What the vantages' `network` records and the evidence say against the scenario."""
    found = []
    for vantage, expected in scenario.network.items():
        network = results[vantage].get("network") or {}
        for key, value in expected.items():
            if network.get(key) != value:
                found.append(f"{vantage} network.{key}: expected {value}, got {network.get(key)}")
    if scenario.subject_rule:
        found += [f"subject {v['target']}: rule {v['rule']}, expected {scenario.subject_rule}"
                  for v in results[plan.SUBJECT]["verdicts"] if v["rule"] != scenario.subject_rule]
    if scenario.baseline_in_evidence:
        result = results[plan.SUBJECT]
        baseline = {o["id"] for o in result["observations"]
                    if o["messenger"] is None and o["failure"]}
        for verdict in result["verdicts"]:
            if not baseline & {e["observation"] for e in verdict["evidence"]}:
                found.append(f"subject {verdict['target']}: the blocked baseline is not named "
                             "in its evidence")
    return found


def domestic_configs(lab: Lab) -> dict[str, Path]:
    """The standard configs, the subject's with the lab's domestic site in its baseline."""
    configs = {vantage: lab.write_probe_config(vantage) for vantage in (plan.SUBJECT, plan.CONTROL)}
    data = yaml.safe_load(configs[plan.SUBJECT].read_text())
    data["baseline"]["targets"] += domestic_site()
    path = configs[plan.SUBJECT].with_name("subject-domestic.yaml")
    path.write_text(yaml.safe_dump(data))
    return {**configs, plan.SUBJECT: path}


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.id) for s in SCENARIOS])
def test_offline_scenario(lab: Lab, lab_records: list[dict[str, Any]],
                          scenario: OfflineScenario) -> None:
    record, results = run_scenario(lab, scenario, domestic_configs(lab) if scenario.domestic_site
                                   else None)
    record["mismatches"] += network_mismatches(scenario, results)
    record["passed"] = not record["mismatches"]
    lab_records.append(record)
    assert not record["mismatches"], "\n".join(record["mismatches"])
