"""The status page (`/` of `probe run`) and the per-target evidence endpoint.

An analyst opening a probe's page must answer "what is blocked, how, and since when" without
scrolling or opening JSON: a summary per messenger in the fleet's status words, blocked rows
first, one colour per mechanism (the palette the boards use, probe/model/verdicts.py), the key
evidence inline (forged answers and their fingerprint, certificate hashes, which step was
reset, k of n attempts), and per target the time its verdict began and a 24 h strip.

The page is one self-contained HTML document: probes run in hostile networks, so it loads
nothing from anywhere (no scripts, fonts, images or CDN; a Content-Security-Policy says so
to the browser), refreshes itself with a meta tag, and works on a phone and in dark mode.

History is kept in memory (runs of equal verdicts per target, so memory grows with changes,
not with rounds) and rebuilt from the evidence log at start. It reads round JSON (what the
evidence log holds and /api/status serves), so a live round and a logged one look the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from probe.model.observation import RoundResult
from probe.model.verdicts import BLOCKING, BLOCKING_VERDICTS, STATUS_COLOURS, VERDICT_COLOURS, VERDICTS

log = logging.getLogger(__name__)

WINDOW = 24 * 3600.0
SLOTS = 48  # cells of the history strip: half an hour each
# Rows drawn at most (the worst first): a 10,000-target probe's page must stay small and quick
# to render on the event loop the checks share; the rest are in /api/status.
MAX_ROWS = 500
# Display order: blocking mechanisms (in the table order of verdicts.py), then what cannot
# be judged, then ok. Also the severity a history cell shows when its half hour saw several.
ORDER: tuple[str, ...] = (*BLOCKING, "inconclusive", "vantage_offline", "ok")
RANK = {name: index for index, name in enumerate(ORDER)}
Key = tuple[str, str]  # (messenger, target)


def _rank(verdict: str) -> int:
    return RANK.get(verdict, len(ORDER))


# ----------------------------------------------------------------------------- history


@dataclass
class Run:
    """Consecutive rounds in which a target had the same verdict."""

    verdict: str
    start: float
    last: float
    rounds: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "from": _iso(self.start), "to": _iso(self.last),
                "rounds": self.rounds}


@dataclass
class History:
    """Per target, the runs of equal verdicts over the last `window` seconds (and always the
    current run, however old: it says since when)."""

    window: float = WINDOW
    runs: dict[Key, list[Run]] = field(default_factory=dict)
    rounds: deque[float] = field(default_factory=deque)  # round start times in the window
    first_round: float | None = None  # the oldest round this history knows
    version: int = 0  # bumped per recorded round: a cache key for the rendered page

    def record(self, started: float, verdicts: Iterable[tuple[str, str, str]]) -> None:
        """One round's (messenger, target, verdict) triples; older rounds than the newest
        recorded one are ignored (the log and the live round may overlap at start)."""
        previous = self.rounds[-1] if self.rounds else None
        if previous is not None and started <= previous:
            return
        for messenger, target, verdict in verdicts:
            runs = self.runs.setdefault((messenger, target), [])
            if runs and runs[-1].verdict == verdict and runs[-1].last == previous:
                runs[-1].last = started
                runs[-1].rounds += 1
            else:
                runs.append(Run(verdict, started, started))
        self.rounds.append(started)
        if self.first_round is None:
            self.first_round = started
        self.version += 1
        self.prune(started)

    def record_json(self, data: Mapping[str, Any]) -> None:
        """A round as JSON (the evidence log's lines)."""
        started = _timestamp(data.get("started"))
        if started is None:
            return
        self.record(started, ((str(v.get("messenger")), str(v.get("target")), str(v.get("verdict")))
                              for v in data.get("verdicts") or [] if isinstance(v, dict)))

    def record_result(self, result: RoundResult) -> None:
        self.record(result.started, ((v.messenger, v.target, v.verdict) for v in result.verdicts))

    def prune(self, now: float) -> None:
        cutoff = now - self.window
        while self.rounds and self.rounds[0] < cutoff:
            self.rounds.popleft()
        for key in list(self.runs):
            runs = self.runs[key]
            if runs[-1].last < cutoff:  # not seen for a whole window: gone from the config
                del self.runs[key]
            elif runs[0].last < cutoff:
                self.runs[key] = [r for r in runs[:-1] if r.last >= cutoff] + [runs[-1]]

    def since(self, key: Key) -> tuple[float, bool] | None:
        """When the current verdict began, and whether that is exact (False: it began at or
        before the first round this history knows)."""
        runs = self.runs.get(key)
        if not runs:
            return None
        start = runs[-1].start
        return start, self.first_round is not None and start > self.first_round

    def slots_ran(self, now: float, slots: int = SLOTS) -> list[bool]:
        """Which slots of the window saw a round (the same for every target of a page)."""
        size = self.window / slots
        begin = now - self.window
        ran = [False] * slots
        for started in self.rounds:
            index = int((started - begin) // size)
            if 0 <= index < slots:
                ran[index] = True
        return ran

    def strip(self, key: Key, now: float, slots: int = SLOTS,
              ran: list[bool] | None = None) -> list[str | None]:
        """The most severe verdict of each slot of the window (oldest first); None where no
        round ran."""
        size = self.window / slots
        begin = now - self.window
        cells: list[str | None] = [None] * slots
        for run in self.runs.get(key, []):
            first = max(0, int((run.start - begin) // size))
            last = min(slots - 1, int((run.last - begin) // size))
            for index in range(first, last + 1):
                current = cells[index]
                if current is None or _rank(run.verdict) < _rank(current):
                    cells[index] = run.verdict
        ran = self.slots_ran(now, slots) if ran is None else ran
        return [cell if ran[index] else None for index, cell in enumerate(cells)]

    def load(self, directory: Path | None, now: float | None = None) -> int:
        """Rebuild from the evidence log's rounds of the last window; return how many."""
        from probe.sinks.evidence import log_files, read_rounds

        if directory is None or not directory.is_dir():
            return 0
        now = time.time() if now is None else now
        cutoff = now - self.window
        rounds: list[tuple[float, dict[str, Any]]] = []
        for path in log_files(directory):
            try:
                if path.stat().st_mtime < cutoff:
                    continue
                for data in read_rounds(path):
                    started = _timestamp(data.get("started"))
                    if started is not None and cutoff <= started <= now:
                        rounds.append((started, data))
            except OSError as exc:
                log.warning("status page: cannot read %s: %s", path, exc)
        for _, data in sorted(rounds, key=lambda item: item[0]):
            self.record_json(data)
        return len(rounds)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


# ----------------------------------------------------------------------------- reading a round


def _network(round_: Mapping[str, Any]) -> dict[str, Any]:
    """The round's `network` (new), or what the old `baseline` implies."""
    network = round_.get("network")
    if isinstance(network, dict):
        return network
    baseline = round_.get("baseline") or {}
    return {"online": bool(baseline.get("ok", True)), "degraded": False}


def _observations(round_: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    return {o["id"]: o for o in round_.get("observations") or [] if isinstance(o, dict) and "id" in o}


def _verdicts(round_: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in round_.get("verdicts") or [] if isinstance(v, dict)]


def _attempts(observation: Mapping[str, Any]) -> tuple[int, int]:
    """(k, n): k of n attempts failed; (0|1, 1) when the step ran once or says nothing."""
    attempts = observation.get("attempts")
    if isinstance(attempts, list) and attempts:
        failed = sum(1 for a in attempts if isinstance(a, dict) and a.get("failure"))
        return failed, len(attempts)
    return (1 if observation.get("failure") else 0), 1


def _where(o: Mapping[str, Any]) -> str:
    address, port = o.get("address"), o.get("port")
    if address is None:
        return str(o.get("details", {}).get("url") or "")
    return f"[{address}]:{port}" if ":" in str(address) and port else (
        f"{address}:{port}" if port else str(address))


def _evidence_line(o: Mapping[str, Any]) -> str:
    """What one observation behind a verdict shows, in the words an analyst looks for."""
    details = o.get("details") or {}
    check, failure, operation = o.get("check"), o.get("failure"), o.get("operation")
    parts: list[str] = []
    if check == "dns":
        resolver = details.get("resolver", "resolver")
        answers = details.get("answers") or []
        late = details.get("late_answers") or []
        fingerprints = details.get("fingerprints") or []
        if answers:
            text = f"DNS {resolver} answered {', '.join(map(str, answers))}"
            if fingerprints:
                text += f" (fingerprint {', '.join(map(str, fingerprints))})"
            elif details.get("bogons"):
                text += " (a private or reserved address)"
            elif details.get("outside_space"):
                text += " (outside the service's address space)"
            parts.append(text)
            if late:
                parts.append(f"then a second reply {', '.join(map(str, late))}")
        elif failure:
            parts.append(f"DNS {resolver}: {failure}")
    else:
        label = {"tcp": "TCP", "tls": "TLS", "mtproto": "MTProto", "http": "HTTP"}.get(str(check), str(check))
        where = _where(o)
        if details.get("sni"):
            where += f" SNI {details['sni']}"
        if failure in ("connection_reset", "eof_error", "connection_refused"):
            step = str(operation or check).replace("_", " ")
            word = {"connection_refused": "refused"}.get(str(failure), "reset")
            parts.append(f"{label} {where}: {word} during {step} ({failure})")
        elif failure:
            parts.append(f"{label} {where}: {failure} at {str(operation or check).replace('_', ' ')}")
        else:
            parts.append(f"{label} {where}: ok")
        if details.get("blockpage"):
            parts.append(f"blockpage {details['blockpage']} (HTTP {details.get('status')})")
        sha = details.get("peer_certificate_sha256")
        if sha and (failure or o.get("role") == "differential"):
            parts.append(f"certificate SHA-256 {sha}")
    failed, total = _attempts(o)
    if total > 1:
        parts.append(f"{failed} of {total} attempts failed")
    return "; ".join(parts)


def key_evidence(verdict: Mapping[str, Any], observations: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """The lines shown under a verdict: its failed observations first, then the ones that
    succeeded where that is the point (the neutral SNI that got through, the control
    resolver's answer). None for an offline vantage: the banner says it once."""
    if verdict.get("verdict") in ("vantage_offline", "ok"):
        return []
    entries = [observations.get(e.get("observation", -1)) for e in verdict.get("evidence") or []
               if isinstance(e, dict)]
    found = [o for o in entries if o is not None]
    found.sort(key=lambda o: o.get("failure") is None)
    return [line for line in (_evidence_line(o) for o in found) if line]


def messenger_status(verdicts: Sequence[str], network: Mapping[str, Any], role: str) -> str:
    """One vantage's status for one messenger, in the fleet's words (FLEET_STATUS)."""
    if network.get("online") is False or (verdicts and all(v == "vantage_offline" for v in verdicts)):
        return "offline"
    if any(v in BLOCKING_VERDICTS for v in verdicts):
        # a control vantage is outside the censor: failures there are the service's own
        return "outage" if role == "control" else "blocked"
    if network.get("degraded"):
        return "degraded"
    if verdicts and all(v in ("ok", "vantage_offline") for v in verdicts) and "ok" in verdicts:
        return "ok"
    return "unknown"


# ----------------------------------------------------------------------------- rendering


def _text_colour(background: str) -> str:
    """Black or white, whichever reads better on `background` (#RRGGBB)."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000" if luminance > 0.45 else "#fff"


def _palette_css() -> str:
    rules = [f".v-{name}{{background:{colour};color:{_text_colour(colour)}}}"
             for name, colour in VERDICT_COLOURS.items()]
    rules += [f".s-{name}{{background:{colour};color:{_text_colour(colour)}}}"
              for name, colour in STATUS_COLOURS.items()]
    rules += [f"tr.r-{name}>td:first-child{{box-shadow:inset 6px 0 {colour}}}"
              for name, colour in VERDICT_COLOURS.items()]
    return "".join(rules)


CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--muted:#5a5a5a;--line:#dcdcdc;--card:#f5f5f5;
--banner:#fff3cd;--none:#e4e4e4}
@media (prefers-color-scheme:dark){:root{--bg:#111;--fg:#e8e8e8;--muted:#a8a8a8;--line:#333;
--card:#1d1d1d;--banner:#3a3000;--none:#2c2c2c}}
*{box-sizing:border-box}
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1rem;
background:var(--bg);color:var(--fg)}
h1{font-size:1.3rem;margin:0 0 .2rem} h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
.meta{color:var(--muted);margin:0 0 .8rem} a{color:inherit}
code,.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
.banner{background:var(--banner);border-left:6px solid #E69F00;padding:.6rem .8rem;margin:.6rem 0;
border-radius:4px}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.6rem .8rem;
flex:1 1 18rem;max-width:40rem}
.card h3{margin:0 0 .4rem;font-size:1rem;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.chip{display:inline-block;border-radius:3px;padding:0 .4rem;font-weight:600;white-space:nowrap;
border:1px solid rgba(127,127,127,.5)}
.counts{display:flex;flex-wrap:wrap;gap:.3rem}
table{border-collapse:collapse;width:100%;margin-top:.4rem}
th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid var(--line)}
th{font-size:.85rem;color:var(--muted);font-weight:600}
td.target{white-space:nowrap}
.ev{margin:0;padding:0;list-style:none;font-size:.88rem;overflow-wrap:anywhere}
.ev li+li{margin-top:.15rem} .reason{color:var(--muted);font-size:.85rem}
.strip{display:flex;height:1.1rem;min-width:9rem;border:1px solid var(--line)}
.strip span{flex:1;min-width:1px} .strip .none{background:var(--none)}
.since{white-space:nowrap;font-size:.88rem} .small{font-size:.8rem;color:var(--muted)}
footer{margin-top:1rem;color:var(--muted);font-size:.85rem}
@media (max-width:720px){
 body{padding:.6rem} thead{display:none} table,tbody{display:block}
 tr{display:flex;flex-wrap:wrap;align-items:center;gap:.25rem .6rem;padding:.45rem 0 .45rem .6rem;
 border-bottom:1px solid var(--line);border-left:6px solid var(--line)}
 td{display:block;border:0;padding:0} tr>td:first-child{box-shadow:none!important}
 td.target{order:1} td.verdict{order:2} td.link{order:3;margin-left:auto}
 td.evidence{order:4;flex-basis:100%} td.evidence.empty{display:none}
 td.when{order:5} td.hist{order:6;flex:1 1 8rem} td.verdict br,td.target br{display:none}
 td.verdict .id,td.target .small{margin-left:.4rem}
}
"""


def _row_border_css() -> str:
    return "".join(f"@media (max-width:720px){{tr.r-{name}{{border-left-color:{colour}}}}}"
                   for name, colour in VERDICT_COLOURS.items())


STYLE = CSS + _palette_css() + _row_border_css()
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def _chip(name: str, prefix: str = "v", text: str | None = None) -> str:
    safe = html.escape(name)
    return (f"<span class='chip {prefix}-{safe}' data-{'verdict' if prefix == 'v' else 'status'}="
            f"'{safe}'>{html.escape(text if text is not None else name)}</span>")


def target_link(messenger: str, target: str) -> str:
    return f"/api/target/{quote(messenger, safe='')}/{quote(target, safe='')}"


def _banners(round_: Mapping[str, Any], network: Mapping[str, Any], verdicts: list[dict[str, Any]],
             reload_error: str | None) -> list[str]:
    out = []
    baseline_failures = sorted({f"{o.get('target')}: {o.get('failure')}"
                                for o in round_.get("observations") or []
                                if isinstance(o, dict) and o.get("messenger") is None and o.get("failure")})
    offline = [v for v in verdicts if v.get("verdict") == "vantage_offline"]
    why = f" Baseline: {'; '.join(baseline_failures)}." if baseline_failures else ""
    if network.get("online") is False or (verdicts and len(offline) == len(verdicts)):
        out.append("<strong>This vantage is offline</strong>: nothing outside answers, so nothing can "
                   f"be said about the services until it is back.{html.escape(why)}")
    elif offline:
        plural = "s" if len(offline) > 1 else ""
        out.append(f"<strong>{len(offline)} target{plural} cannot be judged</strong>: the vantage's own "
                   f"network fails for their address family (vantage_offline).{html.escape(why)}")
    if network.get("baseline_blocked") and network.get("online") is not False:
        out.append("<strong>The baseline sites fail although the vantage is online</strong> (outside "
                   f"answers are proven); the targets are judged anyway.{html.escape(why)}")
    if network.get("degraded"):
        loss, rtt = network.get("loss_ratio"), network.get("rtt_seconds")
        numbers = ", ".join(x for x in (
            f"{loss:.0%} of baseline attempts failed" if isinstance(loss, int | float) else "",
            f"median RTT {rtt * 1000:.0f} ms" if isinstance(rtt, int | float) else "") if x)
        out.append("<strong>This vantage's network is degraded</strong>"
                   f"{f' ({numbers})' if numbers else ''}: loss the baseline shares is not a block.")
    if reload_error:
        out.append(f"<strong>The last config reload was refused</strong>; the running config stays: "
                   f"{html.escape(reload_error)}")
    return out


def render_page(round_: Mapping[str, Any] | None, history: History, *, vantage: Mapping[str, Any],
                now: float, refresh: int = 30, reload_error: str | None = None,
                next_round: str | None = None) -> str:
    """The whole page for the latest round (round JSON as in /api/status) and the history."""
    name = html.escape(str(vantage.get("name", "")))
    head = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<meta name='color-scheme' content='light dark'>"
            f"<meta http-equiv='refresh' content='{int(refresh)}'>"
            f"<link rel='icon' href='data:,'><title>reach: {name}</title>"
            f"<style>{STYLE}</style></head><body>")
    where = (f"{html.escape(str(vantage.get('role', '')))} vantage in "
             f"{html.escape(str(vantage.get('country', '')))}, AS{html.escape(str(vantage.get('asn', '')))}"
             + (f", {html.escape(str(vantage['network']))}" if vantage.get("network") else ""))
    parts = [head, f"<h1>reach probe: {name}</h1>"]
    if round_ is None:
        parts.append(f"<p class='meta'>{where}. The first round is running.</p>")
        parts.extend(f"<div class='banner' role='alert'>{b}</div>"
                     for b in _banners({}, {}, [], reload_error))
        parts.append(_footer(next_round))
        return "".join(parts)
    network = _network(round_)
    verdicts = _verdicts(round_)
    observations = _observations(round_)
    duration = round_.get("duration_seconds")
    parts.append(f"<p class='meta'>{where}. Last round {html.escape(str(round_.get('started', '?')))}"
                 + (f", {duration:.1f} s" if isinstance(duration, int | float) else "") + ".</p>")
    parts.extend(f"<div class='banner' role='alert'>{b}</div>"
                 for b in _banners(round_, network, verdicts, reload_error))
    parts.append(_summary(verdicts, network, str(vantage.get("role", "subject"))))
    parts.append(_table(verdicts, observations, history, now))
    parts.append(_footer(next_round))
    return "".join(parts)


def _summary(verdicts: list[dict[str, Any]], network: Mapping[str, Any], role: str) -> str:
    by_messenger: dict[str, list[str]] = {}
    for v in verdicts:
        by_messenger.setdefault(str(v.get("messenger")), []).append(str(v.get("verdict")))
    cards = []
    for messenger, names in by_messenger.items():
        status = messenger_status(names, network, role)
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        chips = "".join(_chip(n, text=f"{n} {counts[n]}") for n in sorted(counts, key=_rank))
        blocked = sum(counts.get(n, 0) for n in BLOCKING_VERDICTS)
        failing = "failing" if role == "control" else "blocked"  # as messenger_status says
        line = (f"{blocked} of {len(names)} targets {failing}" if blocked
                else f"{counts.get('ok', 0)} of {len(names)} targets ok")
        cards.append(f"<section class='card' data-messenger='{html.escape(messenger)}'>"
                     f"<h3>{html.escape(messenger)} {_chip(status, 's')}"
                     f"<span class='small'>{line}</span></h3><div class='counts'>{chips}</div></section>")
    return f"<h2>Summary</h2><div class='cards' id='summary'>{''.join(cards)}</div>"


def _table(verdicts: list[dict[str, Any]], observations: Mapping[int, Mapping[str, Any]],
           history: History, now: float) -> str:
    ordered = sorted(enumerate(verdicts), key=lambda item: (_rank(str(item[1].get("verdict"))), item[0]))
    rows = []
    ran = history.slots_ran(now)
    slot = history.window / SLOTS
    labels = [_clock(now - history.window + index * slot) for index in range(SLOTS + 1)]
    for _, v in ordered[:MAX_ROWS]:
        messenger, target, verdict = str(v.get("messenger")), str(v.get("target")), str(v.get("verdict"))
        key = (messenger, target)
        lines = key_evidence(v, observations)
        evidence = "".join(f"<li>{html.escape(line)}</li>" for line in lines[:4])
        if len(lines) > 4:
            evidence += f"<li class='small'>and {len(lines) - 4} more in the JSON</li>"
        reason = "" if verdict in ("vantage_offline", "ok") else str(v.get("reason", ""))
        if lines and reason.endswith(")"):  # the classifier's "(check address failure; ...)" tail:
            reason = reason.rpartition(" (")[0] or reason  # the evidence lines above say it better
        reason = html.escape(reason)
        since = history.since(key)
        if since is None:
            since_html = "<span class='small'>no history</span>"
        else:
            start, exact = since
            since_html = (f"<span class='since' data-since='{_iso(start)}'>"
                          f"{'' if exact else 'at least '}since {_clock(start)} "
                          f"<span class='small'>({_age(now - start)})</span></span>")
        cells = "".join(_strip_html(history.strip(key, now, ran=ran), labels))
        rows.append(
            f"<tr class='r-{html.escape(verdict)}' data-verdict='{html.escape(verdict)}'>"
            f"<td class='target'><span class='id'>{html.escape(target)}</span><br>"
            f"<span class='small'>{html.escape(messenger)}</span></td>"
            f"<td class='verdict'>{_chip(verdict)}<br><span class='small id'>"
            f"{html.escape(str(v.get('rule', '')))}</span></td>"
            f"<td class='evidence{'' if evidence or reason else ' empty'}'><ul class='ev'>{evidence}</ul>"
            f"<span class='reason'>{reason}</span></td>"
            f"<td class='when'>{since_html}</td>"
            f"<td class='hist'><div class='strip' aria-label='24 hours of verdicts'>"
            f"{cells}</div></td>"
            f"<td class='link'><a href='{target_link(messenger, target)}'>evidence</a></td></tr>")
    more = (f"<p class='small' id='more'>{len(ordered) - MAX_ROWS} more targets, the least severe, "
            "are not drawn: <a href='/api/status'>status JSON</a> has every one.</p>"
            if len(ordered) > MAX_ROWS else "")
    return ("<h2>Targets</h2><table id='targets'><thead><tr><th>target</th><th>verdict</th>"
            "<th>evidence</th><th>since</th><th>last 24 h</th><th></th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}")


def _strip_html(cells: list[str | None], labels: list[str]) -> Iterable[str]:
    """A history strip: one span per stretch of equal cells, as wide as the stretch (one
    span per half hour would be 48 per row: too much page for a big probe)."""
    index = 0
    while index < len(cells):
        end = index
        while end + 1 < len(cells) and cells[end + 1] == cells[index]:
            end += 1
        cell = html.escape(cells[index] or "")  # names from the evidence log: escaped like all else
        yield (f"<span class='{'v-' + cell if cell else 'none'}' data-slots='{end - index + 1}' "
               f"style='flex-grow:{end - index + 1}' title='{labels[index]} to {labels[end + 1]}: "
               f"{cell or 'no round'}'></span>")
        index = end + 1


def _footer(next_round: str | None) -> str:
    legend = " ".join(_chip(v) for v in VERDICTS)
    return (f"<footer><p>Next round {html.escape(next_round or '?')}. "
            "<a href='/api/status'>status JSON</a> · <a href='/metrics'>metrics</a></p>"
            f"<p class='counts'>{legend}</p></footer></body></html>")


def target_json(round_: Mapping[str, Any] | None, history: History, messenger: str,
                target: str) -> dict[str, Any] | None:
    """Everything about one target: its verdict, every observation of it this round, and
    its history (None when the latest round has no such target)."""
    if round_ is None:
        return None
    verdict = next((v for v in _verdicts(round_)
                    if v.get("messenger") == messenger and v.get("target") == target), None)
    if verdict is None:
        return None
    wanted = {e.get("observation") for e in verdict.get("evidence") or [] if isinstance(e, dict)}
    observations = [o for o in round_.get("observations") or [] if isinstance(o, dict) and (
        o.get("id") in wanted or (o.get("messenger"), o.get("target")) == (messenger, target))]
    since = history.since((messenger, target))
    return {
        "vantage": round_.get("vantage"), "round": round_.get("started"),
        "network": round_.get("network"), "verdict": verdict,
        "key_evidence": key_evidence(verdict, _observations(round_)),
        "observations": observations,
        "since": _iso(since[0]) if since else None, "since_exact": since[1] if since else None,
        "history": [r.to_json() for r in history.runs.get((messenger, target), [])],
    }


# ----------------------------------------------------------------------------- the HTTP side


class StatusPage:
    """The page's state in `probe run`: the history, and the rendered page per round."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.history = History()
        self._cache: tuple[object, str] | None = None
        self._round_json: tuple[object, dict[str, Any]] | None = None
        self._loader: asyncio.Task[None] | None = None
        self._pending: list[RoundResult] | None = None  # live rounds while the log loads
        service.round_listeners.append(self.record)

    def record(self, result: RoundResult) -> None:
        self.history.record_result(result)
        if self._pending is not None:
            self._pending.append(result)

    async def latest_json(self) -> dict[str, Any] | None:
        """The latest round as JSON, made once per round in a thread (a finished round is
        not changed any more; a big one's JSON must not hold up the event loop)."""
        from probe.sinks.report import round_json

        latest = self.service.latest
        if latest is None:
            return None
        if self._round_json is None or self._round_json[0] is not latest:
            self._round_json = (latest, await asyncio.to_thread(round_json, latest))
        return self._round_json[1]

    async def start_loading(self, app: web.Application) -> None:
        """Rebuild the history from the evidence log in the background: a big log takes a
        while to read, and neither the HTTP side nor the first round waits for it."""
        self._pending = []
        self._loader = asyncio.create_task(self._load())

    async def stop_loading(self, app: web.Application) -> None:
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader

    async def loaded(self) -> None:
        """Wait until the history from the evidence log is in (tests, and nothing else)."""
        if self._loader is not None:
            await asyncio.shield(self._loader)

    async def _load(self) -> None:
        directory = self.service.config.evidence.directory
        loaded = History(self.history.window)
        try:
            count = await asyncio.to_thread(loaded.load, directory)
        except Exception:  # the page works without its past: log, never fail the service
            log.exception("status page: cannot load history from %s", directory)
            self._pending = None
            return
        for result in self._pending or []:  # rounds finished while the log was read
            loaded.record_result(result)
        self.history, self._pending = loaded, None
        if count:
            log.info("status page: %d rounds of history from %s", count, directory)

    async def page(self, request: web.Request) -> web.Response:
        service = self.service
        now = time.time()
        key = (id(service.latest), self.history.version, service.last_reload_error, int(now // 60))
        if self._cache is None or self._cache[0] != key:
            v = service.config.vantage
            next_round = getattr(service, "next_round_at", None)
            refresh = int(min(120, max(15, (next_round - now + 3) if next_round else 30)))
            body = render_page(
                await self.latest_json(), self.history, now=now, refresh=refresh,
                vantage={"name": v.name, "country": v.country, "asn": v.asn, "network": v.network,
                         "role": v.role},
                reload_error=service.last_reload_error,
                next_round=_iso(next_round) if next_round else None)
            self._cache = (key, body)
        return web.Response(text=self._cache[1], content_type="text/html",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    async def target(self, request: web.Request) -> web.Response:
        data = target_json(await self.latest_json(), self.history, request.match_info["messenger"],
                           request.match_info["target"])
        if data is None:
            return web.json_response({"error": "no such target in the latest round"}, status=404)
        return web.Response(text=json.dumps(data, indent=1), content_type="application/json")


STATUS_PAGE = web.AppKey("status_page", StatusPage)


def install(app: web.Application, service: Any) -> None:
    """The page at `/`, the evidence per target at /api/target/MESSENGER/TARGET (a target
    name may hold '/' and ':'), and the history loaded from the evidence log at start (in
    the background)."""
    page = app[STATUS_PAGE] = StatusPage(service)
    app.router.add_get("/", page.page)
    app.router.add_get("/api/target/{messenger}/{target:.+}", page.target)
    app.on_startup.append(page.start_loading)
    app.on_cleanup.append(page.stop_loading)
