"""Run one scenario in the lab and compare what the probes said with the table.

Why separate from the pytest file: the same comparison serves the tests, the developer
CLI (``python -m tests.lab run``) and the results file the docs table is rendered from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.lab import plan
from tests.lab.scenarios import Scenario, apply_scenario
from tests.lab.topology import ROOT, Lab, results_lock

RESULTS_FILE = ROOT / "build" / "lab-results.json"
VANTAGES = (plan.SUBJECT, plan.CONTROL)


def evidence_failures(verdict: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Failure strings behind a verdict: its evidence entries (and their observations)."""
    by_id = {o["id"]: o for o in result.get("observations", [])}
    found: list[str] = []
    for item in verdict.get("evidence", []):
        failure = item.get("failure")
        if failure is None and item.get("observation") in by_id:
            failure = by_id[item["observation"]].get("failure")
        if failure and failure not in found:
            found.append(failure)
    return found


def compare(scenario: Scenario, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Observed vs expected for both vantages; ``mismatches`` lists every discrepancy."""
    record: dict[str, Any] = {
        "id": scenario.id,
        "title": scenario.title,
        "how": scenario.how,
        "vantages": {},
        "mismatches": [],
    }
    for vantage in VANTAGES:
        result = results[vantage]
        observed: dict[str, list[str]] = {}
        rules: dict[str, list[str]] = {}
        failures: dict[str, list[str]] = {}
        targets: dict[str, dict[str, Any]] = {}
        for v in result["verdicts"]:
            target, verdict = v["target"], v["verdict"]
            observed.setdefault(verdict, []).append(target)
            if v["rule"] not in rules.setdefault(verdict, []):
                rules[verdict].append(v["rule"])
            fails = evidence_failures(v, result)
            for f in fails:
                if f not in failures.setdefault(verdict, []):
                    failures[verdict].append(f)
            expected = scenario.expected(vantage, target)
            targets[target] = {"verdict": verdict, "rule": v["rule"], "failures": fails,
                               "expected": expected, "messenger": v["messenger"]}  # fmt: skip
            if verdict != expected:
                record["mismatches"].append(
                    f"{vantage} {target}: expected {expected}, got {verdict} "
                    f"(rule {v['rule']}; {v.get('reason', '')})"
                )
            elif expected != "ok":
                missing = [f for f in scenario.expected_failures(target) if f not in fails]
                if missing:
                    record["mismatches"].append(
                        f"{vantage} {target}: verdict {verdict} but failure(s) {missing} not in "
                        f"its evidence {fails}"
                    )
            if verdict in scenario.forbidden:
                record["mismatches"].append(f"{vantage} {target}: forbidden verdict {verdict}")
        if not result["verdicts"]:
            record["mismatches"].append(f"{vantage}: no verdicts at all")
        record["vantages"][vantage] = {
            "expected": scenario.describe(vantage),
            "observed": observed,
            "rules": rules,
            "failures": failures,
            "targets": targets,
            "baseline": result.get("baseline"),
            "network": result.get("network"),
            "duration_seconds": result.get("duration_seconds"),
        }
    record["passed"] = not record["mismatches"]
    return record


def run_scenario(lab: Lab, scenario: Scenario,
                 configs: dict[str, Path] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reset, break, probe both vantages; return (record, raw probe JSON per vantage).
    `configs`: a probe config per vantage instead of the standard ones."""
    started = time.monotonic()
    lab.reset()
    apply_scenario(lab, scenario)
    results = lab.run_probes(configs=configs)
    record = compare(scenario, results)
    record["duration_seconds"] = round(time.monotonic() - started, 2)
    return record, results


def save_results(records: list[dict[str, Any]], path: Path = RESULTS_FILE) -> Path:
    """Write the run's records (the input of ``python -m tests.lab.report``), merged by
    scenario id with those already in the file: lab instances running side by side each
    add theirs (a record of the same scenario is replaced in its place)."""
    with results_lock(path):
        try:
            kept = json.loads(path.read_text())["scenarios"]
        except (OSError, ValueError, KeyError, TypeError):
            kept = []
        new = {r["id"]: r for r in records}
        merged = [new.pop(r["id"], r) for r in kept if isinstance(r, dict) and "id" in r]
        merged += list(new.values())
        data = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenarios": merged}
        path.write_text(json.dumps(data, indent=1))
    return path
