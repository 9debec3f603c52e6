"""The one source of the verdict vocabulary: local verdicts, their blocking subset, the
vantage's network states, the fleet's status words, and the colour each is drawn in.

Everything that names a verdict (the classifier, metrics, the status page, Prometheus
rules and alerts, Grafana boards) takes it from here or is tested against it: a verdict
added here and forgotten elsewhere fails a test, not an analyst.

Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies), one
per mechanism, shared by the status page and the boards.
"""

from __future__ import annotations

from typing import Final

VERDICTS: Final[tuple[str, ...]] = (
    "ok",
    "dns_injection",
    "dns_blocking",
    "ip_blocking",
    "tcp_reset",
    "sni_filtering",
    "tls_interception",
    "protocol_filtering",
    "http_blockpage",
    "throttling",
    "vantage_offline",
    "inconclusive",
)

NON_BLOCKING: Final[frozenset[str]] = frozenset({"ok", "vantage_offline", "inconclusive"})
BLOCKING_VERDICTS: Final[frozenset[str]] = frozenset(VERDICTS) - NON_BLOCKING
# In table order, for regular expressions in rules and for stable display.
BLOCKING: Final[tuple[str, ...]] = tuple(v for v in VERDICTS if v in BLOCKING_VERDICTS)


def blocking_regex() -> str:
    """The blocking verdicts as a PromQL label regex: `dns_injection|dns_blocking|...`."""
    return "|".join(BLOCKING)


# The vantage's own network this round (probe.judge.vantage, VantageNetwork.state), the
# first that holds: no proof that anything outside answers; only domestic sites answer while
# everything abroad fails (a shutdown with a domestic whitelist); the baseline fails although
# outside answers are proven; the vantage's own network is lossy; none of these.
VANTAGE_STATES: Final[tuple[str, ...]] = (
    "offline",
    "international_cut",
    "baseline_blocked",
    "degraded",
    "online",
)

# The fleet status per vantage x messenger (recording rules), by number: the number is
# what the rules compute, the word is what people read.
FLEET_STATUS: Final[dict[int, str]] = {
    1: "offline",
    2: "unknown",
    3: "ok",
    4: "outage",
    5: "blocked",
    6: "degraded",
    7: "international_cut",
}

# Okabe-Ito: black #000000, orange #E69F00, sky blue #56B4E9, bluish green #009E73,
# yellow #F0E442, blue #0072B2, vermillion #D55E00, reddish purple #CC79A7; greys for
# "nothing can be said".
VERDICT_COLOURS: Final[dict[str, str]] = {
    "ok": "#009E73",
    "dns_injection": "#D55E00",
    "dns_blocking": "#E69F00",
    "ip_blocking": "#CC79A7",
    "tcp_reset": "#0072B2",
    "sni_filtering": "#56B4E9",
    "tls_interception": "#000000",
    "protocol_filtering": "#F0E442",
    "http_blockpage": "#8B4513",
    "throttling": "#7F7FFF",
    "vantage_offline": "#9E9E9E",
    "inconclusive": "#C8C8C8",
}

STATUS_COLOURS: Final[dict[str, str]] = {
    "offline": "#9E9E9E",
    "unknown": "#C8C8C8",
    "ok": "#009E73",
    "outage": "#E69F00",
    "blocked": "#D55E00",
    "degraded": "#56B4E9",
    # a shutdown: the vantage is cut off from abroad (dark: the lights are out, which is a
    # finding, unlike the light greys of "nothing can be said")
    "international_cut": "#3B3B3B",
}

# The vantage states in the statuses' colours (online: ok's green, baseline_blocked: the
# orange of an outage, as the BaselineBlocked ticket is about sites failing).
VANTAGE_STATE_COLOURS: Final[dict[str, str]] = {
    "offline": STATUS_COLOURS["offline"],
    "international_cut": STATUS_COLOURS["international_cut"],
    "baseline_blocked": STATUS_COLOURS["outage"],
    "degraded": STATUS_COLOURS["degraded"],
    "online": STATUS_COLOURS["ok"],
}
