"""Lab scenarios of partial interference: rejects by ICMP, targeted loss, throttling,
residual blocking after a transport trigger and a national shutdown.

A squeeze is what a ministry calls "technical problems": nothing is walled off, the
service just works badly. Each scenario here says what reach must name, in both vantages.
Single-round ones (`SQUEEZE_SCENARIOS`) run through the ordinary harness (one `probe once`
per vantage, records in build/lab-results.json); multi-round ones (`SQUEEZE_ROUNDS`) reuse
tests/lab/scenarios_loss.py's `probe run` machinery (records in build/lab-loss.json), since
a verdict on a lossy network is a claim about a rate.
"""

from __future__ import annotations

from tests.lab import plan
from tests.lab.scenarios import ALL_OK, BLOCKS, DCS, DCS_V4_NET, DCS_V6_NET, Scenario

_SUB = plan.SUBJECT_LINK.right_if


def icmp_reject_dcs() -> tuple[tuple[str, ...], ...]:
    """The censor's routers answer every packet to a DC with ICMP "communication
    administratively prohibited" (IPv4 type 3 code 13) and ICMPv6 "administratively
    prohibited" (type 1 code 1): Linux reports the first as EHOSTUNREACH, the second as
    EACCES."""
    return tuple(
        (tool, "-A", "FORWARD", "-i", _SUB, "-d", net, "-j", "REJECT", "--reject-with", how)
        for tool, net, how in (("iptables", DCS_V4_NET, "icmp-admin-prohibited"),
                               ("ip6tables", DCS_V6_NET, "icmp6-adm-prohibited"))
    )


SQUEEZE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "19a-icmp-admin-prohibited",
        "ICMP and ICMPv6 administratively prohibited",
        "the censor answers every packet to a DC with ICMP type 3 code 13 (IPv4) and ICMPv6 "
        "type 1 code 1 (IPv6) instead of dropping it; the web fronts pass. Like a censor's "
        "firewall, it answers every rejected packet (its kernel's ICMP rate limits are off: "
        "tests/lab/topology.py CENSOR_ICMP_SYSCTLS), so every DC target's evidence has the "
        "reject: host_unreachable",
        subject=((DCS, "ip_blocking"), ("*", "ok")),
        failures=((DCS, ("host_unreachable",)),),
        censor=icmp_reject_dcs(),
        forbidden=("inconclusive", *[b for b in BLOCKS if b != "ip_blocking"]),
    ),
)

__all__ = ["ALL_OK", "SQUEEZE_SCENARIOS"]
