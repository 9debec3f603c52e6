"""The classifier: one round's observations in, one verdict per target out.

It is a rule table read top to bottom; the first rule whose condition holds gives the
verdict, and the verdict names that rule and the observations it looked at. Order is the
argument: a vantage whose own network is down says nothing about the service, so that rule
comes first; DNS comes before TCP because a forged answer explains every later failure;
a mechanism only a censor produces (a forged answer, a filtered SNI) is only claimed when
the evidence for it is positive (a fingerprint, a second answer, a working neutral SNI).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from probe.inputs.catalog import Target
from probe.judge import residual as R
from probe.judge.vantage import (
    ALPHA_SERVICE,
    ALPHA_TARGET,
    LOST,
    LossContext,
    connect_level,
    describe,
    describe_troubled,
    family_of,
    lost_counts,
    troubled_counts,
)
from probe.measure.checks import spec_of
from probe.model import failures as F
from probe.model.observation import Baseline, Observation, RoundDraft, VantageNetwork, Verdict

# Throttling: the service's transfer was cut by the time limit (it could not finish, or
# fill max_bytes, within http.transfer_seconds) and ran below this fraction of the
# baseline's throughput. A transfer that finishes is never called throttled: between two
# fast transfers the ratio is scheduler noise, not a censor.
THROTTLE_RATIO = 0.3
# Once the service's timeouts in a family stand out from the baseline's (a family-wise test
# at probe.judge.vantage.ALPHA_SERVICE), a target is named when its own do at this level.
TARGET_SHARE_ALPHA = 0.05

TIMEOUTS = frozenset({F.GENERIC_TIMEOUT, F.HOST_UNREACHABLE, F.NETWORK_UNREACHABLE})
RESETS = frozenset({F.CONNECTION_RESET, F.CONNECTION_REFUSED})
DNS_ERRORS = frozenset({F.DNS_NXDOMAIN, F.DNS_SERVFAIL, F.DNS_REFUSED, F.DNS_NO_ANSWER,
                        F.GENERIC_TIMEOUT})


@dataclass
class TargetView:
    """One target's observations of one round, with the questions rules ask of them."""

    target: Target
    observations: list[Observation]
    baseline: Baseline
    baseline_observations: list[Observation]
    # The round's proof of connectivity (probe.judge.vantage). None, in views built by hand: the
    # baseline alone then stands for it, as it did before the proof existed.
    network: VantageNetwork | None = None
    # The round's loss counts (probe.judge.vantage). None in views built by hand: no comparison
    # with the baseline is possible, and failures are judged by mechanism alone.
    loss: LossContext | None = None
    # The round's residual drops per address and port (probe.judge.residual), those of
    # earlier rounds still running included. None, in views built by hand: the view's own
    # observations (and the baseline's, for the loss rate) are read for one.
    residuals: Mapping[R.Key, R.Residual] | None = None

    def residual(self) -> R.Residual | None:
        """The residual drop at the address and port this target's steps went to."""
        found = (R.find([*self.observations, *self.baseline_observations])
                 if self.residuals is None else self.residuals)
        keys = {(o.address, o.port) for o in self.observations
                if o.address is not None and o.port is not None}
        return next((found[k] for k in keys if k in found), None)

    def online(self) -> bool:
        """Something outside the vantage's network answered in the target's family."""
        family = self.target.family
        return (self.baseline.family_ok(family) if self.network is None
                else self.network.family_online(family))

    def baseline_of_family(self) -> list[Observation]:
        return [o for o in self.baseline_observations
                if o.address is not None and (":" in o.address) == (self.target.family == 6)]

    def baseline_blocked(self) -> list[Observation]:
        """The baseline's failures of the target's family, when the family is online anyway
        (the baseline itself is blocked); empty otherwise."""
        if (self.baseline.family_ok(self.target.family) or not self.online()
                or (self.network is not None and self.network.international_cut)):
            return []
        return [o for o in self.baseline_of_family() if not o.ok]

    def primary(self, check: str) -> Observation | None:
        return next((o for o in self.observations if o.check == check and o.primary), None)

    def differential(self, check: str) -> Observation | None:
        return next((o for o in self.observations
                     if o.check == check and o.role == "differential"), None)

    def resolvers(self, control: bool) -> list[Observation]:
        return [o for o in self.observations
                if o.check == "dns" and (o.role == "control") == control]

    def failed(self, check: str, among: Collection[str] | None = None) -> Observation | None:
        """The primary observation of `check` if it failed (with one of `among`)."""
        obs = self.primary(check)
        if obs is None or obs.ok or (among is not None and obs.failure not in among):
            return None
        return obs


Evidence = list[Observation] | None


