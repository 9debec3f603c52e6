"""Render docs/lab-results.md from the last lab run (build/lab-results.json).

Why generated: the table "scenario, expected, observed" is evidence that the classifier
tells censorship from outages; typing it by hand would make it a claim instead.

    python -m tests.lab.report [--input build/lab-results.json] [--output docs/lab-results.md]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from tests.lab.harness import RESULTS_FILE
from tests.lab.topology import ROOT

OUTPUT = ROOT / "docs" / "lab-results.md"


MESSENGERS = ("telegram", "whatsapp", "signal")


def _hosts(names: list[str]) -> dict[str, set[str]]:
    """Host -> the family/port parts of its target names (`e1.whatsapp.net` -> {v4:443, ...})."""
    hosts: dict[str, set[str]] = {}
    for name in names:
        if "/" in name:
            host, _, rest = name.partition("/")
            hosts.setdefault(host, set()).add(rest)
    return hosts


def _qualifier(mine: set[str], every: set[str]) -> str:
    """'' when a host's targets are all there, else which families/ports are ('/v4', ':5222')."""
    if mine == every:
        return ""
    families, ports = ({s.partition(":")[i] for s in group} for group in (mine,) for i in (0, 2))
    all_families, all_ports = ({s.partition(":")[i] for s in every} for i in (0, 2))
    return ("" if families == all_families else "/" + ",".join(sorted(families))) + (
        "" if ports == all_ports else ":" + ",".join(sorted(ports)))


def _endpoints(names: list[str], every: list[str]) -> str:
    """Compress one messenger's target names: all DC targets -> 'all DCs', every target of
    its names -> 'all names', WhatsApp's chat endpoints -> 'chat e1-e16' (or the ones named),
    with the families/ports when only some of a host's targets are meant (':5222').
    `every` is all of the messenger's target names in that round."""
    dcs = sorted({n.split("-")[0] for n in names if n.startswith("dc") and "/" not in n})
    hosts, all_hosts = _hosts(names), _hosts(every)
    parts = []
    if dcs:
        parts.append("all DCs" if len(dcs) == 5 else ", ".join(dcs))
    if hosts and hosts == all_hosts:
        return ", ".join([*parts, "all names"])
    labels = {h: _qualifier(hosts[h], all_hosts[h]) for h in sorted(hosts)}
    chat = sorted((h for h in hosts if re.fullmatch(r"e\d+\.whatsapp\.net", h)),
                  key=lambda h: int(h[1:].split(".")[0]))
    if chat and len(chat) == 16 and len({labels[h] for h in chat}) == 1:
        parts.append("chat e1-e16" + labels[chat[0]])
    else:
        parts += [h.split(".")[0] + labels[h] for h in chat]
    parts += [h + labels[h] for h in sorted(hosts) if h not in chat]
    return ", ".join(parts)


def _targets(names: list[str], messenger_of: dict[str, str]) -> str:
    """Target names per messenger, compressed, with the count."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(messenger_of.get(name, "?"), []).append(name)
    order = [m for m in MESSENGERS if m in groups] + sorted(set(groups) - set(MESSENGERS))
    every = {m: [t for t, o in messenger_of.items() if o == m] for m in order}
    return "; ".join(f"{m}: {_endpoints(groups[m], every[m])}" for m in order) + f" ({len(names)})"


def _observed(vantage: dict[str, Any]) -> str:
    cells = []
    for verdict, names in sorted(vantage["observed"].items(), key=lambda kv: -len(kv[1])):
        rules = ", ".join(vantage["rules"].get(verdict, []))
        fails = ", ".join(vantage["failures"].get(verdict, []))
        detail = f"rule {rules}" + (f"; {fails}" if fails else "")
        messenger_of = {t: v.get("messenger", "?") for t, v in vantage.get("targets", {}).items()}
        cells.append(f"**{verdict}**: {_targets(names, messenger_of)} — {detail}")
    network = vantage.get("network") or {}
    if network.get("baseline_blocked"):
        proof = (network.get("online_evidence") or ["?"])[0]
        cells.append(f"network: online, **baseline blocked** (proof: {proof})")
    elif network and not network.get("online"):
        cells.append("network: **not proven online** (no verified answer from outside)")
    return "<br>".join(cells)


def _match(record: dict[str, Any]) -> str:
    if record["passed"]:
        return "yes"
    return "**no** (known engine gap, xfail)" if record.get("known_gap") else "**no**"


def _census(rows: list[dict[str, Any]]) -> str:
    """Targets per messenger in the first scenario's subject round."""
    if not rows:
        return "none"
    targets = rows[0]["vantages"]["subject"].get("targets", {})
    counts: dict[str, int] = {}
    for info in targets.values():
        counts[info.get("messenger", "?")] = counts.get(info.get("messenger", "?"), 0) + 1
    return ", ".join(f"{m} {n}" for m, n in counts.items()) or "none"


