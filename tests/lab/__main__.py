"""Developer CLI: ``python -m tests.lab up|down|status|scenario ID|probe``.

Why: to look around in the lab by hand (``ip netns exec subject .venv/bin/probe once
--config /run/reach-lab/configs/subject.yaml``), reproduce a scenario, and clean up.
``up`` leaves the lab running without holding the lock; a test run cleans it away.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tests.lab import plan
from tests.lab.topology import PROBE_BIN, Lab, LabError, LabLock, lab_available

if TYPE_CHECKING:
    from tests.lab.scenarios import Scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build the lab (removes a stale one first)")
    sub.add_parser("down", help="remove every lab namespace and process")
    sub.add_parser("status", help="lab namespaces and their processes")
    sc = sub.add_parser("scenario", help="rebuild the lab and apply one scenario's rules")
    sc.add_argument("id", help="scenario id, e.g. 08a-sni-reset (list: scenario list)")
    sub.add_parser("probe", help="run probe once in both vantages, print the verdicts")
    rn = sub.add_parser("run", help="build the lab, run scenarios, tear down (no pytest)")
    rn.add_argument("ids", nargs="*", help="scenario ids (default: all)")
    rn.add_argument("--raw", help="directory to save each scenario's probe JSON")
    args = parser.parse_args(argv)

    reason = lab_available()
    if reason and args.command != "status":
        print(f"error: {reason}", file=sys.stderr)
        return 2
    lab = Lab()
    try:
        if args.command == "up":
            with LabLock():
                lab.up()
                # the servers must outlive this command: forget them without stopping
                lab.processes.clear()
            for vantage in (plan.SUBJECT, plan.CONTROL):
                config = lab.write_probe_config(vantage)
                print(f"ip netns exec {plan.netns(vantage)} {PROBE_BIN} once --config {config}")
            return 0
        if args.command == "down":
            with LabLock():
                lab.down()
            return 0
        if args.command == "status":
            print(json.dumps(lab.status(), indent=1))
            return 0
        from tests.lab.scenarios import apply_scenario

        if args.command == "scenario":
            if args.id == "list":
                for s in _all_scenarios():
                    print(f"{s.id:28} {s.title}")
                return 0
            scenario = next((s for s in _all_scenarios() if s.id == args.id), None)
            if scenario is None:
                print(f"error: no scenario {args.id!r}; try: scenario list", file=sys.stderr)
                return 2
            with LabLock():
                # a fresh lab per scenario: the servers of an earlier `up` are not ours
                lab.down()
                lab.up()
                apply_scenario(lab, scenario)
                lab.processes.clear()
            print(f"applied {scenario.id}: {scenario.title}")
            return 0
        if args.command == "run":
            return _run(args.ids, args.raw)
        if args.command == "probe":
            results = lab.run_probes()
            for vantage, result in results.items():
                for v in result["verdicts"]:
                    print(f"{vantage:8} {v['target']:24} {v['verdict']:18} {v['rule']}")
            return 0
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(ids: list[str], raw: str | None) -> int:
    """Run scenarios outside pytest; print one line per scenario and every mismatch."""
    from pathlib import Path

    from tests.lab.harness import run_scenario, save_results
    from tests.lab.topology import running_lab

    chosen = [s for s in _all_scenarios() if not ids or s.id in ids]
    records = []
    with running_lab() as lab:
        for scenario in chosen:
            record, results = run_scenario(lab, scenario)
            records.append(record)
            if raw:
                Path(raw).mkdir(parents=True, exist_ok=True)
                (Path(raw) / f"{scenario.id}.json").write_text(json.dumps(results, indent=1))
            mark = "PASS" if record["passed"] else "FAIL"
            print(f"{mark} {scenario.id} ({record['duration_seconds']} s)", flush=True)
            for line in record["mismatches"]:
                print(f"     {line}", flush=True)
    print(f"results: {save_results(records)}")
    return 0 if all(r["passed"] for r in records) else 1


def _all_scenarios() -> tuple[Scenario, ...]:
    """The censor/outage table and issue 14's offline-vantage table (the network-record
    expectations of the latter are asserted by its pytest module only)."""
    from tests.lab.scenarios import SCENARIOS
    from tests.lab.scenarios_offline import SCENARIOS as OFFLINE

    return (*SCENARIOS, *OFFLINE)


if __name__ == "__main__":
    sys.exit(main())
