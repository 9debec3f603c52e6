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

from probe.model.verdicts import BLOCKING_VERDICTS
from tests.lab import plan
from tests.lab.configs import domestic_site
from tests.lab.harness import run_scenario
from tests.lab.scenarios_offline import DROP_ALL_FORWARDED, SCENARIOS, OfflineScenario
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


#: Rounds of `probe run` in the shutdown: its first round is full, the later ones sentinels
#: and sweep slices (probe.serve.schedule), so the cut must be named in every tier.
SHUTDOWN_ROUNDS = 5


def test_shutdown_over_rounds(lab: Lab) -> None:
    """19h over several rounds of `probe run` in both vantages (issue 19 §6): every subject
    round's state is international_cut, no round of either vantage has a blocking verdict,
    and the control stays online. Recorded in build/lab-loss.json with the multi-round
    scenarios."""
    from tests.lab.scenarios_loss import LossScenario, Rounds, judge, run_rounds, save

    def configure(vantage: str, data: dict[str, Any]) -> None:
        if vantage == plan.SUBJECT:
            data["baseline"]["targets"] += domestic_site()

    def states(vantage: str, want: str) -> Any:
        def check(r: Rounds) -> list[str]:
            rounds = r.subject if vantage == plan.SUBJECT else r.control
            return [f"{vantage} round {i}: state {x['network'].get('state')}, expected {want}"
                    for i, x in enumerate(rounds) if x["network"].get("state") != want]
        return check

    def cut_verdicts(r: Rounds) -> list[str]:
        return [f"subject round {i} {v['target']}: {v['verdict']} ({v['rule']})"
                for i, vs in enumerate(Rounds.verdicts(r.subject)) for v in vs
                if (v["verdict"], v["rule"]) != ("vantage_offline", "international_cut")]

    def no_blocks(r: Rounds) -> list[str]:
        return [f"{name} round {i} {v['target']}: {v['verdict']}"
                for name, rounds in (("subject", r.subject), ("control", r.control))
                for i, vs in enumerate(Rounds.verdicts(rounds)) for v in vs
                if v["verdict"] in BLOCKING_VERDICTS]

    scenario = LossScenario(
        "19h-shutdown-rounds", "Shutdown with a domestic whitelist, several rounds",
        "19h-shutdown-domestic-whitelist under `probe run` (1 s interval): the first round "
        "full, then sentinels and sweep slices",
        SHUTDOWN_ROUNDS, DROP_ALL_FORWARDED,
        (states(plan.SUBJECT, "international_cut"), states(plan.CONTROL, "online"),
         cut_verdicts, no_blocks))
    lab.reset()
    lab.censor(scenario.censor)
    record, rounds = judge(scenario, run_rounds(lab, SHUTDOWN_ROUNDS, 1.0, configure=configure))
    save([record])
    assert len(rounds.subject) == len(rounds.control) == SHUTDOWN_ROUNDS
    assert not record["mismatches"], "\n".join(record["mismatches"][:20])
