"""probe.judge.vantage on constructed observations: what proves the outside world answered."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from probe.inputs.catalog import Target
from probe.judge.vantage import (
    EVIDENCE_PER_FAMILY,
    baseline_up,
    connectivity,
    cut_off,
    judge,
    outside,
    proof,
    quality,
)
from probe.model import failures as F
from probe.model.observation import Attempt, Observation, Role

LAB = (ipaddress.ip_network("198.18.0.0/15"),)


def seen(check: str, failure: str | None = None, address: str | None = "149.154.167.51",
         role: Role = "primary", **details: Any) -> Observation:
    return Observation("telegram", "t", check, "op", failure, address, 443, details=details,
                       role=role)


def doh(url: str, **details: Any) -> Observation:
    return seen("dns", None, None, "control", protocol="doh", resolver_address=url, **details)


@pytest.mark.parametrize(("obs", "proves"), [
    (seen("tls", sni="web.telegram.org"), True),            # verified handshake
    (seen("tls", role="control"), True),                     # a baseline site's
    (seen("tls", role="differential"), False),               # neutral SNI: unverified
    (seen("tls", F.SSL_UNKNOWN_AUTHORITY), False),           # an interceptor's certificate
    (seen("mtproto"), True),                                 # resPQ with our nonce
    (seen("mtproto", F.MTPROTO_UNEXPECTED_RESPONSE), False), # a proxy's HTTP 400
    (seen("mtproto", role="differential"), True),            # plain intermediate: still resPQ
    (seen("mtproxy"), True),                                 # relayed by an MTProxy
    (seen("tcp"), False),                                    # a bare connect
    (seen("http", status=200), False),                       # any proxy answers HTTP
    (seen("dns", role="primary", protocol="udp", rcode="NOERROR"), False),  # plain DNS
    (doh("https://1.1.1.1/dns-query", rcode="NOERROR"), True),
    (doh("https://1.1.1.1/dns-query", rcode="NXDOMAIN"), True),  # authenticated, whatever it says
    (doh("https://1.1.1.1/dns-query"), False),               # no reply parsed (TLS failed)
    (doh("https://dns.example/dns-query", rcode="NOERROR"), False),  # family unknown
])
def test_what_proves_connectivity(obs: Observation, proves: bool) -> None:
    assert (proof(obs) is not None) == proves


def test_inside_the_vantages_own_network_proves_nothing() -> None:
    assert outside("149.154.167.51") and outside("2001:67c:4e8::1")
    assert not outside("192.168.1.1") and not outside("127.0.0.1") and not outside("fe80::1")
    assert not outside("198.18.2.10") and outside("198.18.2.10", LAB)  # a lab declares it public
    assert not outside("149.154.167.51", own=["149.154.167.51"])  # the vantage itself
    assert not outside("not-an-address")


def test_connectivity_is_per_family_and_bounded() -> None:
    observations = [seen("mtproto", address=f"149.154.167.{i}") for i in range(10)]
    observations += [seen("tls", address="192.168.1.1"), doh("https://[2606:4700::1111]/dns-query",
                                                           rcode="NOERROR")]
    proofs = connectivity(observations)
    assert len(proofs[4]) == EVIDENCE_PER_FAMILY
    assert proofs[6] == ["authenticated DoH answer from https://[2606:4700::1111]/dns-query"]
    assert connectivity([seen("tls", address="192.168.1.1")]) == {4: [], 6: []}


@pytest.mark.parametrize(("sites", "require", "v4", "v6"), [
    ([(4, True), (4, False), (4, False)], "any", True, False),
    ([(4, True), (4, False), (4, False)], "majority", False, False),
    ([(4, True), (4, True), (4, False)], "majority", True, False),
    ([(4, True), (4, False)], "majority", False, False),  # half is not a majority
    ([(6, True)], "majority", False, True),
    ([], "any", False, False),                             # no site: never up
])
def test_baseline_rule(sites: list[tuple[int, bool]], require: str, v4: bool, v6: bool) -> None:
    assert baseline_up(sites, require) == {4: v4, 6: v6}


def test_quality_counts_each_handshake_that_retransmitted_or_timed_out_once() -> None:
    """Downlink-only loss shows as handshakes that needed a resend, not as segment share:
    4 handshakes of 6 segments, one resent a segment, one timed out (after a resend)."""
    sample = seen("tls", None, "198.18.2.10", "control", samples=[
        {"tcp_segments_out": 6, "tcp_retransmits": 0},
        {"tcp_segments_out": 6, "tcp_retransmits": 1},
        {"tcp_segments_out": 6, "tcp_retransmits": 0},
        {"tcp_retransmits": 1}])
    sample.attempts = [Attempt(None, 0, 0.01), Attempt(None, 0, 0.2), Attempt(None, 0, 0.01),
                       Attempt(F.GENERIC_TIMEOUT, 0, 2.0)]
    measured = quality([sample])
    assert measured.loss_ratio == 0.25
    assert measured.retransmit_ratio == round(2 / 18, 4)
    assert measured.retried_ratio == 0.5  # the timed-out one counted once
    assert measured.degraded
    clean = seen("tls", None, "198.18.2.10", "control", samples=[{"tcp_segments_out": 6}] * 20)
    clean.attempts = [Attempt(None, 0, 0.01)] * 20
    assert quality([clean]).retried_ratio == 0.0 and not quality([clean]).degraded


# ---------------------------------------------------------------- a shutdown (issue 19)

def shutdown(**changes: Any) -> tuple[list[Observation], dict[str, bool]]:
    """A round in a shutdown with a domestic whitelist: the domestic site's verified
    handshake answered, the international site, the control resolvers (plain and DoH) and
    the messenger timed out; the vantage's own resolver answered."""
    observations = [
        Observation(None, "bank", "tls", "op", None, "198.18.1.44", 443, role="control",
                    details={"sni": "bank.example"}),
        Observation(None, "abroad", "tls", "op", F.GENERIC_TIMEOUT, "198.18.2.10", 443,
                    role="control"),
        seen("dns", role="primary", protocol="udp", rcode="NOERROR", answers=["149.154.167.51"]),
        seen("dns", F.GENERIC_TIMEOUT, "198.18.3.53", "control", protocol="udp"),
        doh("https://198.18.3.43/dns-query") if not changes.get("doh_answers")
        else doh("https://198.18.3.43/dns-query", rcode="NOERROR"),
        seen("tcp", F.GENERIC_TIMEOUT),
    ]
    if changes.get("control_replies"):
        observations[3] = seen("dns", F.DNS_NXDOMAIN, "198.18.3.53", "control", protocol="udp",
                               rcode="NXDOMAIN")
    if changes.get("messenger_connects"):
        observations[5] = seen("tcp")
    sites = {"bank": not changes.get("domestic_fails"), "abroad": bool(changes.get("abroad_answers"))}
    return observations, sites


