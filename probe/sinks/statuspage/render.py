"""The status page's HTML and the per-target evidence JSON, from round JSON and the history.

An analyst opening a probe's page must answer "what is blocked, how, and since when" without
scrolling or opening JSON: a summary per messenger in the fleet's status words, blocked rows
first, one colour per mechanism (the palette the boards use, probe/model/verdicts.py), the key
evidence inline (forged answers and their fingerprint, certificate hashes, which step was
reset, k of n attempts), and per target the time its verdict began and a 24 h strip.

The page is one self-contained HTML document: probes run in hostile networks, so it loads
nothing from anywhere (no scripts, fonts, images or CDN; a Content-Security-Policy says so
to the browser), refreshes itself with a meta tag, and works on a phone and in dark mode.
Its fixed style is style.css next to this module; the verdict colours are added from
verdicts.py so the page and the boards cannot drift apart.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from probe.judge import answer, circumvention
from probe.measure.checks import spec_of
from probe.model.verdicts import (
    BLOCKING_VERDICTS,
    STATUS_COLOURS,
    VANTAGE_STATE_COLOURS,
    VERDICT_COLOURS,
    VERDICTS,
)
from probe.sinks.statuspage.history import SLOTS, History, iso, rank

# Rows drawn at most (the worst first): a 10,000-target probe's page must stay small and quick
# to render on the event loop the checks share; the rest are in /api/status.
MAX_ROWS = 500


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
        spec = spec_of(str(check))
        label = spec.label if spec is not None else str(check)
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
    if network.get("online") is not False and network.get("international_cut"):
        return "international_cut"  # a shutdown: nothing abroad answers, no messenger is judged
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
    rules += [f".n-{name}{{background:{colour};color:{_text_colour(colour)}}}"
              for name, colour in VANTAGE_STATE_COLOURS.items()]
    rules += [f"tr.r-{name}>td:first-child{{box-shadow:inset 6px 0 {colour}}}"
              for name, colour in VERDICT_COLOURS.items()]
    rules += [f".answer.a-{name}{{border-left-color:{colour}}}"
              for name, colour in answer.ANSWER_COLOURS.items()]
    rules += [f".p-{name}{{background:{colour};color:{_text_colour(colour)}}}"
              for name, colour in answer.PATH_COLOURS.items()]
    return "".join(rules)


CSS = files("probe.sinks.statuspage").joinpath("style.css").read_text(encoding="utf-8")


def _row_border_css() -> str:
    return "".join(f"@media (max-width:720px){{tr.r-{name}{{border-left-color:{colour}}}}}"
                   for name, colour in VERDICT_COLOURS.items())


STYLE = CSS + _palette_css() + _row_border_css()
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def _chip(name: str, prefix: str = "v", text: str | None = None) -> str:
    safe = html.escape(name)
    kind = {"v": "verdict", "n": "vantage-state"}.get(prefix, "status")
    return (f"<span class='chip {prefix}-{safe}' data-{kind}="
            f"'{safe}'>{html.escape(text if text is not None else name)}</span>")


def target_link(messenger: str, target: str) -> str:
    return f"/api/target/{quote(messenger, safe='')}/{quote(target, safe='')}"


def _banners(round_: Mapping[str, Any], network: Mapping[str, Any], verdicts: list[dict[str, Any]],
             reload_error: str | None, stale: Sequence[str] = ()) -> list[str]:
    out = []
    baseline_failures = sorted({f"{o.get('target')}: {o.get('failure')}"
                                for o in round_.get("observations") or []
                                if isinstance(o, dict) and o.get("messenger") is None and o.get("failure")})
    offline = [v for v in verdicts if v.get("verdict") == "vantage_offline"]
    why = f" Baseline: {'; '.join(baseline_failures)}." if baseline_failures else ""
    if network.get("online") is not False and network.get("international_cut"):
        sites = network.get("baseline_sites") or {}
        answered = ", ".join(sorted(str(n) for n, ok in sites.items() if ok)) or "none"
        failed = ", ".join(sorted(str(n) for n, ok in sites.items() if not ok)) or "none"
        out.append("<strong>This vantage is cut off from abroad (international cut)</strong>: only "
                   f"domestic sites answer ({html.escape(answered)}); every international site "
                   f"({html.escape(failed)}), control resolver and messenger fails. A shutdown "
                   "with a domestic whitelist, not a messenger block: no messenger is judged "
                   "until it ends.")
    elif network.get("online") is False or (verdicts and len(offline) == len(verdicts)):
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
    shed = (round_.get("budget") or {}).get("shedding") or []
    if shed:
        out.append("<strong>Work is being shed to stay within the traffic budget</strong> ("
                   f"{html.escape(', '.join(str(w).replace('_', ' ') for w in shed))}): changes are "
                   "seen later than the schedule says until the budget recovers.")
    if reload_error:
        out.append(f"<strong>The last config reload was refused</strong>; the running config stays: "
                   f"{html.escape(reload_error)}")
    out.extend(f"<strong>Stale knowledge</strong>: {html.escape(line)}. A verdict on what changed "
               "upstream since may be wrong." for line in stale)
    return out


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def budget_line(round_: Mapping[str, Any]) -> str:
    """'Traffic today: 12.3 MB of 30.0 MB (41%); this round 8 kB.' (or unlimited)."""
    budget = round_.get("budget")
    if not isinstance(budget, Mapping):
        return ""
    used = float(budget.get("used_today") or 0)
    allowed = budget.get("bytes_per_day")
    traffic = round_.get("traffic") or {}
    this = float(traffic.get("bytes_sent", 0)) + float(traffic.get("bytes_received", 0))
    of = (f" of {_size(float(allowed))} ({used / float(allowed):.0%})"
          if isinstance(allowed, int | float) and allowed else " (budget unlimited)")
    pace = ""
    sentinel, sweep = budget.get("sentinel_seconds"), budget.get("sweep_seconds")
    screen = budget.get("screen_seconds")
    if isinstance(sentinel, int | float) and isinstance(sweep, int | float):
        every = (f" every endpoint screened (lookup and connect) every {_duration(screen)} and"
                 f" measured in full every {_duration(sweep)}" if isinstance(screen, int | float)
                 else f" every endpoint once every {_duration(sweep)}")
        screened = budget.get("sentinel_screened") or []
        every_screen = budget.get("sentinel_screen_seconds")
        between = (f" ({', '.join(str(m) for m in screened)}: one screened, a lookup and a"
                   f" connect, every {_duration(every_screen)} in between)"
                   if screened and isinstance(every_screen, int | float) else "")
        pace = (f" At this budget: a sentinel of each messenger at least every {_duration(sentinel)}"
                f"{between},{every}.")
    return f"Traffic today (UTC): {_size(used)}{of}; this round {_size(this)}.{pace}"


def _duration(seconds: float) -> str:
    """90 -> '90 s', 1500 -> '25 min', 7200 -> '2.0 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_page(round_: Mapping[str, Any] | None, history: History, *, vantage: Mapping[str, Any],
                now: float, refresh: int = 30, reload_error: str | None = None,
                next_round: str | None = None, stale: Sequence[str] = ()) -> str:
    """The whole page for the latest round (round JSON as in /api/status) and the history;
    `stale`: warnings about the probe's knowledge (a catalogue past review, an anchor near
    expiry), shown as banners."""
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
                     for b in _banners({}, {}, [], reload_error, stale))
        parts.append(_footer(next_round))
        return "".join(parts)
    network = _network(round_)
    verdicts = _verdicts(round_)
    observations = _observations(round_)
    duration = round_.get("duration_seconds")
    state = network.get("state")
    chip = (f" Network: {_chip(str(state), 'n')}" if state in VANTAGE_STATE_COLOURS else "")
    parts.append(f"<p class='meta'>{where}. Last round {html.escape(str(round_.get('started', '?')))}"
                 + (f", {duration:.1f} s" if isinstance(duration, int | float) else "") + "."
                 + chip + "</p>")
    parts.extend(f"<div class='banner' role='alert'>{b}</div>"
                 for b in _banners(round_, network, verdicts, reload_error, stale))
    traffic = budget_line(round_)
    if traffic:
        parts.append(f"<p class='meta'>{html.escape(traffic)}</p>")
    answers = round_.get("answers")
    parts.append(_summary(verdicts, network, str(vantage.get("role", "subject")),
                          answers if isinstance(answers, Mapping) else {}))
    parts.append(_table(verdicts, observations, history, now))
    parts.append(_footer(next_round))
    return "".join(parts)


