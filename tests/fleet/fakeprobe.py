"""A synthetic probe exposition that follows the metrics contract in shared/DESIGN.md.

The fleet tests need realistic /metrics before (and independently of) the engine: the
rules, boards and alerts are about the contract, not about one implementation. A
``FakeProbe`` renders what a probe at one vantage would export after N rounds, with the
checks and failure strings that each verdict implies; counters and histograms grow with
every round so that rate() and histogram_quantile() have something to work on.
The lab tests swap this for real probes; the helpers in promstack.py do not care which.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from probe.judge import answer

# Telegram-like targets: DCs speak MTProto over TCP, the web front is DNS + TLS + HTTP.
TARGETS: dict[str, tuple[str, ...]] = {
    "dc1-v4:443": ("tcp", "mtproto"),
    "dc2-v4b:443": ("tcp", "mtproto"),
    "dc1-v6:80": ("tcp", "mtproto"),
    "web.telegram.org/v4": ("dns", "tcp", "tls", "http"),
    "web.telegram.org/v6": ("dns", "tcp", "tls", "http"),
}

# Which check fails, with which failure string, for each verdict (OONI vocabulary).
FAILING_CHECK: dict[str, tuple[str, str]] = {
    "dns_injection": ("dns", "dns_bogon_error"),
    "dns_blocking": ("dns", "dns_nxdomain_error"),
    "ip_blocking": ("tcp", "generic_timeout_error"),
    "tcp_reset": ("tcp", "connection_reset"),
    "sni_filtering": ("tls", "connection_reset"),
    "tls_interception": ("tls", "ssl_unknown_authority"),
    "protocol_filtering": ("mtproto", "generic_timeout_error"),
    "http_blockpage": ("http", "http_unexpected_status"),
    "throttling": ("http", "generic_timeout_error"),
    "inconclusive": ("tcp", "unknown_failure"),
}

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def three_messengers() -> dict[str, dict[str, tuple[str, ...]]]:
    """A vantage's worth of targets for telegram, whatsapp and signal (the scale run).

    Shaped like the built-in catalogues of the series budget (tests/fleet/test_series_budget.py):
    32 + 72 + 12 targets.
    """
    web = ("dns", "tcp", "tls", "http")
    telegram = {f"dc{i}-v{f}:{p}": ("tcp", "mtproto") for i in range(1, 6) for f in (4, 6) for p in (443, 80)}
    telegram |= {f"dc2-v4b:{p}": ("tcp", "mtproto") for p in (443, 80)}
    telegram |= {f"{d}/v{f}": web for d in ("telegram.org", "web.telegram.org", "t.me", "api.telegram.org",
                                             "core.telegram.org") for f in (4, 6)}
    whatsapp = {f"e{i}.whatsapp.net:{p}/v{f}": ("dns", "tcp", "tls")
                for i in range(1, 17) for p in (443, 5222) for f in (4, 6)}
    whatsapp |= {f"{d}/v{f}": web for d in ("web.whatsapp.com", "www.whatsapp.com", "whatsapp.com",
                                             "mmg.whatsapp.net") for f in (4, 6)}
    signal = {f"{d}/v{f}": web for d in ("chat.signal.org", "storage.signal.org", "cdn.signal.org",
                                          "cdn2.signal.org", "sfu.voip.signal.org", "updates.signal.org")
              for f in (4, 6)}
    return {"telegram": telegram, "whatsapp": whatsapp, "signal": signal}


def path_of(target: str) -> str:
    """The catalogue path of a fake target: web names are `web`, media hosts `media`, the
    rest (DCs, chat servers) `chat`."""
    if target.startswith(("mmg.", "cdn")):
        return "media"
    if target.startswith(("web.", "www.", "updates.", "telegram.org", "t.me", "core.")):
        return "web"
    return "chat"


def _fmt_labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"'.replace("\\", "\\\\").replace("\n", "\\n") for k, v in labels.items())
    return "{" + inner + "}"


@dataclass
class FakeProbe:
    """What one vantage's probe exports (metrics v2). Mutate fields to change the scenario.

    ``verdicts`` maps target -> verdict; targets not named are ``ok``. ``catalogue`` is
    messenger -> target -> checks (default: ``messenger`` with the Telegram-like TARGETS).
    ``baseline``/``online`` model issue 14: ``online`` (default: same as ``baseline``) is
    the proof of connectivity, and a failed baseline while online is a blocked baseline, not
    an offline vantage. ``network=False`` renders a probe from before the network gauges.
    Rounds advance every ``round_interval`` seconds of wall time.
    """

    vantage: str
    country: str
    role: str = "subject"
    asn: str = "AS64500"
    network: str = "lab"
    messenger: str = "telegram"
    verdicts: dict[str, str] = field(default_factory=dict)
    baseline: bool = True
    online: bool | None = None
    degraded: bool = False
    # Issue 19: cut off from abroad (a shutdown with a domestic whitelist): online through
    # its domestic site alone, every target vantage_offline (rule international_cut).
    cut: bool = False
    network_gauges: bool = True
    catalogue: dict[str, dict[str, tuple[str, ...]]] | None = None
    round_interval: float = 1.0
    # A silent probe: its scrape fails (as when the process is gone or the agent is cut).
    silent: bool = False
    started: float = field(default_factory=time.time)

    @property
    def targets(self) -> dict[str, dict[str, tuple[str, ...]]]:
        return self.catalogue if self.catalogue is not None else {self.messenger: TARGETS}

    @property
    def is_online(self) -> bool:
        return self.baseline if self.online is None else self.online

    def set_all(self, verdict: str) -> None:
        """Give every target the same verdict (an outage, an uplink cut, a full block)."""
        self.verdicts = {t: verdict for targets in self.targets.values() for t in targets}

    def verdict(self, target: str) -> str:
        if not self.is_online or self.cut:
            return "vantage_offline"
        return self.verdicts.get(target, "ok")

    def rounds(self) -> int:
        return int((time.time() - self.started) / self.round_interval) + 1

    def _check_result(self, steps: tuple[str, ...], target: str, check: str) -> tuple[bool, str | None]:
        """(success, failure string) of one check; steps after a failed one did not run."""
        verdict = self.verdict(target)
        if verdict == "vantage_offline":
            return False, "network_unreachable"
        failing = FAILING_CHECK.get(verdict)
        if failing is None:
            return True, None
        check_name, failure = failing
        if check_name not in steps:
            # e.g. dns_blocking on a DC address: there is no DNS step, so connect fails.
            check_name = steps[0]
        position, failed_at = steps.index(check), steps.index(check_name)
        if position < failed_at:
            return True, None
        return False, (failure if position == failed_at else None)

    def render(self) -> str:
        """The exposition text (format 0.0.4) after the current number of rounds."""
        if self.silent:
            raise RuntimeError(f"probe {self.vantage} is silent")
        n = self.rounds()
        now = self.started + (n - 1) * self.round_interval
        v = {"vantage": self.vantage}
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        def gauge(name: str, help_: str, value: float, labels: Mapping[str, str] = v) -> None:
            family(name, "gauge", help_)
            lines.append(f"{name}{_fmt_labels(labels)} {value}")

        info = {"vantage": self.vantage, "country": self.country, "asn": self.asn,
                "network": self.network, "role": self.role}
        gauge("reach_vantage_info", "The vantage this probe runs at.", 1, info)
        gauge("reach_build_info", "The probe's version.", 1, {"version": "0.0.0-fake", "python": "3"})
        gauge("reach_baseline_success", "Whether some baseline site answered.", int(self.baseline))
        if self.network_gauges:
            online = self.is_online
            gauge("reach_vantage_online", "Connectivity proven this round.", int(online))
            blocked = online and not self.baseline
            gauge("reach_baseline_blocked", "Baseline failed while online.", int(blocked))
            gauge("reach_vantage_degraded", "The vantage's own network is lossy.", int(self.degraded))
            gauge("reach_vantage_loss_ratio", "Baseline attempts that failed.", 0.2 if self.degraded else 0)
            gauge("reach_vantage_rtt_seconds", "Median baseline RTT.", 0.08)
            cut = online and self.cut
            gauge("reach_vantage_international_cut", "Cut off from abroad.", int(cut))
            state = ("offline" if not online else "international_cut" if cut
                     else "baseline_blocked" if blocked else "degraded" if self.degraded else "online")
            gauge("reach_vantage_state", "The vantage's network state.", 1, {**v, "state": state})
            family("reach_baseline_site_success", "gauge", "Per baseline site.")
            for site in ("cloudflare", "quad9"):
                lines.append(f"reach_baseline_site_success{_fmt_labels({**v, 'site': site})} "
                             f"{int(self.baseline and not cut)}")
            if cut:
                lines.append(f"reach_baseline_site_success{_fmt_labels({**v, 'site': 'domestic'})} 1")
        gauge("reach_round_duration_seconds", "Duration of the last round.", 0.8)
        gauge("reach_round_event_loop_lag_seconds", "Loop lag in the last round.", 0.002)
        gauge("reach_round_last_timestamp_seconds", "When the last round finished.", round(now, 3))
        gauge("reach_config_last_reload_successful", "Whether the last reload worked.", 1)

        checks = list(self._checks())
        family("reach_check_success", "gauge", "Whether the check succeeded in the last round.")
        for labels, (success, _failure) in checks:
            lines.append(f"reach_check_success{_fmt_labels(labels)} {int(success)}")
        family("reach_check_duration_seconds", "gauge", "Duration of each check in the last round.")
        for labels, (_success, failure) in checks:
            lines.append(f"reach_check_duration_seconds{_fmt_labels(labels)} {self._duration(failure)}")

        # per vantage x messenger x check: n rounds of every target's check
        latency: dict[tuple[str, str], list[float]] = {}
        failures: dict[tuple[str, str, str], int] = {}
        for labels, (_success, failure) in checks:
            latency.setdefault((labels["messenger"], labels["check"]), []).append(self._duration(failure))
            if failure is not None:
                fkey = (labels["messenger"], labels["check"], failure)
                failures[fkey] = failures.get(fkey, 0) + n
        family("reach_check_latency_seconds", "histogram", "Check latency per vantage, messenger and check.")
        for (messenger, check), durations in latency.items():
            labels = {**v, "messenger": messenger, "check": check}
            for le in BUCKETS:
                count = n * sum(1 for d in durations if d <= le)
                bucket = _fmt_labels({**labels, "le": str(le)})
                lines.append(f"reach_check_latency_seconds_bucket{bucket} {count}")
            lines.append(f"reach_check_latency_seconds_bucket{_fmt_labels({**labels, 'le': '+Inf'})} "
                         f"{n * len(durations)}")
            lines.append(f"reach_check_latency_seconds_sum{_fmt_labels(labels)} {n * sum(durations):.3f}")
            lines.append(f"reach_check_latency_seconds_count{_fmt_labels(labels)} {n * len(durations)}")

        family("reach_check_failures_total", "counter", "Failed checks by failure string.")
        for (messenger, check, failure), count in failures.items():
            labels = {**v, "messenger": messenger, "check": check, "failure": failure}
            lines.append(f"reach_check_failures_total{_fmt_labels(labels)} {count}")

        family("reach_verdict", "gauge", "Current verdict per target (only the current one).")
        for messenger, targets in self.targets.items():
            for target in targets:
                labels = {**v, "messenger": messenger, "target": target, "verdict": self.verdict(target)}
                lines.append(f"reach_verdict{_fmt_labels(labels)} 1")

        # the apps' detours (probe.judge.circumvention): a fake vantage whose messenger has a
        # blocked target says the detour works; elsewhere none is tested
        family("reach_circumvention", "gauge", "Whether the apps' way around a block works.")
        for messenger, targets in self.targets.items():
            blocked = any(self.verdict(t) not in ("ok", "vantage_offline", "inconclusive") for t in targets)
            current = "yes" if blocked else "untested"
            labels = {**v, "messenger": messenger, "answer": current}
            lines.append(f"reach_circumvention{_fmt_labels(labels)} 1")

        # can a user use it? (probe.judge.answer, the real rule over the fake verdicts)
        answers = answer.by_messenger(
            ((m, path_of(t), self.verdict(t), "") for m, ts in self.targets.items() for t in ts),
            online=self.is_online)
        family("reach_messenger_answer", "gauge", "Can a user at this vantage use the messenger.")
        for messenger, current in answers.items():
            labels = {**v, "messenger": messenger, "answer": current.answer}
            lines.append(f"reach_messenger_answer{_fmt_labels(labels)} 1")
        family("reach_messenger_path", "gauge", "The state of each path a user takes.")
        for messenger, current in answers.items():
            for path, state in current.states.items():
                labels = {**v, "messenger": messenger, "path": path, "state": state}
                lines.append(f"reach_messenger_path{_fmt_labels(labels)} 1")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _duration(failure: str | None) -> float:
        return 5.0 if failure == "generic_timeout_error" else 0.12

    def _checks(self) -> Iterator[tuple[dict[str, str], tuple[bool, str | None]]]:
        for messenger, targets in self.targets.items():
            for target, checks in targets.items():
                for check in checks:
                    labels = {"vantage": self.vantage, "messenger": messenger, "target": target,
                              "check": check}
                    yield labels, self._check_result(checks, target, check)
