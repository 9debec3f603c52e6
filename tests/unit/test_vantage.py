"""probe.judge.vantage on constructed observations: what proves the outside world answered."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from probe.judge.vantage import EVIDENCE_PER_FAMILY, baseline_up, connectivity, outside, proof, quality
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
