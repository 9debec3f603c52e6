"""Prometheus metrics, rendered from rounds rather than updated per check.

A round produces thousands of observations at once and /metrics is read far more often
than a round ends, so the exposition text of the round metrics is rendered once per round
and served as bytes. The latency histograms and failure counters accumulate across rounds
in plain dicts. prometheus_client's registry adds the process, build and reload metrics,
which change between rounds. No label carries the vantage's own address.

Series budget: a fleet of a thousand vantages with three messengers
each must fit one store, so what is exported per target is only what alerts and boards
select by target: the current verdict (one series: the state set reduced to its true
member), and per primary check its success and last-round duration (gauges, as blackbox's
probe_success / probe_duration_seconds). At most four primary checks per target give at most
9 series per target. Distributions (latency histogram) and failure counts are per
vantage x messenger x check; per-target detail stays in /api/status and the evidence log.
"""

from __future__ import annotations

import bisect
import math
import platform
import time
from collections.abc import Iterable, Mapping
from itertools import accumulate
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from probe import __version__
from probe.judge import circumvention
from probe.model.observation import RoundResult, VantageNetwork

# Latency from a vantage: LAN-fast to a slow satellite hop; past 2.5 s a check is slow
# whatever the exact figure (+Inf and _sum still hold it).
# One histogram per vantage x messenger x check: 11 series each.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CHECK_LABELS = ("vantage", "messenger", "target", "check")
AGGREGATE_LABELS = ("vantage", "messenger", "check")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Key = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


_BOUNDS = [*(_number(b) for b in BUCKETS), "+Inf"]


def _histogram_lines(labels: bytes, counts: Iterable[int], total: float) -> bytes:
    cumulative = list(accumulate(counts))
    lines = [b'reach_check_latency_seconds_bucket{%s,le="%s"} %d' % (labels, bound.encode(), count)
             for bound, count in zip(_BOUNDS, cumulative, strict=True)]
    lines.append(b"reach_check_latency_seconds_sum{%s} %s" % (labels, _number(total).encode()))
    lines.append(b"reach_check_latency_seconds_count{%s} %d" % (labels, cumulative[-1]))
    return b"\n".join(lines)


class _Histogram:
    __slots__ = ("counts", "labels", "sum")

    def __init__(self, labels: bytes) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.labels = labels  # rendered once: the series' label set never changes

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value


def circumvention_lines(vantage: str, result: RoundResult) -> str:
    """The apps' detours (probe.judge.circumvention): per messenger, whether one works
    (yes/no/untested: only the current answer is exported), and each detour target's verdict."""
    detours = [v for v in result.verdicts if v.circumvention]
    messengers = sorted({v.messenger for v in result.verdicts})
    answers = circumvention.by_messenger(
        ((v.messenger, v.circumvention, v.verdict) for v in result.verdicts), messengers)
    lines = ["# HELP reach_circumvention Whether the apps' way around a block works: the current "
             "answer (yes, no, untested) only, as reach_verdict.",
             "# TYPE reach_circumvention gauge"]
    for messenger, current in answers.items():
        labels = _labels(("vantage", "messenger", "answer"), (vantage, messenger, current))
        lines.append(f"reach_circumvention{{{labels}}} 1")
    lines += ["# HELP reach_circumvention_verdict The latest verdict of each circumvention target "
              "(domain fronting, a WhatsApp proxy); kept out of reach_verdict.",
              "# TYPE reach_circumvention_verdict gauge"]
    for v in detours:
        labels = _labels(("vantage", "messenger", "target", "path", "verdict"),
                         (vantage, v.messenger, v.target, v.circumvention, v.verdict))
        lines.append(f"reach_circumvention_verdict{{{labels}}} 1")
    return "\n".join(lines)


def answer_lines(vantage: str, result: RoundResult) -> str:
    """Can a user here use each messenger? (probe.judge.answer): per messenger the current
    answer only, and per path its state (a few series per vantage: one per messenger and
    one per messenger x path the catalogue has)."""
    answers = result.answers
    lines = ["# HELP reach_messenger_answer Can a user at this vantage use the messenger: the "
             "current answer (usable, partly_blocked, blocked, unknown) only, from the verdicts "
             "per path.",
             "# TYPE reach_messenger_answer gauge"]
    for messenger, current in answers.items():
        labels = _labels(("vantage", "messenger", "answer"), (vantage, messenger, current.answer))
        lines.append(f"reach_messenger_answer{{{labels}}} 1")
    lines += ["# HELP reach_messenger_path The current state of each path a user takes "
              "(chat, media, registration, web, calls): ok, partly_blocked, blocked or unknown.",
              "# TYPE reach_messenger_path gauge"]
    for messenger, current in answers.items():
        for path, state in current.states.items():
            labels = _labels(("vantage", "messenger", "path", "state"), (vantage, messenger, path, state))
            lines.append(f"reach_messenger_path{{{labels}}} 1")
    return "\n".join(lines)


