"""The vantage's own network: is it online, and does its baseline answer?

A failed baseline alone does not mean "offline": a censor that also blocks the baseline
sites (public resolvers are blocked as a matter of course) would hide its block behind
`vantage_offline`. So "online" is a matter of proof, collected from the whole round, per
address family (the checks whose record says `proves_online`, probe/measure/checks):

- a verified TLS handshake (baseline site, service endpoint) with an address outside the
  vantage's own network: a transparent proxy or captive portal accepts every connection,
  but cannot show a certificate that chains and matches the name we asked for;
- a real protocol answer: MTProto resPQ echoing our random nonce (from a DC, or relayed by
  an MTProxy);
- an authenticated resolver answer: DNS over HTTPS whose certificate verified (the round's
  session verifies), from a resolver named by address (its family is then known).

Nothing else counts: a TCP connect, an HTTP answer, a plain DNS answer (the vantage's own
resolver answers when nothing beyond it does) or an unverified handshake prove nothing.
When the baseline fails while such proof exists, the baseline itself is blocked: the
targets are still judged by mechanism (probe.judge.classify), and the state is reported.

The baseline's rule (`baseline.require`): a family's baseline answers when `any` of its
sites does (the default: one blocked or retired site must not flip the vantage), or when a
`majority` does (more than half: for a vantage with many sites, where one answering site
should not hide that most are blocked).

Loss and latency: a vantage on a mobile network in Iran loses packets whether or not
anything is blocked, and a lost SYN looks exactly like a blackholed address. So the round
measures the vantage's own network on its baseline (`baseline.samples` verified TLS
handshakes per site, every one an attempt; more when the round's targets are so many that
a smaller sample could never show a lone target's timeouts as concentrated:
samples_needed) and the classifier compares the service's attempts with that sample, per
address family:

- attempts that time out at a rate the baseline shares are no block: the verdict stays
  non-blocking (with the attempt record), and the vantage is marked *degraded*;
- timeouts concentrated on the service while the baseline is clean are interference;
- so are retransmissions: a censor dropping 30-50% of the packets to the DCs lets most
  connects and exchanges through on the kernel's retransmissions (and the round's next
  attempt overtakes one that waits), so every step succeeds and only the retransmissions
  show it. Per attempt of the service's steps that got their answer, "troubled" is: timed
  out, needed a retransmission the peer did not report as a duplicate (TCP_INFO, D-SACK),
  or was overtaken, still connecting, by a later attempt's success after waiting a
  retransmission timer longer than that success took (troubled_counts); it is compared with the baseline's
  handshakes that timed out or needed a retransmission (`_retried`), by the same test at
  the same levels. The baseline's sample grows (samples_to_decide, at most
  MAX_SAMPLES_FOR_LOSS a family) when the service's troubled attempts are too many for a
  small clean sample to ever show as concentrated.

"Concentrated" is a one-sided Fisher exact test on the 2x2 table (timed-out and other
attempts; service and baseline), written out here because it is twelve lines. Only
timeouts count as lost (a reset or a bad certificate is an answer, not loss), and the
service's attempts counted are connect-level ones (the records' `connect_level`: TCP
connect, TLS handshake, MTProto and Noise exchanges): none carries more packets than the
baseline's TLS handshake, so under plain random loss the service fails no more often than
the baseline, and the test errs on the side of "not a block". Its false-positive rate per
round is measured by tests/unit/test_loss.py, for timeouts and for the troubled attempts
(docs/classifier.md has the figures).
"""

from __future__ import annotations

import ipaddress
import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from probe.measure.checks import spec_of
from probe.model import failures as F
from probe.model.observation import Observation

if TYPE_CHECKING:
    from probe.inputs.catalog import Target
    from probe.inputs.schema import IPNetwork
    from probe.model.observation import RoundDraft

FAMILIES = (4, 6)
#: Proofs named in the round's `network.online_evidence`, per family: enough to show why,
#: few enough that a 10,000-target round does not carry 10,000 lines of them.
EVIDENCE_PER_FAMILY = 3