@dataclass(frozen=True)
class Rule:
    id: str
    verdict: str
    condition: str  # the rule in words: shown in docs and in every verdict's reason
    test: Callable[[TargetView], Evidence]
    # What the evidence list cannot say by itself (a comparison, a sequence), appended to
    # the reason.
    explain: Callable[[TargetView], str] | None = None
    # The figures behind the verdict, as numbers (the verdict's details, /api/target).
    figures: Callable[[TargetView], dict[str, Any]] | None = None


def _offline(baseline_answered: bool) -> Callable[[TargetView], Evidence]:
    """No proof of connectivity in the target's family, and the family's baseline did (not)
    answer: answering with only bare TCP connects, which a transparent proxy fakes."""
    def test(v: TargetView) -> Evidence:
        if v.online() or v.baseline.family_ok(v.target.family) != baseline_answered:
            return None
        return v.baseline_of_family()
    return test


def _cut(v: TargetView) -> Evidence:
    """The vantage is cut off from abroad (probe.judge.vantage.cut_off): the target's own
    failures, and the baseline of its family (the domestic site that answered, the
    international ones that did not)."""
    if v.network is None or not v.network.international_cut:
        return None
    return [o for o in v.observations if o.primary and not o.ok][:3] + v.baseline_of_family()


def _cut_sites(v: TargetView) -> str:
    """Which baseline sites answered (the domestic ones) and which did not."""
    sites = v.network.baseline_sites if v.network is not None else {}
    answered = sorted(name for name, ok in sites.items() if ok)
    failed = sorted(name for name, ok in sites.items() if not ok)
    return (f"answered: {', '.join(answered) or 'none'}; failed: {', '.join(failed) or 'none'}")


def _dns_flag(flag: str) -> Callable[[TargetView], Evidence]:
    def test(v: TargetView) -> Evidence:
        hits = [o for o in v.resolvers(control=False) if o.details.get(flag)]
        return hits or None
    return test


def _control_answers(v: TargetView) -> set[str]:
    return {a for o in v.resolvers(control=True) for a in o.details.get("answers") or []}


def _suspect_answer(v: TargetView) -> tuple[Observation, str] | None:
    """The vantage's answer (the address later steps used) when it is not known to be the
    service's: outside its address space, or, for a service that publishes none (Signal),
    different from every control resolver's answer."""
    dns = v.primary("dns")
    if dns is None or dns.role == "control" or not dns.details.get("answers"):
        return None
    address: str = dns.details["answers"][0]
    if v.target.address_space:
        return (dns, address) if address in dns.details.get("outside_space", []) else None
    controls = _control_answers(v)
    return (dns, address) if controls and address not in controls else None


def _dns_outside_space(v: TargetView) -> Evidence:
    suspect = _suspect_answer(v)
    later = [] if suspect is None else [
        o for o in v.observations
        if o.check != "dns" and o.primary and o.address == suspect[1] and not o.ok]
    return [suspect[0], *later] if suspect is not None and later else None


def _authenticates(check: str) -> bool:
    """A step whose success proves the service itself answered (a verified certificate, an
    MTProto answer with our nonce); a TCP connect proves nothing about who answered."""
    spec = spec_of(check)
    return spec is not None and spec.authenticates


def _dns_outside_unverified(v: TargetView) -> Evidence:
    """A suspect answer that no step could prove to be the service (a plan of dns and tcp
    only: WhatsApp's chat endpoints), which the control resolvers did not give either."""
    suspect, controls = _suspect_answer(v), _control_answers(v)
    if suspect is None or not controls or suspect[1] in controls:
        return None
    proven = [o for o in v.observations if _authenticates(o.check) and o.address == suspect[1]]
    return None if proven else [suspect[0]]


def _dns_outside_unverified_list(v: TargetView) -> Evidence:
    """The same answer, where the address space itself is a list nobody verified (a
    third-party aggregation of an AS's prefixes): being outside it proves nothing alone."""
    return None if v.target.space_verified else _dns_outside_unverified(v)


def _dns_blocked(v: TargetView) -> Evidence:
    dns = v.failed("dns", DNS_ERRORS)
    answered = [o for o in v.resolvers(control=True) if o.ok and o.details.get("answers")]
    return [dns, *answered] if dns is not None and dns.role != "control" and answered else None


def _dns_nowhere(v: TargetView) -> Evidence:
    if v.target.domain is None:
        return None
    lookups = [o for o in v.observations if o.check == "dns"]
    if not lookups:
        return []  # no resolver to ask: nothing can be said
    return lookups if all(not o.ok for o in lookups) else None


def _blockpage(v: TargetView) -> Evidence:
    http = v.primary("http")
    return [http] if http is not None and http.details.get("blockpage") else None


