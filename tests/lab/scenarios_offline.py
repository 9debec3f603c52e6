"""Issue 14's lab scenarios: an offline vantage is proven, not assumed.

A censor that also blocks the probe's baseline used to turn every verdict into
`vantage_offline` and hide its block. These scenarios break the baseline, the uplink or
everything beyond the vantage's own resolver, and say what each vantage must report,
including its `network` record (probe.judge.vantage): whether it is proven online and whether
its baseline is blocked. They run through the same harness and results file as
tests/lab/scenarios.py, so docs/lab-results.md shows them with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.lab import plan
from tests.lab.scenarios import ALL_OK, BLOCKS, DCS, DOMAINS, Scenario, _names, drop_to

#: The subject's access link is the censor's `sub0`: everything it forwards comes from there.
_SUB = plan.SUBJECT_LINK.right_if
DROP_ALL_FORWARDED = tuple((tool, "-A", "FORWARD", "-i", _SUB, "-j", "DROP")
                           for tool in ("iptables", "ip6tables"))

ONLINE = {"online": True, "baseline_blocked": False}
BLOCKED_BASELINE = {"online": True, "baseline_blocked": True, "baseline_ok": False}
OFFLINE = {"online": False, "baseline_blocked": False}
#: Issue 19: proven online through the domestic site alone, everything abroad failing.
CUT = {"online": True, "international_cut": True, "baseline_blocked": False, "degraded": False,
       "state": "international_cut"}
CONTROL_ONLINE = {"online": True, "international_cut": False, "state": "online"}


@dataclass(frozen=True)
class OfflineScenario(Scenario):
    """A scenario with expectations on each vantage's round `network` record too."""

    network: dict[str, dict[str, bool]] = field(default_factory=dict)
    #: every subject verdict's evidence must name a failed baseline observation
    baseline_in_evidence: bool = False
    #: the subject's config gets the lab's domestic site (tests/lab/configs.py domestic_site)
    domestic_site: bool = False
    #: the rule every subject verdict must name (empty: any)
    subject_rule: str = ""


SCENARIOS: tuple[OfflineScenario, ...] = (
    OfflineScenario(
        "15a-baseline-blocked",
        "Censor blocks the baseline only",
        "the censor drops all traffic to the baseline site (both families); the service, "
        "the DoH control and everything else pass",
        subject=ALL_OK,
        censor=drop_to(list(plan.BASELINE)),
        forbidden=(*BLOCKS, "vantage_offline"),
        network={plan.SUBJECT: BLOCKED_BASELINE, plan.CONTROL: ONLINE},
        baseline_in_evidence=True,
    ),
    OfflineScenario(
        "15b-baseline-blocked-iran-2015",
        "Baseline blocked + Iran 2015",
        "the censor drops the baseline site and every DC address, and its resolver answers "
        "10.10.34.34 / d0::11 for the service's names; only the DoH control proves the "
        "subject online",
        subject=((DCS, "ip_blocking"), (DOMAINS, "dns_injection")),
        failures=((DCS, ("generic_timeout_error",)), (DOMAINS, ("dns_bogon_error",))),
        isp_dns={"behaviours": _names("bogon")},
        censor=drop_to([*plan.dc_addresses(), *plan.BASELINE]),
        forbidden=("vantage_offline",),
        network={plan.SUBJECT: BLOCKED_BASELINE, plan.CONTROL: ONLINE},
        baseline_in_evidence=True,
    ),
    OfflineScenario(
        "15c-uplink-cut",
        "Uplink really cut",
        "the subject's access link is down (as 14): nothing answers, DoH control included",
        subject=(("*", "vantage_offline"),),
        failures=(("*", ("network_unreachable",)),),
        cut_uplink=True,
        forbidden=BLOCKS,
        network={plan.SUBJECT: OFFLINE, plan.CONTROL: ONLINE},
    ),
    OfflineScenario(
        "15d-only-own-resolver",
        "Only the vantage's own resolver answers",
        "the censor drops everything the subject sends beyond it; the ISP resolver (on the "
        "censor) still answers honestly, so every name resolves and nothing else answers",
        subject=(("*", "vantage_offline"),),
        failures=(("*", ("generic_timeout_error",)),),
        censor=DROP_ALL_FORWARDED,
        forbidden=BLOCKS,
        network={plan.SUBJECT: OFFLINE, plan.CONTROL: ONLINE},
    ),
    OfflineScenario(
        "19h-shutdown-domestic-whitelist",
        "Shutdown with a domestic whitelist",
        "a national shutdown: the censor drops everything the subject sends abroad; only the "
        "country's own network answers: the ISP resolver (honestly) and a domestic site "
        "(bank.reach-lab.example on the censor's side of the gateway, a `kind: domestic` "
        "baseline site of the subject). The international baseline, the control resolvers "
        "(plain and DoH) and every messenger fail",
        subject=(("*", "vantage_offline"),),
        failures=((DCS, ("generic_timeout_error",)),),
        censor=DROP_ALL_FORWARDED,
        forbidden=(*BLOCKS, "inconclusive"),
        network={plan.SUBJECT: CUT, plan.CONTROL: CONTROL_ONLINE},
        domestic_site=True,
        subject_rule="international_cut",
    ),
)
