"""Prometheus metrics, rendered from rounds rather than updated per check.

A round produces thousands of observations at once and /metrics is read far more often
than a round ends, so the exposition text of the round metrics is rendered once per round
and served as bytes. Counters and histograms accumulate across rounds in plain dicts.
prometheus_client's registry adds the process and reload metrics, which change between
rounds. No label carries the vantage's own address.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable
from itertools import accumulate

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from probe.observation import RoundResult
from probe.verdicts import VERDICTS

# Latency from a vantage: LAN-fast to a slow satellite hop; past 10 s is a timeout anyway.
# Each bucket is a line per target and check: at 10,000 targets, about 2 MB of text each.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CHECK_LABELS = ("vantage", "messenger", "target", "check")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Key = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


# The round text is built as bytes from skeletons: one %-format (the numbers) and one
# replace (the series' labels, rendered once per series, at the NUL markers) per series
# instead of fifteen formatted lines. Label values never contain NUL (names are validated);
# a series whose labels do falls back to the line-by-line form.
_BOUNDS = [*(_number(b) for b in BUCKETS), "+Inf"]
HISTOGRAM_SKELETON = "\n".join([
    *(f'reach_check_duration_seconds_bucket{{\0,le="{bound}"}} %d' for bound in _BOUNDS),
    "reach_check_duration_seconds_sum{\0} %s",
    "reach_check_duration_seconds_count{\0} %d",
]).encode()
VERDICT_SKELETONS = {
    verdict: "\n".join(f'reach_verdict{{\0,verdict="{state}"}} {int(state == verdict)}'
                       for state in VERDICTS).encode()
    for verdict in (*VERDICTS, "")
}


def _histogram_lines(labels: bytes, counts: tuple[int, ...], total: bytes) -> bytes:
    if b"\0" not in labels:
        return (HISTOGRAM_SKELETON % (*counts, total, counts[-1])).replace(b"\0", labels)
    lines = [b'reach_check_duration_seconds_bucket{%s,le="%s"} %d' % (labels, bound.encode(), count)
             for bound, count in zip(_BOUNDS, counts, strict=True)]
    lines.append(b"reach_check_duration_seconds_sum{%s} %s" % (labels, total))
    lines.append(b"reach_check_duration_seconds_count{%s} %d" % (labels, counts[-1]))
    return b"\n".join(lines)


def _verdict_lines(labels: bytes, verdict: str) -> bytes:
    skeleton = VERDICT_SKELETONS.get(verdict, VERDICT_SKELETONS[""])
    if b"\0" not in labels:
        return skeleton.replace(b"\0", labels)
    return b"\n".join(line.replace(b"\0", labels) for line in skeleton.split(b"\n"))


class _Histogram:
    __slots__ = ("counts", "labels", "sum")

    def __init__(self, labels: bytes) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.labels = labels  # rendered once: the series' label set never changes

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value


class Metrics:
    """The probe's metrics: round state rendered per round, live state per scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
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
        self._verdict_labels: dict[tuple[str, str, str], bytes] = {}
        self._round_text = b""

    def config_loaded(self, vantage: str, ok: bool) -> None:
        self.reload_ok.labels(vantage).set(1 if ok else 0)
        if ok:
            self.reload_time.labels(vantage).set(time.time())

    def record_round(self, result: RoundResult) -> None:
        """Fold a round into the accumulated metrics and re-render the round text."""
        config = result.config
        vantage = config.vantage.name
        success: dict[Key, int] = {}
        histograms = self._histograms
        failures = self._failures
        for obs in result.observations:
            if not obs.primary or obs.messenger is None:
                continue
            key = (vantage, obs.messenger, obs.target, obs.check)
            failure = obs.failure
            success[key] = 0 if failure else 1
            histogram = histograms.get(key)
            if histogram is None:
                histogram = histograms[key] = _Histogram(_labels(CHECK_LABELS, key).encode())
            histogram.observe(obs.duration_seconds)
            if failure:
                fkey = (*key, failure)
                failures[fkey] = failures.get(fkey, 0) + 1
        self._round_text = self._render(result, success)

    def _render(self, result: RoundResult, success: dict[Key, int]) -> bytes:
        v = result.config.vantage
        vantage = v.name
        head: list[str] = []
        add = head.append

        add("# HELP reach_vantage_info Where this probe measures from (no address of its own).")
        add("# TYPE reach_vantage_info gauge")
        info = _labels(("vantage", "country", "asn", "network", "role"),
                       (vantage, v.country, str(v.asn), v.network, v.role))
        add(f"reach_vantage_info{{{info}}} 1")

        add("# HELP reach_baseline_success Whether the vantage's own network worked in the latest round.")
        add("# TYPE reach_baseline_success gauge")
        add(f'reach_baseline_success{{vantage="{_escape(vantage)}"}} {int(result.baseline.ok)}')

        add("# HELP reach_round_duration_seconds How long the latest round took.")
        add("# TYPE reach_round_duration_seconds gauge")
        add(f'reach_round_duration_seconds{{vantage="{_escape(vantage)}"}} {_number(result.duration)}')
        add("# HELP reach_round_event_loop_lag_seconds The longest event-loop lag in the latest round: "
            "latencies measured in user space may be inflated by up to this much.")
        add("# TYPE reach_round_event_loop_lag_seconds gauge")
        add(f'reach_round_event_loop_lag_seconds{{vantage="{_escape(vantage)}"}} '
            f"{_number(round(result.loop_lag_max, 6))}")
        add("# HELP reach_round_last_timestamp_seconds When the latest round finished (Unix time).")
        add("# TYPE reach_round_last_timestamp_seconds gauge")
        add(f'reach_round_last_timestamp_seconds{{vantage="{_escape(vantage)}"}} {_number(result.finished)}')

        add("# HELP reach_check_success Whether the check succeeded in the latest round.")
        add("# TYPE reach_check_success gauge")
        out = ["\n".join(head).encode()]
        put = out.append
        histograms = self._histograms
        for key, value in success.items():
            put(b"reach_check_success{%s} %d" % (histograms[key].labels, value))

        put(b"# HELP reach_check_duration_seconds How long checks took.")
        put(b"# TYPE reach_check_duration_seconds histogram")
        for histogram in histograms.values():
            put(_histogram_lines(histogram.labels, tuple(accumulate(histogram.counts)),
                                 _number(histogram.sum).encode()))

        put(b"# HELP reach_check_failures_total Failed checks, by failure string.")
        put(b"# TYPE reach_check_failures_total counter")
        failure_labels = self._failure_labels
        for fkey, count in self._failures.items():
            labels = failure_labels.get(fkey)
            if labels is None:
                labels = failure_labels[fkey] = _labels((*CHECK_LABELS, "failure"), fkey).encode()
            put(b"reach_check_failures_total{%s} %d" % (labels, count))

        put(b"# HELP reach_verdict The latest verdict per target (1 for the current one).")
        put(b"# TYPE reach_verdict gauge")
        verdict_labels = self._verdict_labels
        for verdict in result.verdicts:
            vkey = (vantage, verdict.messenger, verdict.target)
            prefix = verdict_labels.get(vkey)
            if prefix is None:
                prefix = verdict_labels[vkey] = _labels(("vantage", "messenger", "target"), vkey).encode()
            put(_verdict_lines(prefix, verdict.verdict))
        put(b"")
        return b"\n".join(out)

    def render(self) -> bytes:
        """The full exposition: live registry metrics, then the latest round's."""
        return generate_latest(self.registry) + self._round_text