def _failed(check: str, among: Collection[str] | None = None) -> Callable[[TargetView], Evidence]:
    def test(v: TargetView) -> Evidence:
        obs = v.failed(check, among)
        return [obs] if obs is not None else None
    return test


def _sni_differential(v: TargetView) -> Evidence:
    tls = v.failed("tls")
    neutral = v.differential("tls")
    if tls is None or tls.failure in F.CERTIFICATE_FAILURES or neutral is None:
        return None
    return [tls, neutral] if neutral.ok else None


def _tls_reset_any_sni(v: TargetView) -> Evidence:
    tls = v.failed("tls", RESETS | {F.EOF_ERROR})
    neutral = v.differential("tls")
    if tls is None or neutral is None or neutral.failure not in RESETS | {F.EOF_ERROR}:
        return None
    return [tls, neutral]


def _mtproto_transport_error(v: TargetView) -> Evidence:
    obs = v.failed("mtproto", {F.MTPROTO_UNEXPECTED_RESPONSE})
    return [obs] if obs is not None and "transport_error" in obs.details else None


def _obfuscated_filtered(v: TargetView) -> Evidence:
    """The apps' transport (obfuscated2) failed where the plain transport got resPQ."""
    obfuscated = v.failed("mtproto")
    plain = v.differential("mtproto")
    if obfuscated is None or plain is None or not plain.ok:
        return None
    http = v.differential("http")
    return [obfuscated, plain, *([http] if http is not None else [])]


def _plain_only_filtered(v: TargetView) -> Evidence:
    """Every primary check worked (the apps' transport too), only the plain one failed."""
    plain = v.differential("mtproto")
    everything = _all_ok(v)
    if plain is None or plain.ok or everything is None or v.primary("mtproto") is None:
        return None
    return [*everything, plain]


def _mtproto_vs_http(mtproto_failures: Collection[str], http_ok: bool) -> Callable[[TargetView], Evidence]:
    """MTProto failed this way, and the plain-HTTP differential did (not) get an answer.
    The plain MTProto transport, when it ran, failed too (else an earlier rule holds)."""
    def test(v: TargetView) -> Evidence:
        mtproto = v.failed("mtproto", mtproto_failures)
        differential = v.differential("http")
        if mtproto is None or differential is None:
            return None
        if http_ok != differential.ok:
            return None
        if not http_ok and differential.failure not in mtproto_failures:
            return None
        plain = v.differential("mtproto")
        return [mtproto, differential, *([plain] if plain is not None else [])]
    return test


def _proxy_sni(v: TargetView) -> Evidence:
    """A fake-TLS proxy failed with its SNI and answered with the neutral one."""
    proxy = v.failed("mtproxy")
    neutral = v.differential("mtproxy")
    if proxy is None or proxy.failure == F.UNKNOWN_FAILURE or neutral is None or not neutral.ok:
        return None
    return [proxy, neutral]


def _throttled(v: TargetView) -> Evidence:
    http = v.primary("http")
    reference = v.baseline.throughput_bps
    if http is None or not http.ok or not reference:
        return None
    slow = http.details.get("throughput_bps", 0) < THROTTLE_RATIO * reference
    return [http] if http.details.get("cut_by_time") and slow else None


def _loss_shared(v: TargetView) -> Evidence:
    """Every failure of the target is a timeout, and neither the target's own timeouts nor
    the service's in this family stand out from the baseline's (probe.judge.vantage)."""
    if v.loss is None or v.target.messenger is None or v.baseline_blocked():
        return None  # a blocked baseline measures the censor, not the vantage's network
    failed = [o for o in v.observations if o.primary and not o.ok]
    if not failed or any(a.failure not in LOST for o in failed for a in o.tries()
                         if a.failure is not None):
        return None
    family = v.target.family
    p_target = v.loss.target_p(family, lost_counts(failed))
    p_service = v.loss.service_p(v.target.messenger, family)
    if p_target is None or p_service is None:
        return None
    if p_target < v.loss.alpha_target or p_service < ALPHA_SERVICE:
        return None
    if _troubled_stands_out(v, _connects(v)):
        return None  # retransmissions say the loss is the service's, not the vantage's
    return failed


def _connects(v: TargetView) -> list[Observation]:
    """The target's connect-level primary steps: the attempts the loss tests weigh."""
    return [o for o in v.observations if o.primary and connect_level(o.check)]


def _troubled_stands_out(v: TargetView, mine: list[Observation]) -> bool:
    """The service's attempts in the target's family timed out or were retransmitted far
    more often than the baseline's handshakes (p < ALPHA_SERVICE), and this target's did
    too (p < TARGET_SHARE_ALPHA): probe.judge.vantage.troubled_counts."""
    if v.loss is None or v.target.messenger is None:
        return False
    family = v.target.family
    p_service = v.loss.troubled_service_p(v.target.messenger, family)
    if p_service is None or p_service >= ALPHA_SERVICE:
        return False
    p_target = v.loss.troubled_target_p(family, troubled_counts(mine))
    return p_target is not None and p_target < TARGET_SHARE_ALPHA


