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

from probe.verdicts import VERDICTS

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

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _fmt_labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"'.replace("\\", "\\\\").replace("\n", "\\n") for k, v in labels.items())
    return "{" + inner + "}"


@dataclass
class FakeProbe:
    """What one vantage's probe exports. Mutate ``verdicts``/``baseline`` to change scenario.

    ``verdicts`` maps target -> verdict for messenger ``messenger``; targets not named
    are ``ok``. Rounds advance every ``round_interval`` seconds of wall time.
    """

    vantage: str
    country: str
    role: str = "subject"
    asn: str = "AS64500"
    network: str = "lab"
    messenger: str = "telegram"
    verdicts: dict[str, str] = field(default_factory=dict)
    baseline: bool = True
    round_interval: float = 1.0
    # A silent probe: its scrape fails (as when the process is gone or the agent is cut).
    silent: bool = False
    started: float = field(default_factory=time.time)

    def set_all(self, verdict: str) -> None:
        """Give every target the same verdict (an outage, an uplink cut, a full block)."""
        self.verdicts = dict.fromkeys(TARGETS, verdict)

    def verdict(self, target: str) -> str:
        if not self.baseline:
            return "vantage_offline"
        return self.verdicts.get(target, "ok")

    def rounds(self) -> int:
        return int((time.time() - self.started) / self.round_interval) + 1

    def _check_result(self, target: str, check: str) -> tuple[bool, str | None]:
        """(success, failure string) of one check; steps after a failed one did not run."""
        verdict = self.verdict(target)
        if verdict == "vantage_offline":
            return False, "network_unreachable"
        failing = FAILING_CHECK.get(verdict)
        if failing is None:
            return True, None
        check_name, failure = failing
        steps = TARGETS[target]
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

        family("reach_vantage_info", "gauge", "The vantage this probe runs at.")
        info = {
            "vantage": self.vantage,
            "country": self.country,
            "asn": self.asn,
            "network": self.network,
            "role": self.role,
        }
        lines.append(f"reach_vantage_info{_fmt_labels(info)} 1")
        family("reach_baseline_success", "gauge", "Whether the vantage's own network works.")
        lines.append(f"reach_baseline_success{_fmt_labels(v)} {int(self.baseline)}")
        family("reach_round_duration_seconds", "gauge", "Duration of the last round.")
        lines.append(f"reach_round_duration_seconds{_fmt_labels(v)} 0.8")
        family("reach_round_last_timestamp_seconds", "gauge", "When the last round finished.")
        lines.append(f"reach_round_last_timestamp_seconds{_fmt_labels(v)} {now:.3f}")
        family("reach_config_last_reload_successful", "gauge", "Whether the last reload worked.")
        lines.append(f"reach_config_last_reload_successful{_fmt_labels(v)} 1")

        family("reach_check_success", "gauge", "Whether the check succeeded in the last round.")
        for labels, (success, _failure) in self._checks():
            lines.append(f"reach_check_success{_fmt_labels(labels)} {int(success)}")

        family("reach_check_duration_seconds", "histogram", "Duration of each check.")
        for labels, (_success, failure) in self._checks():
            duration = 5.0 if failure == "generic_timeout_error" else 0.12
            cumulative = 0
            for le in BUCKETS:
                cumulative = n if duration <= le else 0
                lines.append(
                    f"reach_check_duration_seconds_bucket{_fmt_labels({**labels, 'le': str(le)})}"
                    f" {cumulative}"
                )
            lines.append(f"reach_check_duration_seconds_bucket{_fmt_labels({**labels, 'le': '+Inf'})} {n}")
            lines.append(f"reach_check_duration_seconds_sum{_fmt_labels(labels)} {n * duration:.3f}")
            lines.append(f"reach_check_duration_seconds_count{_fmt_labels(labels)} {n}")

        family("reach_check_failures_total", "counter", "Failed checks by failure string.")
        for labels, (_success, failure) in self._checks():
            if failure is not None:
                lines.append(f"reach_check_failures_total{_fmt_labels({**labels, 'failure': failure})} {n}")

        family("reach_verdict", "gauge", "Current verdict per target (a state set).")
        for target in TARGETS:
            current = self.verdict(target)
            for verdict in VERDICTS:
                labels = {**v, "messenger": self.messenger, "target": target, "verdict": verdict}
                lines.append(f"reach_verdict{_fmt_labels(labels)} {int(verdict == current)}")
        return "\n".join(lines) + "\n"

    def _checks(self) -> Iterator[tuple[dict[str, str], tuple[bool, str | None]]]:
        for target, checks in TARGETS.items():
            for check in checks:
                labels = {
                    "vantage": self.vantage,
                    "messenger": self.messenger,
                    "target": target,
                    "check": check,
                }
                yield labels, self._check_result(target, check)