def _paths_html(entry: Mapping[str, Any]) -> str:
    """A chip per path in its state's colour, its targets' counts in the tooltip."""
    chips = []
    paths = entry.get("paths")
    for path, evidence in (paths.items() if isinstance(paths, Mapping) else ()):
        if not isinstance(evidence, Mapping) or evidence.get("state") not in answer.PATH_STATES:
            continue
        state = str(evidence["state"])
        counts = ", ".join(f"{evidence.get(k, 0)} {k.replace('_', ' ')}" for k in
                           ("ok", "blocked", "inconclusive", "vantage_offline") if evidence.get(k))
        title = f"{path}: {state.replace('_', ' ')} ({evidence.get('targets', 0)} targets: {counts})"
        chips.append(f"<span class='chip path p-{state}' data-path='{html.escape(str(path))}' "
                     f"data-state='{state}' title='{html.escape(title)}'>"
                     f"{html.escape(str(path))}</span>")
    return (f"<div class='paths'><span class='small'>paths:</span>{''.join(chips)}</div>"
            if chips else "")


def _answer_html(entry: Any) -> str:
    """The card's first line: can a user here use it? (probe.judge.answer)."""
    if not isinstance(entry, Mapping):
        return ""
    word, blocked, sentence = answer.from_json(entry)
    if not sentence:
        return ""
    return (f"<p class='answer a-{word}' data-answer='{word}' "
            f"data-blocked-paths='{html.escape(' '.join(blocked))}'>{html.escape(sentence)}</p>"
            + _paths_html(entry))