def _lost_unexplained(v: TargetView) -> bool:
    """Timeouts a deterministic filter does not make: a connect that timed out (and a later
    one did not), a step that timed out and then succeeded, or a step whose differential
    timed out as well. (A filter on a name or a protocol times out every attempt while
    its differential passes.)"""
    for obs in v.observations:
        if not obs.primary or not connect_level(obs.check):
            continue
        lost = [a for a in obs.tries() if a.failure in LOST]
        if not lost:
            continue
        if obs.check == "tcp" or obs.ok:
            return True
        differential = v.differential("http" if obs.check == "mtproto" else obs.check)
        if differential is not None and differential.failure in LOST:
            return True
    return False


def _timeouts_concentrated(v: TargetView, mine: list[Observation]) -> bool:
    """The service's connect-level attempts in this family time out far more often than
    the baseline's, and this target's did too, in a way no filter on names explains."""
    assert v.loss is not None and v.target.messenger is not None
    family = v.target.family
    p_service = v.loss.service_p(v.target.messenger, family)
    if p_service is None or p_service >= ALPHA_SERVICE or not _lost_unexplained(v):
        return False
    p_target = v.loss.target_p(family, lost_counts(mine))
    return p_target is not None and p_target < TARGET_SHARE_ALPHA


def _retransmitted(obs: Observation) -> bool:
    """A step that succeeded but had to retransmit, wait a retransmission timer or try
    again after a timeout for it: loss no deterministic filter makes (a filter on a name or
    a protocol drops every try)."""
    return obs.ok and troubled_counts([obs])[0] > 0


def _loss_concentrated(v: TargetView) -> Evidence:
    """Packets to the service are lost: its attempts in this family time out (or time out or
    need a retransmission) far more often than the baseline's handshakes, this target's
    too, intermittently. A transfer cut below the baseline's rate is left to the throttling
    rule, which measured the squeeze itself."""
    if v.loss is None or v.target.messenger is None:
        return None
    mine = _connects(v)
    if not _timeouts_concentrated(v, mine) and not (
            any(_retransmitted(o) for o in mine) and _troubled_stands_out(v, mine)
            and not _throttled(v)):
        return None
    family = v.target.family
    return [o for o in mine if o.failed_attempts()[0] or troubled_counts([o])[0]] + [
        o for o in v.baseline_observations if o.address is not None
        and (":" in o.address) == (family == 6)]


def _throttled_degraded(v: TargetView) -> Evidence:
    return _throttled(v) if v.loss is not None and v.loss.degraded else None


def _sni_reset_then_drop(v: TargetView) -> Evidence:
    """Residual censorship: the handshake with the service's name was reset, and every
    later attempt to the same address and port was silently dropped; the neutral name got
    through before the trigger (or was swallowed by the same drop after it)."""
    tls = v.failed("tls")
    neutral = v.differential("tls")
    if tls is None or neutral is None:
        return None
    tries = tls.tries()
    if (len(tries) < 2 or tries[0].failure not in RESETS | {F.EOF_ERROR}
            or any(t.failure not in LOST for t in tries[1:])):
        return None
    if neutral.ok or (neutral.failure in LOST and neutral.started >= tries[0].started):
        return [tls, neutral]
    return None


def _residual_drop(apps_transport: bool) -> Callable[[TargetView], Evidence]:
    """Every failure of a DC target is a residual drop at its address and port (or the
    payload that triggered it), and the apps' transport did not get through: triggered by
    obfuscated2 (`apps_transport`), the filter keys on the apps' protocol; triggered by
    another transport, the apps' was swallowed by the drop before it could be judged."""
    def test(v: TargetView) -> Evidence:
        if not any(s.check == "mtproto" for s in v.target.steps):
            return None
        mtproto = v.primary("mtproto")
        if mtproto is not None and mtproto.ok:
            return None
        residual = v.residual()
        if residual is None or (residual.transport == "obfuscated2") != apps_transport:
            return None
        failed = R.explained(v.observations, residual)
        if failed is None:
            return None
        before = [o for o in v.observations if o.ok and o.role == "differential"
                  and o.started < residual.triggered]  # a transport that answered before it
        trigger = [residual.trigger] if residual.trigger is not None and not any(
            o is residual.trigger for o in failed) else []
        return [*failed, *trigger, *before]
    return test


def _residual_sequence(v: TargetView) -> str:
    residual = v.residual()
    return residual.sentence() if residual is not None else ""


