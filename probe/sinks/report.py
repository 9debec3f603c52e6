"""A round as the people and scripts who read it want it: JSON, a terminal table, or
line-oriented TSV / JSON Lines for pipes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from probe.model.observation import RoundResult, Verdict, iso
from probe.model.verdicts import BLOCKING_VERDICTS

if TYPE_CHECKING:  # rich draws terminal tables only: the service never loads it
    from rich.console import Console

VERDICT_STYLE = {"ok": "green", "vantage_offline": "yellow", "inconclusive": "yellow"}


def round_json(result: RoundResult) -> dict[str, Any]:
    """The JSON contract of `probe once` and /api/status (docs/engine-contract.md): the
    round's one JSON form, made once and shared (do not change it)."""
    return result.json


def traffic_json(result: RoundResult) -> dict[str, Any]:
    """The round's bytes on the wire, counted at its sockets: in all and per messenger."""
    return result.traffic_json()


def traffic_line(result: RoundResult) -> str:
    """'traffic: 41.2 kB sent, 96.0 kB received (baseline 12.0/30.1 kB, telegram ...)'."""
    t = traffic_json(result)
    parts = [f"{k} {v['sent'] / 1000:.1f}/{v['received'] / 1000:.1f} kB"
             for k, v in t["by_messenger"].items()]
    return (f"traffic: {t['bytes_sent'] / 1000:.1f} kB sent, {t['bytes_received'] / 1000:.1f} kB "
            "received" + (f" ({', '.join(parts)})" if parts else ""))


def blocked(result: RoundResult) -> bool:
    return any(v.verdict in BLOCKING_VERDICTS for v in result.verdicts)


def make_console(file: TextIO | None = None) -> Console:
    """A console for tables: the terminal's width on a terminal; no width limit in a pipe,
    so that `probe once ... | grep RULE` sees every row on one line, whole."""
    from rich.console import Console

    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=UNLIMITED, no_color=True, highlight=False)
    return console


UNLIMITED = 1 << 16


def print_rows(console: Console, header: Sequence[str], rows: Sequence[Sequence[str]],
               identifiers: int) -> None:
    """A table whose first `identifiers` columns are never wrapped or cut (people grep and
    copy them); the rest wrap between words, never inside one (a failure string is an
    identifier too). When even that does not fit the terminal, the table is drawn wider than
    it and the terminal wraps lines rather than anything being cut."""
    from rich.table import Table
    from rich.text import Text

    table = Table(*header, show_lines=False)
    needed = 1 + 3 * len(header)  # borders and padding
    for index, column in enumerate(table.columns):
        cells = [Text.from_markup(row[index]).plain for row in rows]
        if index < identifiers:
            width = max([len(str(column.header)), *(len(cell) for cell in cells)])
            column.no_wrap, column.overflow = True, "ignore"
        else:  # free text wraps between words; a word (a failure string) stays whole
            width = max([len(str(column.header)), *(len(word) for cell in cells for word in cell.split())])
            column.overflow = "fold"
        column.min_width = width
        needed += width
    for row in rows:
        table.add_row(*row)
    if console.width < needed:
        console.width = needed
    console.print(table)


def failures_of(verdict: Verdict) -> list[str]:
    """The distinct `check:failure` strings behind a verdict, the baseline's left out (an
    offline vantage's or a blocked baseline's failures are said once above the table)."""
    return sorted({f"{o.check}:{o.failure}" for o in verdict.evidence
                   if o.failure and o.messenger is not None})


def print_table(result: RoundResult, console: Console) -> None:
    v = result.vantage
    baseline = result.baseline
    console.print(
        f"[bold]{v.name}[/] ({v.role}, {v.country}, AS{v.asn}) round of {result.duration:.1f}s, "
        f"baseline IPv4 {'up' if baseline.ipv4 else 'DOWN'}, IPv6 {'up' if baseline.ipv6 else 'DOWN'}, "
        f"network {result.network.state}",
        soft_wrap=True,
    )
    if not (baseline.ipv4 and baseline.ipv6):
        why = sorted({f"{o.target}: {o.failure}" for o in result.observations
                      if o.messenger is None and o.failure})
        if why:
            console.print("baseline failures: " + "; ".join(why), highlight=False, soft_wrap=True)
    if result.network.international_cut:
        answered = sorted(n for n, ok in result.network.baseline_sites.items() if ok)
        console.print("INTERNATIONAL CUT: the vantage is cut off from abroad (a shutdown with a "
                      f"domestic whitelist): only domestic sites answer ({', '.join(answered)}); "
                      "every international site, control resolver and messenger fails, so no "
                      "messenger is judged", highlight=False, soft_wrap=True)
    if result.network.baseline_blocked:
        console.print("baseline BLOCKED: the vantage is online (" + "; ".join(
            result.network.online_evidence[:2]) + "), so the targets are judged by mechanism",
            highlight=False, soft_wrap=True)
    rows = []
    for verdict in result.verdicts:
        style = VERDICT_STYLE.get(verdict.verdict, "bold red")
        rows.append([verdict.messenger, verdict.target, f"[{style}]{verdict.verdict}[/]",
                     verdict.rule, ", ".join(failures_of(verdict))])
    print_rows(console, ("messenger", "target", "verdict", "rule", "failures"), rows, identifiers=4)
    counts: dict[str, int] = {}
    for verdict in result.verdicts:
        counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
    console.print("  ".join(f"{name}: {n}" for name, n in sorted(counts.items())), soft_wrap=True)
    for answer in result.answers.values():  # can a user here use it? (probe.judge.answer)
        console.print(answer.sentence(v.role), soft_wrap=True, highlight=False)
    console.print(traffic_line(result), soft_wrap=True, highlight=False)


TSV_COLUMNS = ("vantage", "messenger", "target", "verdict", "rule", "failures")


def _cell(value: str) -> str:
    return value.replace("\t", " ").replace("\n", " ")


def write_tsv(result: RoundResult, out: TextIO) -> None:
    """One header line, then one line per target: cut -f and awk read it as it is."""
    out.write("\t".join(TSV_COLUMNS) + "\n")
    for verdict in result.verdicts:
        out.write("\t".join(_cell(x) for x in (
            result.vantage.name, verdict.messenger, verdict.target, verdict.verdict,
            verdict.rule, ",".join(failures_of(verdict)))) + "\n")


def write_jsonl(result: RoundResult, out: TextIO) -> None:
    """One JSON object per target (jq -c 'select(.verdict != "ok")' reads it line by line);
    each names its vantage and round so lines from many probes can be concatenated."""
    vantage, started = result.vantage.name, iso(result.started)
    for verdict in result.verdicts:
        out.write(json.dumps({"vantage": vantage, "started": started, **verdict.to_json(),
                              "failures": failures_of(verdict)}) + "\n")