def family_of(address: str | None) -> int | None:
    """4 or 6 for an address literal, None for anything else (a name, nothing)."""
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address.strip("[]")).version
    except ValueError:
        return None


def outside(address: str, public: Sequence[IPNetwork] = (), own: Iterable[str] = ()) -> bool:
    """Whether `address` lies outside the vantage's own network: a global address (or one in
    `public`, the networks a lab or private deployment declares public) that is not one of
    the vantage's own addresses. A LAN host, loopback or a link-local router is inside."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if str(ip) in {str(ipaddress.ip_address(a)) for a in own}:
        return False
    if any(ip.version == net.version and ip in net for net in public):
        return True
    return ip.is_global


def _doh_address(obs: Observation) -> str | None:
    """The address a DoH resolver was named by (its URL's host), if it was an address."""
    url = str(obs.details.get("resolver_address") or "")
    host = urlsplit(url).hostname if url.startswith("https://") else None
    return host if family_of(host) is not None else None


def proof(obs: Observation) -> tuple[str, str] | None:
    """(address, why) if this observation proves that something outside answered: a success
    of a check whose record says it proves the vantage online (probe/measure/checks)."""
    spec = spec_of(obs.check)
    if spec is None or not spec.proves_online:
        return None
    if obs.check == "dns":
        # only a parsed reply over verified HTTPS, whatever its rcode: the resolver answered
        address = _doh_address(obs) if obs.details.get("protocol") == "doh" else None
        if address is not None and "rcode" in obs.details:
            return address, f"authenticated DoH answer from {obs.details['resolver_address']}"
        return None
    if not obs.ok or not obs.address or (obs.check == "tls" and obs.role == "differential"):
        return None  # TLS differentials are unverified handshakes: anyone could have answered
    name = obs.details.get("sni") or obs.target
    return obs.address, spec.proof_words.format(address=obs.address, port=obs.port,
                                                target=obs.target, name=name)


def connect_level(check: str) -> bool:
    """The service's steps whose attempts are compared with the baseline's handshakes."""
    spec = spec_of(check)
    return spec is not None and spec.connect_level


def connectivity(observations: Iterable[Observation], public: Sequence[IPNetwork] = (),
                 own: Iterable[str] = ()) -> dict[int, list[str]]:
    """Per family, the proofs (at most EVIDENCE_PER_FAMILY each) that the outside answers."""
    own = tuple(own)
    found: dict[int, list[str]] = {f: [] for f in FAMILIES}
    for obs in observations:
        got = proof(obs)
        if got is None or not outside(got[0], public, own):
            continue
        family = family_of(got[0])
        assert family is not None
        if len(found[family]) < EVIDENCE_PER_FAMILY and got[1] not in found[family]:
            found[family].append(got[1])
    return found


def baseline_up(sites: Sequence[tuple[int, bool]], require: str) -> dict[int, bool]:
    """Per family, whether the baseline answers: (family, answered) per site, combined by
    `require` ("any" or "majority"). A family with no site configured never answers."""
    up: dict[int, bool] = {}
    for family in FAMILIES:
        answers = [ok for f, ok in sites if f == family]
        needed = 1 if require == "any" else len(answers) // 2 + 1
        up[family] = bool(answers) and sum(answers) >= needed
    return up


def site_answered(observations: Sequence[Observation]) -> bool:
    """A baseline site answered: it has observations and every one of them succeeded."""
    return bool(observations) and all(o.ok for o in observations)


def judge(result: RoundDraft, sites: Sequence[Target], public: Sequence[IPNetwork] = (),
          domestic: Collection[str] = ()) -> None:
    """Fill the round's `network` record from all of its observations: online (per family
    and overall), the proofs, whether the vantage is cut off from abroad (international_cut),
    whether the baseline is blocked (a family with baseline sites that did not answer while
    that family is proven online), and whether the degraded mark of the baseline's loss
    still stands. `public`: the config's resolvers.public_networks (addresses that count as
    outside although not global); `domestic`: the names of the baseline sites of `kind:
    domestic`."""
    proofs = connectivity(result.observations, public, result.vantage.addresses)
    network = result.network
    network.online_ipv4, network.online_ipv6 = bool(proofs[4]), bool(proofs[6])
    network.online = network.online_ipv4 or network.online_ipv6
    network.online_evidence = [p for f in FAMILIES for p in proofs[f]]
    network.international_cut = network.online and cut_off(
        result.observations, network.baseline_sites, domestic, public, result.vantage.addresses)
    configured = {t.family for t in sites}
    # a cut vantage's international sites fail with everything else abroad: not a block of them
    network.baseline_blocked = not network.international_cut and any(
        f in configured and not result.baseline.family_ok(f) and network.family_online(f)
        for f in FAMILIES)
    # The baseline's timeouts measure the vantage's own network only when the outside world
    # is reachable and no censor drops the baseline: offline, cut off and blocked are not
    # "lossy".
    network.degraded = (network.degraded and network.online and not network.international_cut
                        and not network.baseline_blocked)


def cut_off(observations: Sequence[Observation], sites: Mapping[str, bool],
            domestic: Collection[str], public: Sequence[IPNetwork] = (),
            own: Iterable[str] = ()) -> bool:
    """Whether the vantage is cut off from abroad while its own country's network answers:
    a national shutdown with a domestic whitelist (Iran, November 2019), which would
    otherwise read as every messenger blocked. All of it must hold:

    - a domestic baseline site answered (`sites`: each site's answer this round, or as last
      seen), and every international site failed (there is at least one);
    - nothing but the domestic sites proved connectivity: no verified handshake, MTProto
      answer or authenticated DoH answer from anywhere else, the messengers' included;
    - no control resolver replied at all (a plain reply proves nothing about who answered,
      but a resolver abroad that replies means the gateway lets something through: then
      this is a block of everything the probe asks for, judged by mechanism as before);
    - every messenger fails: no connect-level step to any messenger succeeded (a bare TCP
      connect included).

    An ISP that loses its international transit looks the same from one vantage: the fleet
    compares the country's vantages (docs/fleet.md, InternationalCut)."""
    domestic = set(domestic)
    if not any(sites.get(name) for name in domestic):
        return False
    international = [ok for name, ok in sites.items() if name not in domestic]
    if not international or any(international):
        return False
    abroad = [o for o in observations if not (o.messenger is None and o.target in domestic)]
    if any(connectivity(abroad, public, own).values()):
        return False
    for obs in abroad:
        if obs.check == "dns" and obs.role == "control" and "rcode" in obs.details:
            return False  # a control resolver replied
        if obs.messenger is not None and obs.primary and connect_level(obs.check) and obs.ok:
            return False  # a messenger answered
    return True


# ---------------------------------------------------------------- loss and latency

# Attempts that never got an answer: what packet loss produces (and what a blackhole does).
LOST = frozenset({F.GENERIC_TIMEOUT, F.HOST_UNREACHABLE, F.NETWORK_UNREACHABLE})
# Degraded: this share of the baseline's attempts timed out, or this share of the segments
# its handshakes sent had to be retransmitted (the kernel's count, TCP_INFO), or this share
# of its handshakes needed a retransmission or timed out. The last is the one that sees loss
# on the downlink only: a lost SYN-ACK or server flight makes the client resend one segment
# among the five or six a handshake sends (so the segment ratio stays near 5% at 25% loss),
# but it marks a quarter of the handshakes. A clean network retransmits in almost none.
DEGRADED_LOSS = 0.05
DEGRADED_RETRANSMITS = 0.05
DEGRADED_RETRIED = 0.10
# Significance of "the service's timeouts in one family exceed the baseline's" (per
# messenger and family), and of "one target's timeouts exceed the baseline's", which is
# shared by the round's targets (Bonferroni: ALPHA_TARGET / number of targets).
ALPHA_SERVICE = 1e-4
ALPHA_TARGET = 1e-3

Counts = tuple[int, int]  # (lost attempts, attempts)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(lost: int, tries: int, ref_lost: int, ref_tries: int) -> float:
    """One-sided Fisher exact test: the probability, if both groups lost attempts at the same
    rate, that the first group would lose `lost` of its `tries` or more, given the total
    lost. Small values mean the first group's losses are concentrated on it."""
    total_lost = lost + ref_lost
    total = tries + ref_tries
    if tries == 0 or total_lost == 0:
        return 1.0
    denominator = _log_choose(total, tries)
    p = 0.0
    for k in range(lost, min(tries, total_lost) + 1):
        p += math.exp(_log_choose(total_lost, k) + _log_choose(total - total_lost, tries - k)
                      - denominator)
    return min(1.0, p)


#: The most handshakes per site a full sample takes (the config's own upper bound).
MAX_SAMPLES_PER_SITE = 100


def samples_needed(targets: int, attempts: int) -> int:
    """The smallest baseline sample (handshakes of one family) against which a target whose
    `attempts` attempts all timed out can stand out at the round's significance level
    (ALPHA_TARGET / `targets`) while the baseline lost none. The one-sided Fisher p of that
    table is 1 / C(n + attempts, attempts): it has a floor set by the sample sizes alone, so
    a sample too small for the round's number of targets makes the test unable to tell any
    block from loss (4 attempts against 40 handshakes: p >= 7.4e-6, which no target reaches
    once a round has more than 135 targets)."""
    alpha = ALPHA_TARGET / max(1, targets)
    attempts = max(1, attempts)
    n = 1
    limit = 64 * MAX_SAMPLES_PER_SITE
    while n < limit and fisher_greater(attempts, attempts, 0, n) >= alpha:
        n += 1
    return n


def lost_counts(observations: Iterable[Observation]) -> Counts:
    """(timed-out attempts, attempts) over the observations' attempts."""
    lost = tries = 0
    for obs in observations:
        for attempt in obs.tries():
            tries += 1
            lost += attempt.failure in LOST
    return lost, tries


#: An attempt overtaken by a later one's success (cancelled, never finished) while its TCP
#: connect was still pending, having waited this much longer than the success took, lost
#: its SYN or SYN-ACK: Linux's shortest retransmission timeout is 200 ms (a lost SYN costs
#: 1 s). Attempts that had connected are not listed (probe.measure.round): a busy server
#: answers connections out of order, and under CPU load that alone made a later attempt
#: win often enough to read as targeted loss at a control vantage.
RECOVERY_SECONDS = 0.2
#: The largest sample (handshakes of one family) the service's troubled attempts ask for
#: (samples_to_decide).
MAX_SAMPLES_FOR_LOSS = 100


def _request_retransmitted(figures: dict[str, Any]) -> bool:
    """The kernel retransmitted something of this connection that the peer had not already
    got: its retransmissions minus those the peer reported as duplicates (D-SACK: the
    answer was lost, not the request). A SYN resent for a lost SYN-ACK counts (the peer
    cannot report it)."""
    return int(figures.get("tcp_retransmits", 0)) > int(figures.get("tcp_dsack_dups", 0))


def troubled_counts(observations: Iterable[Observation]) -> Counts:
    """(troubled attempts, attempts) of those of the service's connect-level steps that got
    their answer in the end: an attempt is troubled when it timed out, when its connection
    needed a retransmission (TCP_INFO of the attempt kept, the success), or when a later
    attempt's success overtook it after it had waited a retransmission timer longer than
    the success took (details overtaken_seconds, probe.measure.round: aged from when the
    attempt's check began, past the concurrency cap; aged from its creation, attempts
    still waiting for a slot made the lab's clean fronts read troubled). A slow server
    makes the success slow too. Loss, intermittent
    by nature: a step that never got an answer (a blackhole, a silent server, a filter on
    a name or a protocol) is the timeout test's to weigh, not this one's. Under random
    loss each is at most as likely as a baseline handshake that timed out or was
    retransmitted (`_retried`): none of these steps sends more than a TLS handshake before
    its answer, and leaving out the steps that failed every attempt only lowers the rate."""
    bad = tries = 0
    for obs in observations:
        if not obs.ok:
            continue
        for attempt in obs.tries():
            tries += 1
            bad += attempt.failure in LOST
        if _request_retransmitted(obs.details):
            bad += 1
        late = sum(float(age) >= obs.duration_seconds + RECOVERY_SECONDS
                   for age in obs.details.get("overtaken_seconds", ()))
        bad += late
        tries += late
    return bad, tries


def retried_counts(observations: Iterable[Observation]) -> Counts:
    """(handshakes that timed out or needed a retransmission, handshakes) of the baseline's
    sample (`_retried`): the reference of `troubled_counts`."""
    samples = list(observations)
    return _retried(samples), sum(len(o.tries()) for o in samples)


def samples_to_decide(service: Counts, current: int) -> int:
    """The baseline sample (handshakes of one family) at which the service's `service`
    troubled attempts could stand out at ALPHA_SERVICE if the baseline showed none: with
    0 of B troubled, the one-sided Fisher p of k of n is C(n, k) / C(n + B, k), which no
    k reaches while B is small (30% targeted loss gave 14 of 62 attempts: p >= 2e-3 against
    40 handshakes, 2e-6 against 100). At least `current`, at most MAX_SAMPLES_FOR_LOSS."""
    lost, tries = service
    if lost == 0 or current >= MAX_SAMPLES_FOR_LOSS or (
            fisher_greater(lost, tries, 0, MAX_SAMPLES_FOR_LOSS) >= ALPHA_SERVICE):
        return current  # nothing to show, or too little for any sample to show it
    size = current
    while size < MAX_SAMPLES_FOR_LOSS and fisher_greater(lost, tries, 0, size) >= ALPHA_SERVICE:
        size += 1
    return size



def baseline_samples(observations: Iterable[Observation], family: int) -> list[Observation]:
    """The baseline's handshakes of one family (not its throughput transfer)."""
    return [o for o in observations if o.messenger is None and connect_level(o.check)
            and family_of(o.address) == family]


@dataclass(frozen=True)
class LossContext:
    """A round's loss counts, for the classifier: the baseline's per family, the service's
    connect-level attempts per messenger and family."""

    baseline: dict[int, Counts] = field(default_factory=dict)
    service: dict[tuple[str, int], Counts] = field(default_factory=dict)
    degraded: bool = False  # the vantage's network this round (quality())
    targets: int = 1  # how many targets share ALPHA_TARGET
    # The same per attempt for "timed out or retransmitted": the baseline's handshakes
    # (retried_counts) and the service's connect-level attempts (troubled_counts).
    baseline_retried: dict[int, Counts] = field(default_factory=dict)
    service_troubled: dict[tuple[str, int], Counts] = field(default_factory=dict)

    @classmethod
    def of(cls, observations: list[Observation], degraded: bool = False,
           targets: int = 1) -> LossContext:
        baseline = {f: lost_counts(baseline_samples(observations, f)) for f in (4, 6)}
        retried = {f: retried_counts(baseline_samples(observations, f)) for f in (4, 6)}
        grouped = service_steps(observations)
        return cls(baseline, {key: lost_counts(group) for key, group in grouped.items()},
                   degraded, max(1, targets), retried,
                   {key: troubled_counts(group) for key, group in grouped.items()})

    @property
    def alpha_target(self) -> float:
        return ALPHA_TARGET / self.targets

    def target_p(self, family: int, counts: Counts) -> float | None:
        """Fisher p of one target's attempts against its family's baseline; None without a
        baseline sample to compare with."""
        ref = self.baseline.get(family, (0, 0))
        return None if ref[1] == 0 else fisher_greater(*counts, *ref)

    def service_p(self, messenger: str, family: int) -> float | None:
        """Fisher p of the service's connect-level attempts in a family against the baseline."""
        ref = self.baseline.get(family, (0, 0))
        mine = self.service.get((messenger, family), (0, 0))
        return None if ref[1] == 0 else fisher_greater(*mine, *ref)

    def troubled_target_p(self, family: int, counts: Counts) -> float | None:
        """Fisher p of one target's troubled attempts (troubled_counts) against its family's
        baseline handshakes that timed out or were retransmitted."""
        ref = self.baseline_retried.get(family, (0, 0))
        return None if ref[1] == 0 else fisher_greater(*counts, *ref)

    def troubled_service_p(self, messenger: str, family: int) -> float | None:
        """The same for the service's connect-level attempts in a family."""
        return self.troubled_target_p(family, self.service_troubled.get((messenger, family),
                                                                          (0, 0)))


def service_steps(observations: Iterable[Observation]) -> dict[tuple[str, int], list[Observation]]:
    """The service's connect-level primary observations per (messenger, family): what is
    compared with the baseline's handshakes."""
    grouped: dict[tuple[str, int], list[Observation]] = defaultdict(list)
    for obs in observations:
        family = family_of(obs.address)
        if obs.messenger is not None and obs.primary and connect_level(obs.check) and family:
            grouped[(obs.messenger, family)].append(obs)
    return grouped


def describe(counts: Counts, ref: Counts) -> str:
    """'5 of 6 attempts timed out vs 0 of 24 to the baseline'."""
    return (f"{counts[0]} of {counts[1]} attempts timed out vs {ref[0]} of {ref[1]} "
            "to the baseline")


def describe_troubled(counts: Counts, ref: Counts) -> str:
    """'5 of 9 attempts timed out or retransmitted vs 0 of 100 baseline handshakes'."""
    return (f"{counts[0]} of {counts[1]} attempts timed out or retransmitted vs {ref[0]} of "
            f"{ref[1]} baseline handshakes")


@dataclass(frozen=True)
class Quality:
    """The vantage's loss and latency this round (RoundResult.network's loss fields)."""

    loss_ratio: float | None
    rtt_seconds: float | None
    retransmit_ratio: float | None
    retried_ratio: float | None
    degraded: bool


def quality(baseline_observations: list[Observation]) -> Quality:
    """Loss ratio (timed-out share of the baseline's attempts), the median kernel RTT of its
    handshakes, the share of their segments retransmitted, the share of handshakes that
    needed a retransmission or timed out, and whether that is degraded."""
    samples = [o for o in baseline_observations if connect_level(o.check)]
    lost, tries = lost_counts(samples)
    details = _sample_details(samples)
    loss = round(lost / tries, 4) if tries else None
    rtts = [float(s["tcp_rtt_seconds"]) for s in details if s.get("tcp_rtt_seconds")]
    rtt = round(statistics.median(rtts), 6) if rtts else None
    sent = sum(int(s.get("tcp_segments_out", 0)) for s in details)
    retransmitted = sum(int(s.get("tcp_retransmits", 0)) for s in details)
    retransmit = round(retransmitted / sent, 4) if sent else None
    retried = round(_retried(samples) / tries, 4) if tries else None
    degraded = ((loss or 0.0) >= DEGRADED_LOSS or (retransmit or 0.0) >= DEGRADED_RETRANSMITS
                or (retried or 0.0) >= DEGRADED_RETRIED)
    return Quality(loss, rtt, retransmit, retried, degraded)


def _retried(samples: list[Observation]) -> int:
    """Handshakes that timed out or needed a retransmission (each attempt counted once; an
    attempt's kernel figures are its entry in details["samples"])."""
    count = 0
    for obs in samples:
        figures = obs.details.get("samples", [obs.details])
        for i, attempt in enumerate(obs.tries()):
            kernel = figures[i] if i < len(figures) else {}
            count += attempt.failure in LOST or int(kernel.get("tcp_retransmits", 0)) > 0
    return count


def _sample_details(samples: list[Observation]) -> list[dict[str, Any]]:
    """The kernel's figures of every handshake of the sample (kept per attempt)."""
    return [s for o in samples for s in o.details.get("samples", [o.details])]