def _all_ok(v: TargetView) -> Evidence:
    primaries = [o for o in v.observations if o.primary]
    return primaries if primaries and all(o.ok for o in primaries) else None


RULES: tuple[Rule, ...] = (
    Rule("baseline_unreachable", "vantage_offline",
         "no baseline site of this address family answers, and nothing outside the vantage's "
         "network proved connectivity in this family (no verified TLS handshake, MTProto answer "
         "or authenticated DoH answer): the vantage's own network is down, nothing can be said "
         "about the service",
         _offline(baseline_answered=False)),
    Rule("connectivity_unproven", "vantage_offline",
         "baseline sites of this address family answer, but nothing outside the vantage's "
         "network proved connectivity (a bare TCP connect, or an answer from inside the "
         "vantage's own network, proves nothing: a transparent proxy or captive portal accepts "
         "every connection): nothing can be said about the service",
         _offline(baseline_answered=True)),
    Rule("international_cut", "vantage_offline",
         "the vantage is cut off from abroad (a shutdown with a domestic whitelist): its domestic "
         "baseline sites answer, while every international baseline site, every control resolver "
         "and every messenger fail, and nothing abroad proved connectivity; no messenger is "
         "called blocked from a vantage that reaches nothing abroad",
         _cut, _cut_sites),
    Rule("dns_fingerprint", "dns_injection",
         "a resolver answered a known censorship address (fingerprint)", _dns_flag("fingerprints")),
    Rule("dns_bogon", "dns_injection",
         "a resolver answered a private or reserved address", _dns_flag("bogons")),
    Rule("dns_race", "dns_injection",
         "two different replies came back to one UDP query (an on-path injector raced the resolver)",
         _dns_flag("late_answers")),
    Rule("dns_outside_space", "dns_injection",
         "the answer is outside the service's address space (for a service that publishes none: "
         "unlike every control resolver's answer) and the service's checks fail there",
         _dns_outside_space),
    Rule("dns_outside_unverified_list", "inconclusive",
         "the answer is outside the service's address space, unlike every control resolver's "
         "answer, and no step of the plan can prove the service there, but the prefix list "
         "behind that space is not verified (`# verified: no`): a regional address it lacks "
         "looks the same, so this alone is not called injection",
         _dns_outside_unverified_list),
    Rule("dns_outside_space_unverified", "dns_injection",
         "the answer is outside the service's address space, unlike every control resolver's "
         "answer, and no step of the plan can prove the service there (no TLS, no MTProto)",
         _dns_outside_unverified),
    Rule("loss_shared_with_baseline", "inconclusive",
         "every failure of the target is a timeout, at a rate the vantage's baseline shares "
         "(one-sided Fisher exact test against the baseline's handshakes: p >= "
         f"{ALPHA_TARGET:g} / the round's targets for the target, p >= {ALPHA_SERVICE:g} for the "
         "service in this family): the "
         "vantage's own network is lossy (degraded), which is no evidence of a block",
         _loss_shared, lambda v: _loss_comparison(v, failed_only=True),
         lambda v: _loss_figures(v)),
    Rule("dns_failure_control_ok", "dns_blocking",
         "the vantage's resolver failed while a control resolver answered", _dns_blocked),
    Rule("dns_no_address", "inconclusive",
         "no resolver, control included, gave an address in this family", _dns_nowhere),
    Rule("http_blockpage_fingerprint", "http_blockpage",
         "the HTTP answer matches a known blockpage", _blockpage),
    Rule("mtproto_silenced_then_drop", "protocol_filtering",
         "the apps' obfuscated2 transport connected and its first payload was silenced or reset, "
         "then every connect to the same address and port was dropped (a residual drop, up to "
         f"{R.RESIDUAL_SECONDS:.0f} s after the trigger, {R.WINDOW_SLACK:.0f} s of slack, seen in this round "
         "or remembered from an "
         "earlier one): a filter on the apps' protocol, not on the address, which drops from the "
         "first SYN on",
         _residual_drop(apps_transport=True), _residual_sequence),
    Rule("residual_drop_other_transport", "inconclusive",
         "every connect to the address and port was dropped after another transport's first "
         "payload there (the plain MTProto transport or HTTP) was silenced or reset: a residual "
         "drop swallowed the apps' transport before it could be judged",
         _residual_drop(apps_transport=False), _residual_sequence),
    Rule("connect_timeout", "ip_blocking",
         "TCP connect timed out or the address is unreachable (a router's ICMP or ICMPv6 "
         "unreachable, administratively prohibited included)", _failed("tcp", TIMEOUTS)),
    Rule("connect_reset", "tcp_reset",
         "TCP connect was reset or refused", _failed("tcp", RESETS)),
    Rule("connect_forbidden_locally", "inconclusive",
         "the vantage's own host refused to send the connect (EPERM: a local firewall), "
         "which says nothing about the path", _failed("tcp", {F.OPERATION_NOT_PERMITTED})),
    Rule("loss_concentrated_on_service", "ip_blocking",
         "the service's connect-level attempts in this family time out far more often than the "
         "baseline's handshakes, or (unless a transfer of the target measured a throttle) those "
         "that got their answer in the end time out, need a TCP retransmission the peer did not "
         "report as a duplicate, or wait a retransmission timer longer than a later "
         "attempt's success took, far more often than the baseline's handshakes time out or are "
         f"retransmitted (one-sided Fisher exact test, p < {ALPHA_SERVICE:g}), and this "
         f"target's do too (p < {TARGET_SHARE_ALPHA:g}), intermittently or with its "
         "differential as well: packets to the service are being dropped",
         _loss_concentrated, lambda v: _loss_comparison(v, failed_only=False),
         lambda v: _loss_figures(v)),
    Rule("tls_certificate_invalid", "tls_interception",
         "the TLS peer showed a certificate that does not chain to a trusted root or match the name",
         _failed("tls", F.CERTIFICATE_FAILURES)),
    Rule("sni_reset_then_drop", "sni_filtering",
         "the handshake with the service's name was reset, then every further attempt to the "
         "same address and port was dropped (residual censorship), while a neutral name got "
         "through before the trigger",
         _sni_reset_then_drop, lambda v: _attempt_sequence(v.failed("tls"))),
    Rule("sni_differential", "sni_filtering",
         "TLS with the service's name failed while a neutral name to the same address succeeded",
         _sni_differential),
    Rule("tls_reset_any_sni", "tcp_reset",
         "TLS was reset whatever the name (the address, not the name, is filtered)",
         _tls_reset_any_sni),
    Rule("tls_failed", "inconclusive",
         "TLS failed with the service's name and with a neutral one", _failed("tls")),
    Rule("mtproto_transport_error", "inconclusive",
         "the data centre answered an MTProto transport error (it speaks MTProto, but refused)",
         _mtproto_transport_error),
    Rule("mtproto_obfuscated_filtered", "protocol_filtering",
         "the apps' obfuscated2 transport fails while the plain transport gets resPQ from the same "
         "address: a filter on random-looking traffic blocks the apps", _obfuscated_filtered),
    Rule("mtproto_reset_any_protocol", "tcp_reset",
         "TCP connects, but MTProto and plain HTTP alike are reset right after the first bytes",
         _mtproto_vs_http(RESETS | {F.EOF_ERROR}, http_ok=False)),
    Rule("mtproto_silenced", "protocol_filtering",
         "TCP connects and plain HTTP gets an answer, but the MTProto handshake gets none",
         _mtproto_vs_http({F.GENERIC_TIMEOUT}, http_ok=True)),
    Rule("mtproto_reset", "protocol_filtering",
         "TCP connects and plain HTTP gets an answer, but the MTProto handshake is reset or closed",
         _mtproto_vs_http(RESETS | {F.EOF_ERROR}, http_ok=True)),
    Rule("mtproto_tampered", "protocol_filtering",
         "TCP connects, but the MTProto handshake gets an answer that is not resPQ with our nonce",
         _failed("mtproto", {F.MTPROTO_UNEXPECTED_RESPONSE})),
    Rule("mtproto_failed", "inconclusive",
         "the MTProto handshake failed, and so did plain HTTP to the same address",
         _failed("mtproto")),
    Rule("noise_certificate_invalid", "tls_interception",
         "TCP connects and the peer answers WhatsApp's Noise handshake, but its certificate chain "
         "does not lead to WhatsApp's root key or does not name the key it used: a server that "
         "cannot prove WhatsApp's identity (an interceptor)",
         _failed("noise", {F.NOISE_INVALID_CERTIFICATE})),
    Rule("noise_reset", "tcp_reset",
         "TCP connects, but the connection is reset or closed right after WhatsApp's prologue "
         "and ClientHello", _failed("noise", RESETS | {F.EOF_ERROR})),
    Rule("noise_silenced", "protocol_filtering",
         "TCP connects, but WhatsApp's prologue and ClientHello get no answer",
         _failed("noise", {F.GENERIC_TIMEOUT})),
    Rule("noise_tampered", "protocol_filtering",
         "TCP connects, but the answer to WhatsApp's prologue and ClientHello is not a ServerHello "
         "keyed to our ephemeral key (garbage, a blockpage, another protocol)",
         _failed("noise", {F.NOISE_UNEXPECTED_RESPONSE})),
    Rule("noise_failed", "inconclusive",
         "the WhatsApp Noise handshake failed in a way that says nothing about the network",
         _failed("noise")),
    Rule("mtproxy_sni_filtered", "sni_filtering",
         "the MTProxy fails with its fake-TLS SNI and relays resPQ with a neutral SNI", _proxy_sni),
    Rule("mtproxy_failed", "inconclusive",
         "TCP connects, but the MTProxy relays no resPQ (a filter cannot be told from a broken proxy "
         "or its link to Telegram: compare the control vantages)", _failed("mtproxy")),
    Rule("http_failed", "inconclusive", "the HTTP request failed without a blockpage", _failed("http")),
    Rule("throughput_low_degraded_vantage", "ok",
         "the service's transfer was slow, but so is the vantage's own network (degraded: "
         "loss or retransmissions on the baseline), so slowness says nothing about the service",
         _throttled_degraded),
    Rule("throughput_below_baseline", "throttling",
         f"the service's transfer was cut by the time limit, below {THROTTLE_RATIO:.0%} of the "
         "baseline's throughput",
         _throttled),
    Rule("mtproto_plain_only_filtered", "ok",
         "the apps' obfuscated2 transport gets resPQ; only the plain transport (fixed first bytes, "
         "which no app sends) fails: the apps are not affected", _plain_only_filtered),
    Rule("all_checks_ok", "ok", "every check of the target succeeded", _all_ok),
    Rule("unclassified", "inconclusive", "no rule matched these observations", lambda v: []),
)


