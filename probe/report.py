"""A round as the people and scripts who read it want it: JSON, or a terminal table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from probe.observation import RoundResult, iso
from probe.verdicts import BLOCKING_VERDICTS

VERDICT_STYLE = {"ok": "green", "vantage_offline": "yellow", "inconclusive": "yellow"}


def round_json(result: RoundResult) -> dict[str, Any]:
    """The JSON contract of `probe once` and /api/status (DESIGN.md)."""
    v = result.config.vantage
    return {
        "vantage": {"name": v.name, "country": v.country, "asn": v.asn, "network": v.network,
                    "role": v.role},
        "started": iso(result.started),
        "finished": iso(result.finished),
        "duration_seconds": round(result.duration, 3),
        "event_loop_lag_max_seconds": round(result.loop_lag_max, 6),
        "baseline": result.baseline.to_json(),
        "observations": [o.to_json() for o in result.observations],
        "verdicts": [verdict.to_json() for verdict in result.verdicts],
    }


def blocked(result: RoundResult) -> bool:
    return any(v.verdict in BLOCKING_VERDICTS for v in result.verdicts)


def print_table(result: RoundResult, console: Console) -> None:
    v = result.config.vantage
    baseline = result.baseline
    console.print(
        f"[bold]{v.name}[/] ({v.role}, {v.country}, AS{v.asn}) round of {result.duration:.1f}s, "
        f"baseline IPv4 {'up' if baseline.ipv4 else 'DOWN'}, IPv6 {'up' if baseline.ipv6 else 'DOWN'}"
    )
    if not (baseline.ipv4 and baseline.ipv6):
        why = sorted({f"{o.target}: {o.failure}" for o in result.observations
                      if o.messenger is None and o.failure})
        if why:
            console.print("baseline failures: " + "; ".join(why), highlight=False)
    table = Table(show_lines=False)
    for column in ("messenger", "target", "verdict"):
        table.add_column(column, no_wrap=True)  # names are what people grep for: never cut
    table.add_column("rule", overflow="fold")
    table.add_column("failures", overflow="fold")
    for verdict in result.verdicts:
        # an offline vantage's evidence is the baseline, said once above the table
        failed = [] if verdict.verdict == "vantage_offline" else sorted(
            {f"{o.check}:{o.failure}" for o in verdict.evidence if o.failure})
        style = VERDICT_STYLE.get(verdict.verdict, "bold red")
        table.add_row(verdict.messenger, verdict.target, f"[{style}]{verdict.verdict}[/]",
                      verdict.rule, ", ".join(failed))
    console.print(table)
    counts: dict[str, int] = {}
    for verdict in result.verdicts:
        counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
    console.print("  ".join(f"{name}: {n}" for name, n in sorted(counts.items())))
