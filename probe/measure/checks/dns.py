"""DNS: ask every configured resolver for A or AAAA and keep every answer.

An on-path injector races the real resolver: its forged reply arrives first and the real
one follows. A stub resolver takes the first and never learns. So on UDP we keep the socket
open for `race_window` seconds after the first reply and record every further reply to the
same query; a second, different answer is proof of injection.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from probe.measure.checks.base import Env, ResolverSpec, Step
from probe.measure.wire.net import TCP_HEADERS, Stopwatch, count, count_udp, settle_all
from probe.model import failures
from probe.model.observation import Observation, Role
from probe.sinks import scrub

if TYPE_CHECKING:
    import aiohttp
    import dns.message

# dnspython (~6 MB resident) is imported by the functions that use it: a round without a
# DNS step (a config of fixed addresses, the benchmark's) never loads it.

MAX_UDP_REPLIES = 16  # replies we keep per query: a flood must not grow memory
MAX_UDP_DATAGRAMS = 256  # datagrams we parse per query: a flood must not burn the CPU
# Datagrams not for us (wrong id) cost a comparison each: many more are read (so a flood
# of them cannot hide the real answer) but not without end.
MAX_UDP_DROPPED = 65536
# Answer records parsed per reply: dnspython's parse is quadratic in an RRset's size (a
# 64 KB reply of 4,000 A records takes 0.1 to 1.5 s of CPU); the rest are counted, unread.
MAX_PARSED_RECORDS = 64
MAX_DOH_BYTES = 65535
# Addresses kept per list in the evidence (answers, each late answer, bogons, outside the
# space): a 60 KB reply holds thousands; the first few dozen say what was answered, the
# count says how much. Judging uses the lists' heads (the first answer), never their tails.
MAX_KEPT_ADDRESSES = 32
# UDP queries per lookup, evenly spread over the timeout: glibc and systemd-resolved resend
# after a second or two; a probe that sends once reports every lost datagram as a block.
UDP_SENDS = 4


def system_resolvers(resolv_conf: str) -> list[ResolverSpec]:
    """The nameservers of resolv.conf, named system, system-2, ..."""
    import dns.exception
    import dns.resolver

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


def _answers_us(wire: bytes, query_id: int) -> bool:
    """Whether a datagram can be a reply to our query, from its first three bytes: our id,
    the QR bit. A spoofed or stray datagram is dropped before any parsing, so a flood of
    60 KB wrong-id replies costs a comparison each, not a parse (event-loop time bounded)."""
    return len(wire) >= 12 and int.from_bytes(wire[:2], "big") == query_id and bool(wire[2] & 0x80)


def _cut(wire: bytes) -> tuple[bytes, int | None]:
    """A reply with more than MAX_PARSED_RECORDS answer records, rewritten to announce only
    that many (authority and additional dropped), and the count it announced; the wire
    unchanged and None otherwise."""
    answers = int.from_bytes(wire[6:8], "big")
    if answers <= MAX_PARSED_RECORDS:
        return wire, None
    header = wire[:6] + MAX_PARSED_RECORDS.to_bytes(2, "big") + bytes(4)
    return header + wire[12:], answers


def _kept(details: dict[str, Any], key: str, values: list[str]) -> None:
    """details[key] = the first MAX_KEPT_ADDRESSES values; details[key_total] = how many
    there were, when some were left out."""
    details[key] = values[:MAX_KEPT_ADDRESSES]
    if len(values) > MAX_KEPT_ADDRESSES:
        details[f"{key}_total"] = len(values)


async def _udp_query(
    query: dns.message.Message, spec: ResolverSpec, timeout: float, race_window: float,
    details: dict[str, Any] | None = None, source: str | None = None,
) -> tuple[dns.message.Message, list[list[str]], int]:
    """Send one UDP query; return the first reply, later differing answers, garbage count.

    Replies that do not parse or do not answer our query are counted in
    details["garbage_replies"] as they arrive (and the first one's head kept), so that the
    evidence survives a timeout that ends the wait.
    """
    import dns.message

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
    late_seen: set[int] = set()  # hashes of whole late answers: the kept ones are cut short
    wires_seen: set[int] = set()  # hashes (keyed SipHash) of the datagrams parsed
    garbage = datagrams = dropped = 0
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
            count_udp(len(wire), 6 if family == socket.AF_INET6 else 4, received=True)
            if not _answers_us(wire, query.id):
                dropped += 1
                if dropped > MAX_UDP_DROPPED:
                    break
                garbage += 1
                details["garbage_replies"] = garbage
                details.setdefault("garbage_head", scrub.raw(wire[:80])[:64].hex())
                continue
            datagrams += 1
            digest = hash(wire)
            if digest in wires_seen:
                continue  # the same reply again (a resend's answer, a replayed flood)
            wires_seen.add(digest)
            try:
                wire, records = _cut(wire)
                if records is not None:
                    details["answer_records_max"] = max(records, details.get("answer_records_max", 0))
                reply = dns.message.from_wire(wire, ignore_trailing=records is not None)
                is_response = query.is_response(reply)
            except Exception:  # whatever a hostile peer sends is garbage
                is_response = False
            if not is_response:
                garbage += 1
                details["garbage_replies"] = garbage
                details.setdefault("garbage_head", scrub.raw(wire[:80])[:64].hex())
                continue
            if first is None:
                first = reply
                first_answer = _addresses(reply, rdtype)
                deadline = min(deadline, loop.time() + race_window)
            else:
                answer = _addresses(reply, rdtype)
                key = hash(tuple(answer))
                if answer != first_answer and key not in late_seen:
                    late_seen.add(key)
                    late.append(answer[:MAX_KEPT_ADDRESSES])
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
    import aiohttp  # DoH only: a round without it never loads the HTTP client
    import dns.message

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
        settle_all()  # count the pooled connection now: uvloop may close it uncounted
    return dns.message.from_wire(wire)


async def _lookup(step: Step, env: Env, spec: ResolverSpec, role: Role) -> Observation:
    """Resolve the target's domain (A for family 4, AAAA for 6) with one resolver; flag
    what looks forged."""
    import dns.asyncquery
    import dns.message
    import dns.rcode
    import dns.rdatatype

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
        _kept(details, "answers", answers)
        details["late_answers"] = late
        seen = answers + [a for answer in late for a in answer]
        details["fingerprints"] = sorted({policy.fingerprints[a] for a in seen if a in policy.fingerprints})
        _kept(details, "bogons", [a for a in seen if policy.is_bogon(a) and not in_space(a)])
        _kept(details, "outside_space", [a for a in answers if not in_space(a)])
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