#: The rules whose verdict carries the residual drop's sequence (Verdict.residual).
RESIDUAL_RULES = frozenset({"mtproto_silenced_then_drop", "residual_drop_other_transport"})


def _loss_comparison(v: TargetView, failed_only: bool) -> str:
    if v.loss is None or v.target.messenger is None:
        return ""
    family = v.target.family
    mine = [o for o in v.observations if o.primary
            and (not o.ok if failed_only else connect_level(o.check))]
    ref = v.loss.baseline.get(family, (0, 0))
    service = v.loss.service.get((v.target.messenger, family), (0, 0))
    ref_retried = v.loss.baseline_retried.get(family, (0, 0))
    troubled = v.loss.service_troubled.get((v.target.messenger, family), (0, 0))
    return (f"target: {describe(lost_counts(mine), ref)}, "
            f"{describe_troubled(troubled_counts(_connects(v)), ref_retried)}; "
            f"the service in IPv{family}: {describe(service, ref)}, "
            f"{describe_troubled(troubled, ref_retried)}")


def _p(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


def _median_rtt(observations: list[Observation]) -> float | None:
    rtts = [float(f["tcp_rtt_seconds"]) for o in observations
            for f in o.details.get("samples", [o.details]) if f.get("tcp_rtt_seconds")]
    return round(statistics.median(rtts), 6) if rtts else None


def _loss_figures(v: TargetView) -> dict[str, Any]:
    """The loss tests' figures for the verdict's details: per attempt, timed out and
    "troubled" (timed out or retransmitted, probe.judge.vantage.troubled_counts) for the
    target, for the service in its family and for the baseline's handshakes, the Fisher p
    of each comparison, and the handshake RTTs (the kernel's) of the target and baseline."""
    if v.loss is None or v.target.messenger is None:
        return {}
    family, messenger = v.target.family, v.target.messenger
    mine = _connects(v)
    lost, tries = lost_counts(mine)
    bad, tried = troubled_counts(mine)
    service, troubled = (v.loss.service.get((messenger, family), (0, 0)),
                         v.loss.service_troubled.get((messenger, family), (0, 0)))
    ref, retried = v.loss.baseline.get(family, (0, 0)), v.loss.baseline_retried.get(family, (0, 0))
    baseline = [o for o in v.baseline_observations if family_of(o.address) == family
                and connect_level(o.check)]
    return {"loss": {
        "family": family,
        "target": {"timed_out": lost, "attempts": tries, "troubled": bad,
                   "troubled_attempts": tried,
                   "p_timed_out": _p(v.loss.target_p(family, (lost, tries))),
                   "p_troubled": _p(v.loss.troubled_target_p(family, (bad, tried))),
                   "rtt_seconds": _median_rtt(mine)},
        "service": {"timed_out": service[0], "attempts": service[1], "troubled": troubled[0],
                    "troubled_attempts": troubled[1],
                    "p_timed_out": _p(v.loss.service_p(messenger, family)),
                    "p_troubled": _p(v.loss.troubled_service_p(messenger, family))},
        "baseline": {"timed_out": ref[0], "handshakes": ref[1], "retried": retried[0],
                     "rtt_seconds": _median_rtt(baseline)},
        "alpha": {"service": ALPHA_SERVICE, "target": TARGET_SHARE_ALPHA,
                  "target_shared": v.loss.alpha_target},
    }}


def _attempt_sequence(obs: Observation | None) -> str:
    if obs is None:
        return ""
    return "attempts: " + " -> ".join(t.failure or "ok" for t in obs.tries())


def _steps(evidence: list[Observation]) -> str:
    return "; ".join(
        " ".join(filter(None, (o.check, o.address and f"{o.address}:{o.port}", o.failure or "ok")))
        for o in evidence[:4])


def _reason(rule: Rule, evidence: list[Observation], blocked_baseline: list[Observation]) -> str:
    steps = _steps(evidence)
    reason = rule.condition + (f" ({steps})" if steps else "")
    if blocked_baseline:
        reason += (f"; the baseline of this family is blocked ({_steps(blocked_baseline)}), "
                   "but other answers from outside prove the vantage online")
    return reason


def classify_target(view: TargetView) -> Verdict:
    """The first matching rule's verdict. When the family's baseline is blocked, its failed
    observations join the evidence of whatever verdict the target gets, so that a block
    reported beside a blocked baseline says so."""
    blocked_baseline = view.baseline_blocked()
    for rule in RULES:
        evidence = rule.test(view)
        if evidence is not None:
            assert view.target.messenger is not None
            reason = _reason(rule, evidence, blocked_baseline)
            if rule.explain is not None:
                reason += f"; {rule.explain(view)}"
            residual = view.residual() if rule.id in RESIDUAL_RULES else None
            # interned: targets that share a cause share its text (10,000 DCs behind one
            # unproven vantage held 10,000 copies of one 365-byte reason: 3.6 MB)
            return Verdict(view.target.messenger, view.target.name, rule.verdict, rule.id,
                           sys.intern(reason), [*evidence, *blocked_baseline],
                           circumvention=view.target.circumvention,
                           residual=residual.to_json() if residual is not None else None,
                           details=rule.figures(view) if rule.figures is not None else {})
    raise AssertionError("the last rule always matches")


def classify_round(result: RoundDraft,
                   residuals: Mapping[R.Key, R.Residual] | None = None) -> list[Verdict]:
    """One verdict per planned target, in plan order. `residuals`: the round's residual
    drops, earlier rounds' included (probe.judge.residual.find); None: this round's alone."""
    by_target: dict[tuple[str | None, str], list[Observation]] = defaultdict(list)
    for obs in result.observations:
        by_target[(obs.messenger, obs.target)].append(obs)
    baseline_obs = [o for o in result.observations if o.messenger is None]
    if residuals is None:
        residuals = R.find(result.observations)
    # a residual drop's timeouts are the filter's answer, not loss: the loss test weighs the rest
    weighed = [o for o in result.observations if (o.address, o.port) not in residuals] \
        if residuals else list(result.observations)
    loss = LossContext.of(weighed, result.network.degraded, len(result.targets))
    return [
        classify_target(TargetView(t, by_target[(t.messenger, t.name)], result.baseline,
                                   baseline_obs, result.network, loss, residuals))
        for t in result.targets
    ]


#: Figures measured for a rule, printed beside it in docs/classifier.md (not in verdicts):
#: `python -m tests.unit.test_loss` prints them; tests/unit/test_loss.py asserts bounds.
MEASURED = {
    "loss_concentrated_on_service": (
        "Measured (tests/unit/test_loss.py, the lab's 32-target plan simulated): false blocking "
        "verdicts on clean and uniformly lossy networks, the service's attempts timing out and "
        "retransmitted as often as the baseline's handshakes (timeouts 0-50%, retransmissions "
        "0-60% of attempts, 8 levels x 1,000 rounds) or its MTProto exchanges retransmitted "
        "more often (4 levels x 1,000 rounds): 0 in 384,000 target-rounds (fewer than 1 in "
        "128,000 at 95% confidence). Targeted loss (30% / 50% of the packets to the DCs, "
        "baseline clean): a blocking verdict on the DCs in 99.1% / 100% of 1,000 simulated "
        "rounds; in the lab (LT30-*, LT50-*: 10 rounds of `probe run` each, each family "
        "alone): 10 of 10."),
}


def rules_markdown() -> str:
    """The rule table as Markdown: docs/classifier.md is this, generated."""
    lines = [
        "# The classifier's rules",
        "",
        "Generated by `probe rules --format markdown` from `probe/judge/classify.py`; do not edit.",
        "Per target and round, the rules are read top to bottom and the first that holds gives",
        "the verdict. Every verdict names its rule and the observations behind it.",
        "",
        "| # | rule | verdict | condition |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | `{r.id}` | `{r.verdict}` | {r.condition}"
              + (f" *{MEASURED[r.id]}*" if r.id in MEASURED else "") + " |"
              for n, r in enumerate(RULES, 1)]
    return "\n".join(lines) + "\n"
