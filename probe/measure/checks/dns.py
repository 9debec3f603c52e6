"""DNS: ask every configured resolver for A or AAAA and keep every answer.

An on-path injector races the real resolver: its forged reply arrives first and the real
one follows. A stub resolver takes the first and never learns. So on UDP we keep the socket
open for `race_window` seconds after the first reply and record every further reply to the
same query; a second, different answer is proof of injection.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from probe.measure.checks.base import Env, ResolverSpec, Step
from probe.measure.wire.net import TCP_HEADERS, Stopwatch, count, count_udp
from probe.model import failures
from probe.model.observation import Observation, Role

MAX_UDP_REPLIES = 16  # replies we keep per query: a flood must not grow memory
MAX_UDP_DATAGRAMS = 256  # datagrams we parse per query: a flood must not burn the CPU
MAX_DOH_BYTES = 65535
# UDP queries per lookup, evenly spread over the timeout: glibc and systemd-resolved resend
# after a second or two; a probe that sends once reports every lost datagram as a block.
UDP_SENDS = 4


def system_resolvers(resolv_conf: str) -> list[ResolverSpec]:
    """The nameservers of resolv.conf, named system, system-2, ..."""
    try:
        resolver = dns.resolver.Resolver(filename=resolv_conf, configure=True)
    except (OSError, dns.exception.DNSException):
        return []
    specs = []
    for index, server in enumerate(resolver.nameservers):
        name = "system" if index == 0 else f"system-{index + 1}"
        specs.append(ResolverSpec(name, "udp", str(server), 53))
    return specs


def _addresses(response: dns.message.Message, rdtype: int) -> list[str]:
    return [
        rr.to_text() for rrset in response.answer if rrset.rdtype == rdtype for rr in rrset
    ]


async def _udp_query(
    query: dns.message.Message, spec: ResolverSpec, timeout: float, race_window: float,
    details: dict[str, Any] | None = None, source: str | None = None,
) -> tuple[dns.message.Message, list[list[str]], int]:
    """Send one UDP query; return the first reply, later differing answers, garbage count.

    Replies that do not parse or do not answer our query are counted in
    details["garbage_replies"] as they arrive (and the first one's head kept), so that the
    evidence survives a timeout that ends the wait.
    """
    details = {} if details is None else details
    assert spec.address is not None
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if source:
        try:
            sock.bind((source, 0))
        except OSError:
            sock.close()
            raise
    rdtype = query.question[0].rdtype
    first: dns.message.Message | None = None
    first_answer: list[str] = []
    late: list[list[str]] = []
    garbage = datagrams = 0
    wire_query = query.to_wire()
    sent = 0
    try:
        await loop.sock_connect(sock, (spec.address, spec.port))
        deadline = loop.time() + timeout
        next_send = loop.time()
        while len(late) < MAX_UDP_REPLIES and datagrams < MAX_UDP_DATAGRAMS:
            now = loop.time()
            if first is None and sent < UDP_SENDS and now >= next_send:
                # As a stub resolver does: the same query again while no reply came (a lost
                # datagram is not a block). Replies to any copy carry the same id.
                await loop.sock_sendall(sock, wire_query)
                count_udp(len(wire_query), 6 if family == socket.AF_INET6 else 4)
                sent += 1
                details["queries_sent"] = sent
                next_send = now + timeout / UDP_SENDS
            wake = deadline if first is not None or sent >= UDP_SENDS else min(deadline, next_send)
            remaining = wake - loop.time()
            if remaining <= 0:
                if loop.time() >= deadline:
                    break
                continue
            try:
                async with asyncio.timeout(remaining):
                    wire = await loop.sock_recv(sock, 65535)
            except TimeoutError:
                continue
            datagrams += 1
            count_udp(len(wire), 6 if family == socket.AF_INET6 else 4, received=True)
            try:
                reply = dns.message.from_wire(wire)
                is_response = query.is_response(reply)
            except Exception:  # whatever a hostile peer sends is garbage
                is_response = False
            if not is_response:
                garbage += 1
                details["garbage_replies"] = garbage
                details.setdefault("garbage_head", wire[:64].hex())
                continue
            if first is None:
                first = reply
                first_answer = _addresses(reply, rdtype)
                deadline = min(deadline, loop.time() + race_window)
            else:
                answer = _addresses(reply, rdtype)
                if answer != first_answer and answer not in late:
                    late.append(answer)
    finally:
        sock.close()
    if first is None:
        raise TimeoutError(f"no reply from {spec.where}")
    return first, late, garbage


# DNS over TCP through dnspython's own socket, whose kernel figures are out of reach: a
# short exchange of known shape (handshake, one query, one reply, close).
_DNS_TCP_SEGMENTS = (6, 4)  # out: SYN, ACK, query, ACK, FIN, ACK; in: SYN-ACK, reply, ACK, FIN


def count_dns_tcp(query: dns.message.Message, reply: dns.message.Message, family: int) -> None:
    """Count a DNS-over-TCP exchange as frames on the link (each message has a 2-byte length)."""
    header = TCP_HEADERS[family]
    count(len(query.to_wire()) + 2 + _DNS_TCP_SEGMENTS[0] * header,
          len(reply.to_wire()) + 2 + _DNS_TCP_SEGMENTS[1] * header)


async def _doh_query(
    query: dns.message.Message, spec: ResolverSpec, timeout: float, session: aiohttp.ClientSession
) -> dns.message.Message:
    assert spec.url is not None
    async with session.post(
        spec.url,
        data=query.to_wire(),
        headers={"content-type": "application/dns-message", "accept": "application/dns-message"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        if response.status != 200:
            raise failures.UnexpectedStatus(f"DoH server answered HTTP {response.status}")
        wire = await response.content.read(MAX_DOH_BYTES)
    return dns.message.from_wire(wire)


async def _lookup(step: Step, env: Env, spec: ResolverSpec, role: Role) -> Observation:
    """Resolve the target's domain (A for family 4, AAAA for 6) with one resolver; flag
    what looks forged."""
    assert step.target.domain is not None
    rdtype = dns.rdatatype.A if step.target.family == 4 else dns.rdatatype.AAAA
    query = dns.message.make_query(step.target.domain, rdtype)
    in_space = step.target.in_address_space
    policy = env.policy
    watch = Stopwatch()
    details: dict[str, Any] = {
        "resolver": spec.name, "resolver_address": spec.where, "protocol": spec.protocol,
        "qtype": dns.rdatatype.to_text(rdtype),
    }
    failure = None
    bind = None
    if spec.address is not None:
        bind = env.source.for_version(6 if ":" in spec.address else 4)
    try:
        async with asyncio.timeout(env.timeout):
            late: list[list[str]] = []
            if spec.protocol == "udp":
                reply, late, _garbage = await _udp_query(
                    query, spec, env.timeout, env.race_window, details, bind)
            elif spec.protocol == "tcp":
                assert spec.address is not None
                reply = await dns.asyncquery.tcp(query, spec.address, env.timeout, spec.port, bind)
                count_dns_tcp(query, reply, 6 if ":" in spec.address else 4)
            else:
                if env.session is None:
                    raise RuntimeError("DoH needs an HTTP session")
                reply = await _doh_query(query, spec, env.timeout, env.session)
        answers = _addresses(reply, rdtype)
        details["rcode"] = dns.rcode.to_text(reply.rcode())
        details["answers"] = answers
        details["late_answers"] = late
        seen = answers + [a for answer in late for a in answer]
        details["fingerprints"] = sorted({policy.fingerprints[a] for a in seen if a in policy.fingerprints})
        details["bogons"] = [a for a in seen if policy.is_bogon(a) and not in_space(a)]
        details["outside_space"] = [a for a in answers if not in_space(a)]
        if reply.rcode() != dns.rcode.NOERROR:
            failure = failures.rcode_failure(reply.rcode())
        elif details["bogons"] or details["fingerprints"]:
            failure = failures.DNS_BOGON
        elif not answers:
            failure = failures.DNS_NO_ANSWER
    except Exception as exc:
        failure = failures.classify(exc)
        details["error"] = (str(exc) or type(exc).__name__)[:200]
    obs = step.observe("dns", failures.RESOLVE, failure, watch, details, address=spec.address,
                       port=spec.port, role=role)
    if spec.address is None:  # DoH: the resolver is a URL (in the details), not an address
        obs.port = None
    return obs


def _role(spec: ResolverSpec, first_vantage_resolver: bool) -> Role:
    if spec.control:
        return "control"
    return "primary" if first_vantage_resolver else "differential"


async def check(step: Step, env: Env) -> list[Observation]:
    """Ask every resolver of the round, concurrently. The vantage's first resolver is the
    primary (what users get); further vantage resolvers are differentials and control
    resolvers are controls. Without a vantage resolver the first control is primary."""
    if not env.resolvers:
        return []
    primary = next((s for s in env.resolvers if not s.control), env.resolvers[0])
    lookups = [_lookup(step, env, s, "primary" if s is primary else _role(s, False))
               for s in env.resolvers]
    return list(await asyncio.gather(*lookups))


def chosen_address(observations: list[Observation]) -> str | None:
    """The address the rest of a domain's steps use: what the user's resolver said.

    The first vantage resolver that answered; if none did, a control resolver's answer, so
    that an IP block behind a DNS block is still seen.
    """
    for control in (False, True):
        for obs in observations:
            if obs.check == "dns" and (obs.role == "control") == control and obs.details.get("answers"):
                answers: list[str] = obs.details["answers"]
                return answers[0]
    return None
