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

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from probe.observation import VERDICTS
from probe.round import RoundResult

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
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


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

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
        for obs in result.observations:
            if obs.aux or obs.messenger is None:
                continue
            key = (vantage, obs.messenger, obs.target, obs.check)
            success[key] = 0 if obs.failure else 1
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = _Histogram()
            histogram.observe(obs.duration_seconds)
            if obs.failure:
                fkey = (*key, obs.failure)
                self._failures[fkey] = self._failures.get(fkey, 0) + 1
        self._round_text = self._render(result, success).encode()

    def _render(self, result: RoundResult, success: dict[Key, int]) -> str:
        v = result.config.vantage
        vantage = v.name
        out: list[str] = []
        add = out.append

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
        add("# HELP reach_round_last_timestamp_seconds When the latest round finished (Unix time).")
        add("# TYPE reach_round_last_timestamp_seconds gauge")
        add(f'reach_round_last_timestamp_seconds{{vantage="{_escape(vantage)}"}} {_number(result.finished)}')

        add("# HELP reach_check_success Whether the check succeeded in the latest round.")
        add("# TYPE reach_check_success gauge")
        for key, value in success.items():
            add(f"reach_check_success{{{_labels(CHECK_LABELS, key)}}} {value}")

        add("# HELP reach_check_duration_seconds How long checks took.")
        add("# TYPE reach_check_duration_seconds histogram")
        bounds = [*(_number(b) for b in BUCKETS), "+Inf"]
        for key, histogram in self._histograms.items():
            labels = _labels(CHECK_LABELS, key)
            cumulative = 0
            for bound, count in zip(bounds, histogram.counts, strict=True):
                cumulative += count
                add(f'reach_check_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative}')
            add(f"reach_check_duration_seconds_sum{{{labels}}} {_number(histogram.sum)}")
            add(f"reach_check_duration_seconds_count{{{labels}}} {cumulative}")

        add("# HELP reach_check_failures_total Failed checks, by failure string.")
        add("# TYPE reach_check_failures_total counter")
        for fkey, count in self._failures.items():
            add(f"reach_check_failures_total{{{_labels((*CHECK_LABELS, 'failure'), fkey)}}} {count}")

        add("# HELP reach_verdict The latest verdict per target (1 for the current one).")
        add("# TYPE reach_verdict gauge")
        for verdict in result.verdicts:
            prefix = _labels(("vantage", "messenger", "target"), (vantage, verdict.messenger, verdict.target))
            for state in VERDICTS:
                add(f'reach_verdict{{{prefix},verdict="{state}"}} {int(state == verdict.verdict)}')
        add("")
        return "\n".join(out)

    def render(self) -> bytes:
        """The full exposition: live registry metrics, then the latest round's."""
        return generate_latest(self.registry) + self._round_text