def _summary(verdicts: list[dict[str, Any]], network: Mapping[str, Any], role: str,
             answers: Mapping[str, Any] | None = None) -> str:
    by_messenger: dict[str, list[str]] = {}
    for v in verdicts:
        names_of = by_messenger.setdefault(str(v.get("messenger")), [])
        if not v.get("circumvention"):  # a detour's verdict is not the service's status
            names_of.append(str(v.get("verdict")))
    detours = circumvention.by_messenger(
        ((str(v.get("messenger")), str(v.get("circumvention") or ""), str(v.get("verdict")))
         for v in verdicts), by_messenger)
    cards = []
    for messenger, names in by_messenger.items():
        status = messenger_status(names, network, role)
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        chips = "".join(_chip(n, text=f"{n} {counts[n]}") for n in sorted(counts, key=rank))
        blocked = sum(counts.get(n, 0) for n in BLOCKING_VERDICTS)
        failing = "failing" if role == "control" else "blocked"  # as messenger_status says
        line = (f"{blocked} of {len(names)} targets {failing}" if blocked
                else f"{counts.get('ok', 0)} of {len(names)} targets ok")
        cards.append(f"<section class='card' data-messenger='{html.escape(messenger)}'>"
                     f"<h3>{html.escape(messenger)} {_chip(status, 's')}"
                     f"<span class='small'>{line}</span></h3>"
                     f"{_answer_html((answers or {}).get(messenger))}<div class='counts'>{chips}</div>"
                     f"<p class='small circumvention' data-circumvention='{detours[messenger]}'>"
                     f"circumvention works: {detours[messenger]}</p></section>")
    return f"<h2>Summary</h2><div class='cards' id='summary'>{''.join(cards)}</div>"


def _table(verdicts: list[dict[str, Any]], observations: Mapping[int, Mapping[str, Any]],
           history: History, now: float) -> str:
    ordered = sorted(enumerate(verdicts), key=lambda item: (rank(str(item[1].get("verdict"))), item[0]))
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
            since_html = (f"<span class='since' data-since='{iso(start)}'>"
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
        "since": iso(since[0]) if since else None, "since_exact": since[1] if since else None,
        "history": [r.to_json() for r in history.runs.get((messenger, target), [])],
    }

