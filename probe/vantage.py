"""The vantage's own network: is it online, and does its baseline answer?

A failed baseline used to mean "offline", and every target then said `vantage_offline`. A
censor that also blocked the baseline sites (public resolvers are blocked as a matter of
course) hid its block that way. So "online" is now a matter of proof, collected from the
whole round, per address family:

- a verified TLS handshake (baseline site, service endpoint) with an address outside the
  vantage's own network: a transparent proxy or captive portal accepts every connection,
  but cannot show a certificate that chains and matches the name we asked for;
- a real protocol answer: MTProto resPQ echoing our random nonce;
- an authenticated resolver answer: DNS over HTTPS whose certificate verified (the round's
  session verifies), from a resolver named by address (its family is then known).

Nothing else counts: a TCP connect, an HTTP answer, a plain DNS answer (the vantage's own
resolver answers when nothing beyond it does) or an unverified handshake prove nothing.
When the baseline fails while such proof exists, the baseline itself is blocked: the
targets are still judged by mechanism (probe.classify), and the state is reported.

The baseline's rule (`baseline.require`): a family's baseline answers when `any` of its
sites does (the default: one blocked or retired site must not flip the vantage), or when a
`majority` does (more than half: for a vantage with many sites, where one answering site
should not hide that most are blocked).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from probe.observation import Observation

if TYPE_CHECKING:
    from probe.catalog import Target
    from probe.observation import RoundResult
    from probe.schema import IPNetwork

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
    """(address, why) if this observation proves that something outside answered."""
    if obs.check == "tls" and obs.ok and obs.role != "differential" and obs.address:
        # primary or control: verified against the target's anchors (differentials are not)
        name = obs.details.get("sni") or obs.target
        return obs.address, f"verified TLS {obs.address}:{obs.port} ({name})"
    if obs.check == "mtproto" and obs.ok and obs.address:
        return obs.address, f"MTProto resPQ with our nonce from {obs.address}:{obs.port} ({obs.target})"
    if obs.check == "dns" and obs.details.get("protocol") == "doh" and "rcode" in obs.details:
        # a parsed reply over verified HTTPS, whatever its rcode: the resolver answered
        address = _doh_address(obs)
        if address is not None:
            return address, f"authenticated DoH answer from {obs.details['resolver_address']}"
    return None


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


def judge(result: RoundResult, sites: Sequence[Target]) -> None:
    """Fill the round's `network` record from all of its observations: online (per family
    and overall), the proofs, and whether the baseline is blocked (a family with baseline
    sites that did not answer while that family is proven online)."""
    config = result.config
    own = [str(a) for a in (config.vantage.source_address, config.vantage.source_address6) if a]
    proofs = connectivity(result.observations, config.resolvers.public_networks, own)
    network = result.network
    network.online_ipv4, network.online_ipv6 = bool(proofs[4]), bool(proofs[6])
    network.online = network.online_ipv4 or network.online_ipv6
    network.online_evidence = [p for f in FAMILIES for p in proofs[f]]
    configured = {t.family for t in sites}
    network.baseline_blocked = any(
        f in configured and not result.baseline.family_ok(f) and network.family_online(f)
        for f in FAMILIES)