def network_lines(vantage: str, network: VantageNetwork) -> list[str]:
    """The per-vantage network gauges from the round's `network` record: online, baseline
    blocked, degraded, cut off from abroad, its state in one word, loss, RTT and each
    baseline site."""
    v = f'vantage="{_escape(vantage)}"'
    lines: list[str] = []

    def gauge(name: str, help_: str, value: float | None, labels: str = v) -> None:
        if value is None:
            return
        lines.extend((f"# HELP {name} {help_}", f"# TYPE {name} gauge",
                      f"{name}{{{labels}}} {_number(float(value))}"))

    def flag(name: str) -> int:
        return int(bool(getattr(network, name)))

    gauge("reach_vantage_online", "Whether this round proved the vantage reaches the outside world "
          "(a verified handshake or authenticated answer from outside).", flag("online"))
    gauge("reach_baseline_blocked", "Whether the baseline failed although the vantage is online "
          "(a censor blocks the baseline sites).", flag("baseline_blocked"))
    gauge("reach_vantage_degraded", "Whether the vantage's own network is lossy or slow this round.",
          flag("degraded"))
    gauge("reach_vantage_international_cut", "Whether the vantage is cut off from abroad: only "
          "domestic sites answer, every international site, control resolver and messenger "
          "fails (a shutdown with a domestic whitelist; no messenger is called blocked).",
          flag("international_cut"))
    gauge("reach_vantage_state", "The vantage's network state this round, the current one only "
          "(offline, international_cut, baseline_blocked, degraded, online).", 1,
          f'{v},state="{network.state}"')
    gauge("reach_vantage_loss_ratio", "Share of the baseline's attempts that failed this round.",
          network.loss_ratio)
    gauge("reach_vantage_rtt_seconds", "Median kernel RTT of the baseline's connects this round.",
          network.rtt_seconds)
    sites = network.baseline_sites
    if sites:
        name = "reach_baseline_site_success"
        lines.append(f"# HELP {name} Whether each baseline site answered in the latest round.")
        lines.append(f"# TYPE {name} gauge")
        for site, ok in sorted(sites.items()):
            lines.append(f'{name}{{{v},site="{_escape(str(site))}"}} {int(bool(ok))}')
    return lines


def trust_anchor_lines(vantage: str, files: Mapping[str, Path]) -> str:
    """When each certificate of the trust anchors expires: one series per certificate (two
    for the shipped anchors; a bare key, WhatsApp's Noise root, has no validity and none).
    The fleet's TrustAnchorExpiring ticket fires 90 days before an anchor's last one."""
    from probe.inputs.freshness import anchors
    from probe.inputs.schema import ConfigError

    try:
        found = anchors(dict(files))
    except ConfigError:
        return ""  # an unreadable anchor file fails the config check, not the metrics
    lines = ["# HELP reach_trust_anchor_expiry_timestamp_seconds When a certificate of a trust "
             "anchor expires (its notAfter), read at config load.",
             "# TYPE reach_trust_anchor_expiry_timestamp_seconds gauge"]
    for a in found:
        labels = _labels(("vantage", "anchor", "sha256"), (vantage, a.name, a.sha256[:16]))
        lines.append(f"reach_trust_anchor_expiry_timestamp_seconds{{{labels}}} "
                     f"{_number(a.not_after.timestamp())}")
    return "\n".join(lines) + "\n" if found else ""