def test_a_shutdown_with_a_domestic_whitelist_is_a_cut() -> None:
    observations, sites = shutdown()
    assert cut_off(observations, sites, {"bank"}, LAB)
    # connectivity alone calls it online: the domestic site's handshake is proof
    assert connectivity(observations, LAB)[4] == ["verified TLS 198.18.1.44:443 (bank.example)"]


@pytest.mark.parametrize("change", ["abroad_answers", "doh_answers", "control_replies",
                                    "messenger_connects", "domestic_fails"])
def test_anything_abroad_answering_is_no_cut(change: str) -> None:
    """Each condition on its own: an international site, an authenticated DoH answer, any
    reply of a control resolver (an NXDOMAIN too), a messenger's bare TCP connect, or no
    domestic site answering, and it is not a cut (judged as before)."""
    observations, sites = shutdown(**{change: True})
    assert not cut_off(observations, sites, {"bank"}, LAB)


def test_no_domestic_site_configured_is_never_a_cut() -> None:
    observations, sites = shutdown()
    assert not cut_off(observations, sites, set(), LAB)
    assert not cut_off(observations, {"bank": True}, {"bank"}, LAB)  # no international site


def test_judge_names_the_cut_and_not_a_blocked_or_lossy_baseline() -> None:
    """require: majority with one domestic and one international site: the baseline fails,
    but a cut vantage's baseline is not "blocked" nor its network "degraded"."""
    from probe.model.observation import Baseline, RoundDraft, VantageIdentity

    observations, sites = shutdown()
    draft = RoundDraft(VantageIdentity("ir"), [], 0.0, observations=observations,
                       baseline=Baseline(ipv4=False))
    draft.network.baseline_sites = dict(sites)
    draft.network.degraded = True  # the international site's timeouts
    site = Target(messenger=None, name="abroad", group="baseline", endpoint="abroad", family=4,
                  port=443, address="198.18.2.10")
    judge(draft, [site], LAB, {"bank"})
    network = draft.network
    assert network.online and network.international_cut
    assert not network.baseline_blocked and not network.degraded
    assert network.state == "international_cut" and network.to_json()["state"] == "international_cut"
    judge(draft, [site], LAB, set())  # the same round without the domestic mark: blocked baseline
    assert not draft.network.international_cut and draft.network.baseline_blocked
    assert draft.network.state == "baseline_blocked"