def _per_messenger(rows: list[dict[str, Any]]) -> list[str]:
    """Scenario x messenger: the subject's verdicts and how many targets got each."""
    not_ok = [r["id"] for r in rows if set(r["vantages"]["control"]["observed"]) - {"ok"}]
    out = ["", "## Per messenger (subject vantage)", "",
           "Verdicts of the subject's targets per messenger, with the number of targets "
           "(every endpoint x address family x port). The control vantage has only `ok` "
           f"verdicts except in: {', '.join(not_ok) or 'none'}.", "",
           "| scenario | " + " | ".join(MESSENGERS) + " |", "|---|" + "---|" * len(MESSENGERS)]
    for r in rows:
        counts: dict[str, dict[str, int]] = {m: {} for m in MESSENGERS}
        for info in r["vantages"]["subject"].get("targets", {}).values():
            per = counts.setdefault(info.get("messenger", "?"), {})
            per[info["verdict"]] = per.get(info["verdict"], 0) + 1
        cells = [", ".join(f"{v} {n}" for v, n in sorted(counts[m].items(), key=lambda kv: -kv[1]))
                 or "-" for m in MESSENGERS]
        out.append(f"| {r['id']} | " + " | ".join(cells) + " |")
    return out


def render(data: dict[str, Any]) -> str:
    """The markdown page."""
    rows = data["scenarios"]
    passed = sum(1 for r in rows if r["passed"])
    out = [
        "# Censorship lab: expected vs observed verdicts",
        "",
        "Generated by `python -m tests.lab.report` from `build/lab-results.json`, which the lab",
        "tests (`tests/lab/test_scenarios.py`) write while they run: each row is one real",
        "`probe once` per vantage inside the lab. Do not edit by hand. Scenario definitions",
        "and expectations: `tests/lab/scenarios.py`; topology: [lab.md](lab.md).",
        "",
        f"Run: {data.get('generated', '?')} — {passed}/{len(rows)} scenarios match.",
        "",
        f"Messengers, targets per vantage: {_census(rows)}. Every endpoint, address family",
        "and port is its own target with its own verdict.",
        "",
        "| scenario | what the lab does | vantage | expected | observed (verdict: targets — rule; "
        "failures) | match |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for i, vantage in enumerate(("subject", "control")):
            v = r["vantages"][vantage]
            first = i == 0
            out.append(
                "| "
                + " | ".join(
                    [
                        f"**{r['id']}** {r['title']}" if first else "",
                        r["how"] if first else "",
                        vantage,
                        v["expected"],
                        _observed(v),
                        _match(r) if first else "",
                    ]
                )
                + " |"
            )
    out += _per_messenger(rows)
    out += loss_section(data.get("loss"))
    mismatched = [r for r in rows if not r["passed"]]
    if mismatched:
        out += ["", "## Mismatches", ""]
        for r in mismatched:
            gap = f" — known gap: {r['known_gap']}" if r.get("known_gap") else ""
            out.append(f"- **{r['id']}**{gap}")
            out += [f"  - {m}" for m in r["mismatches"]]
    return "\n".join(out) + "\n"


def loss_section(data: dict[str, Any] | None) -> list[str]:
    """Issue 9's multi-round scenarios (build/lab-loss.json, tests/lab/test_loss.py)."""
    if not data:
        return []
    out = [
        "",
        "## Lossy networks, intermittent and residual censorship (several rounds each)",
        "",
        "From `build/lab-loss.json`, written by `tests/lab/test_loss.py` (L30: by",
        "`tests/lab/test_loss_fleet.py`, whose probes Prometheus scrapes; R60/R180-fet-residual:",
        "by `tests/lab/test_residual_scenarios.py`): one `probe run` per",
        f"vantage per scenario, every round read back from its evidence log. Run: {data['generated']}.",
        "",
        "| scenario | what the lab does | rounds | subject: blocking verdicts per round | "
        "subject: rounds degraded | subject: verdicts | control: blocking verdicts | match |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["scenarios"]:
        s, c = r["subject"], r["control"]
        verdicts = ", ".join(f"{k} {n}" for k, n in sorted(s["verdicts"].items(), key=lambda kv: -kv[1]))
        dc_rounds = sum(n > 0 for n in s["dc_blocking_per_round"])
        blocks = f"{sum(s['blocking_per_round'])} ({' '.join(map(str, s['blocking_per_round']))})"
        if "intermittent" in r["id"]:
            blocks += f"; a DC blocked in {dc_rounds} of {s['rounds']} rounds"
        out.append(f"| **{r['id']}** {r['title']} | {r['how']} | {s['rounds']} | {blocks} | "
                   f"{s['degraded_rounds']} of {s['rounds']} | {verdicts} | "
                   f"{sum(c['blocking_per_round'])} | {'yes' if r['passed'] else '**no**'} |")
    for r in data["scenarios"]:
        if not r["passed"]:
            out += ["", f"- **{r['id']}** mismatches:"] + [f"  - {m}" for m in r["mismatches"][:10]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.report", description=__doc__)
    parser.add_argument("--input", type=Path, default=RESULTS_FILE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.input.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {args.input}: {exc} (run the lab tests first)", file=sys.stderr)
        return 2
    loss_file = args.input.with_name("lab-loss.json")
    if loss_file.exists():
        data["loss"] = json.loads(loss_file.read_text())
    args.output.write_text(render(data))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