class Metrics:
    """The probe's metrics: round state rendered per round, live state per scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        Info("reach_build", "The probe's version and Python (for fleet upgrades and bug reports).",
             registry=self.registry).info({"version": __version__,
                                           "python": platform.python_version()})
        self.reload_ok = Gauge("reach_config_last_reload_successful",
                               "Whether the last config (re)load succeeded.", ["vantage"],
                               registry=self.registry)
        self.reload_time = Gauge("reach_config_last_reload_success_timestamp_seconds",
                                 "When the config was last loaded successfully.", ["vantage"],
                                 registry=self.registry)
        self.overruns = Counter("reach_round_overruns", "Rounds that took longer than the interval.",
                                ["vantage"], registry=self.registry)
        self._histograms: dict[Key, _Histogram] = {}
        self._failures: dict[Key, int] = {}
        self._failure_labels: dict[Key, bytes] = {}
        self._check_labels: dict[Key, bytes] = {}
        self._verdict_labels: dict[tuple[str, str, str], bytes] = {}
        self._round_text: bytes | bytearray = b""
        self._bytes: dict[tuple[str, str, str], int] = {}  # (vantage, messenger, direction)
        self._checks: dict[Key, tuple[int, float]] = {}  # kept between the rounds measuring them
        self._budget_text = b""
        self._anchor_text = b""

    def config_loaded(self, vantage: str, ok: bool, anchor_files: Mapping[str, Path] | None = None) -> None:
        """A config (re)load; with the loaded config's trust anchor files
        (probe.inputs.freshness.config_anchor_files), their validity is read once here."""
        self.reload_ok.labels(vantage).set(1 if ok else 0)
        if ok:
            self.reload_time.labels(vantage).set(time.time())
        if ok and anchor_files is not None:
            self._anchor_text = trust_anchor_lines(vantage, anchor_files).encode()

    def record_round(self, result: RoundResult) -> None:
        """Fold a round into the accumulated metrics and re-render the round text."""
        vantage = result.vantage.name
        # (success, duration) per target and check; a repeated step keeps its last result.
        # A target measured in an earlier round keeps its last figures (a round measures
        # part of the plan: probe.serve.schedule); one no longer planned is dropped.
        planned = {t.name for t in result.targets}
        checks = {k: v for k, v in self._checks.items() if k[0] == vantage and k[2] in planned}
        histograms = self._histograms
        failures = self._failures
        for obs in result.observations:
            messenger = obs.messenger
            # differentials and controls support a verdict; they are not the service's checks
            if messenger is None or not obs.primary:
                continue
            check = obs.check
            failure = obs.failure
            duration = obs.duration_seconds
            checks[(vantage, messenger, obs.target, check)] = (0 if failure else 1, duration)
            if obs.started < result.started:
                continue  # carried with a verdict from an earlier round: counted then
            akey = (vantage, messenger, check)
            histogram = histograms.get(akey)
            if histogram is None:
                histogram = histograms[akey] = _Histogram(_labels(AGGREGATE_LABELS, akey).encode())
            histogram.observe(duration)
            if failure:
                fkey = (*akey, failure)
                failures[fkey] = failures.get(fkey, 0) + 1
        for label, pair in result.traffic.items():
            for direction, value in zip(("sent", "received"), pair, strict=True):
                bkey = (vantage, label, direction)
                self._bytes[bkey] = self._bytes.get(bkey, 0) + int(value)
        self._checks = checks
        self._round_text = b""  # the last round's text goes before this one's is made
        self._round_text = self._render(result, checks)

    def record_budget(self, vantage: str, budget: Mapping[str, Any]) -> None:
        """The traffic budget's state (probe.serve.schedule): the daily allowance, today's
        use, and which kinds of work are being shed."""
        v = f'vantage="{_escape(vantage)}"'
        lines = []
        if budget.get("bytes_per_day") is not None:
            lines += ["# HELP reach_budget_bytes_per_day The traffic budget: bytes a day on the wire.",
                      "# TYPE reach_budget_bytes_per_day gauge",
                      f"reach_budget_bytes_per_day{{{v}}} {int(budget['bytes_per_day'])}"]
        lines += ["# HELP reach_budget_used_today_bytes Bytes on the wire since midnight (UTC).",
                  "# TYPE reach_budget_used_today_bytes gauge",
                  f"reach_budget_used_today_bytes{{{v}}} {int(budget.get('used_today', 0))}",
                  "# HELP reach_budget_shedding Whether this kind of work is being shed to stay "
                  "within the traffic budget (shed in the order transfers, sweeps, full_rounds, "
                  "sentinels).",
                  "# TYPE reach_budget_shedding gauge"]
        shed = set(budget.get("shedding", []))
        for work in ("transfers", "sweeps", "full_rounds", "sentinels"):
            lines.append(f'reach_budget_shedding{{{v},work="{work}"}} {int(work in shed)}')
        periods = {w: budget.get(f"{w}_seconds") for w in ("sentinel", "sweep", "screen")}
        if any(p is not None for p in periods.values()):
            lines += ["# HELP reach_budget_period_seconds The pace the traffic budget buys: a "
                      "sentinel round every sentinels seconds, every target once per sweeps "
                      "seconds at full depth and, between, screened (lookup and connect) "
                      "once per screens seconds (learnt from the rounds' byte counts).",
                      "# TYPE reach_budget_period_seconds gauge"]
            for work, seconds in periods.items():
                if seconds is not None:
                    lines.append(f'reach_budget_period_seconds{{{v},work="{work}s"}} {float(seconds)}')
        self._budget_text = ("\n".join(lines) + "\n").encode()

    def _render(self, result: RoundResult, checks: dict[Key, tuple[int, float]]) -> bytearray:
        v = result.vantage
        vantage = v.name
        vl = f'vantage="{_escape(vantage)}"'
        head: list[str] = []
        add = head.append

        add("# HELP reach_vantage_info Where this probe measures from (no address of its own).")
        add("# TYPE reach_vantage_info gauge")
        info = _labels(("vantage", "country", "asn", "network", "role"),
                       (vantage, v.country, str(v.asn), v.network, v.role))
        add(f"reach_vantage_info{{{info}}} 1")

        add("# HELP reach_baseline_success Whether some baseline site answered in the latest round.")
        add("# TYPE reach_baseline_success gauge")
        add(f"reach_baseline_success{{{vl}}} {int(result.baseline.ok)}")
        head += network_lines(vantage, result.network)

        add("# HELP reach_round_duration_seconds How long the latest round took.")
        add("# TYPE reach_round_duration_seconds gauge")
        add(f"reach_round_duration_seconds{{{vl}}} {_number(result.duration)}")
        add("# HELP reach_round_event_loop_lag_seconds The longest event-loop lag in the latest round: "
            "latencies measured in user space may be inflated by up to this much.")
        add("# TYPE reach_round_event_loop_lag_seconds gauge")
        add(f"reach_round_event_loop_lag_seconds{{{vl}}} {_number(round(result.loop_lag_max, 6))}")
        add("# HELP reach_round_last_timestamp_seconds When the latest round finished (Unix time).")
        add("# TYPE reach_round_last_timestamp_seconds gauge")
        add(f"reach_round_last_timestamp_seconds{{{vl}}} {_number(result.finished)}")

        # Label sets are rendered once and kept while the target stays in the plan.
        old_labels = self._check_labels
        labels: dict[Key, bytes] = {}
        for key in checks:
            rendered = old_labels.get(key)
            labels[key] = rendered if rendered is not None else _labels(CHECK_LABELS, key).encode()
        self._check_labels = labels

        add("# HELP reach_check_success Whether the check succeeded in the latest round.")
        add("# TYPE reach_check_success gauge")
        # One growing buffer, not a list of 50,000 pieces joined at the end: the pieces and
        # the joined text were alive at once (~10 MB at 10,000 targets).
        out = bytearray("\n".join(head).encode())
        extend = out.extend

        def put(piece: bytes) -> None:
            extend(b"\n")
            extend(piece)
        for key, (success, _duration) in checks.items():
            put(b"reach_check_success{%s} %d" % (labels[key], success))
        put(b"# HELP reach_check_duration_seconds How long the check took in the latest round.")
        put(b"# TYPE reach_check_duration_seconds gauge")
        for key, (_success, duration) in checks.items():
            put(b"reach_check_duration_seconds{%s} %s" % (labels[key], _number(round(duration, 6)).encode()))

        put(b"# HELP reach_check_latency_seconds How long checks took, per vantage, messenger and check.")
        put(b"# TYPE reach_check_latency_seconds histogram")
        for histogram in self._histograms.values():
            put(_histogram_lines(histogram.labels, histogram.counts, histogram.sum))

        put(b"# HELP reach_check_failures_total Failed checks, by failure string.")
        put(b"# TYPE reach_check_failures_total counter")
        failure_labels = self._failure_labels
        for fkey, count in self._failures.items():
            flabels = failure_labels.get(fkey)
            if flabels is None:
                flabels = failure_labels[fkey] = _labels((*AGGREGATE_LABELS, "failure"), fkey).encode()
            put(b"reach_check_failures_total{%s} %d" % (flabels, count))

        put(b"# HELP reach_bytes_total Bytes on the wire of the probe's checks, counted at their "
            b"sockets (frames as the interface counts them), per messenger (baseline: the "
            b"baseline's) and direction.")
        put(b"# TYPE reach_bytes_total counter")
        for (bv, bm, bd), value in sorted(self._bytes.items()):
            put(b"reach_bytes_total{%s} %d" % (
                _labels(("vantage", "messenger", "direction"), (bv, bm, bd)).encode(), value))

        put(b"# HELP reach_verdict The latest verdict per target: only the current one is exported.")
        put(b"# TYPE reach_verdict gauge")
        verdict_labels = self._verdict_labels
        for verdict in result.verdicts:
            if verdict.circumvention:
                continue  # a detour's verdict is not the service's (reach_circumvention_verdict)
            vkey = (vantage, verdict.messenger, verdict.target)
            prefix = verdict_labels.get(vkey)
            if prefix is None:
                prefix = verdict_labels[vkey] = _labels(("vantage", "messenger", "target"), vkey).encode()
            put(b'reach_verdict{%s,verdict="%s"} 1' % (prefix, _escape(verdict.verdict).encode()))
        put(circumvention_lines(vantage, result).encode())
        put(answer_lines(vantage, result).encode())
        put(b"")
        return out

    def render(self) -> bytes:
        """The full exposition: live registry metrics, then the latest round's."""
        return b"".join((generate_latest(self.registry), self._round_text, self._budget_text,
                         self._anchor_text))
