"""Hostile DNS responders: whatever comes back, the dns check ends in time with a verdict.

The check talks to a real UDP or TCP server on loopback that answers with fuzzed bytes:
random datagrams, mutated real replies, wrong ids, compression-pointer loops, truncation,
huge answers, oversized TCP length prefixes, stalls.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import struct
import time

import dns.message
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.measure.checks.base import AnswerPolicy, ResolverSpec
from probe.model import failures
from probe.model.observation import Observation
from tests.hardening._counts import CASES, EXAMPLES
from tests.hardening.hostile import ScriptedTCP, ScriptedUDP, dns_answer
from tests.support import checks

POLICY = AnswerPolicy({}, (ipaddress.ip_network("198.18.0.0/15"),))
TIMEOUT = 1.0
SLACK = 0.5
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


good_reply = dns_answer


def query_id(query: bytes) -> bytes:
    return query[:2]


def assert_sane(obs: Observation, started: float, timeout: float = TIMEOUT) -> None:
    assert obs.failure is None or obs.failure in failures.FAILURES, obs.failure
    assert obs.operation == failures.RESOLVE
    assert time.monotonic() - started <= timeout + SLACK
    json.dumps(obs.to_json())  # the evidence log must be able to write it
    if obs.failure is None:
        assert obs.details["answers"], obs.details


async def resolve(port: int, protocol: str = "udp", timeout: float = TIMEOUT) -> Observation:
    spec = ResolverSpec("fuzz", protocol, "127.0.0.1", port)
    return await lookup(spec, timeout, race_window=0.0)


async def lookup(spec: ResolverSpec, timeout: float, race_window: float) -> Observation:
    where = checks.target(None, 443, name="web.telegram.org/v4", domain="web.telegram.org")
    environment = checks.env(timeout, resolvers=(spec,), policy=POLICY, race_window=race_window)
    (obs,) = await checks.run("dns", where, environment)
    return obs


# ---- UDP: garbage first, then the real answer: garbage must neither crash nor win ------

@FUZZ
@given(garbage=st.lists(st.binary(max_size=700), min_size=1, max_size=4))
async def test_udp_random_datagrams_before_real_answer(garbage: list[bytes]) -> None:
    async with ScriptedUDP(lambda q: [*garbage, good_reply(q)]) as server:
        started = time.monotonic()
        obs = await resolve(server.port)
    CASES["dns/udp random datagrams"] += len(garbage)
    assert_sane(obs, started)
    # random bytes are (almost) never a response to our query: the real answer wins
    assert obs.failure is None or obs.details.get("garbage_replies") is not None


def mutate(wire: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "splice", "counts"]))
    b = bytearray(wire)
    if kind == "truncate":
        return bytes(b[: data.draw(st.integers(0, len(b)))])
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(2, len(b) - 1))  # keep the id: the parser must see it
            b[i] = data.draw(st.integers(0, 255))
        return bytes(b)
    if kind == "insert":
        i = data.draw(st.integers(12, len(b)))
        return bytes(b[:i] + data.draw(st.binary(min_size=1, max_size=64)) + b[i:])
    if kind == "splice":
        return bytes(b[:12]) + data.draw(st.binary(max_size=512))
    # header counts that lie (huge qd/an/ns/ar counts)
    counts = data.draw(st.tuples(*[st.integers(0, 65535)] * 4))
    return bytes(b[:4]) + struct.pack("!4H", *counts) + bytes(b[12:])


@FUZZ
@given(data=st.data())
async def test_udp_mutated_replies(data: st.DataObject) -> None:
    mutated: list[bytes] = []

    def reply(query: bytes) -> list[bytes]:
        mutated.append(mutate(good_reply(query), data))
        return [mutated[-1], good_reply(query)]

    async with ScriptedUDP(reply) as server:
        started = time.monotonic()
        obs = await resolve(server.port)
    CASES["dns/udp mutated replies"] += 1
    assert_sane(obs, started)


POINTER_LOOPS = [
    b"\xc0\x0c",                # a name that points at itself
    b"\x01a\xc0\x0c",           # a label, then back to the start
    b"\xc0\x0e\xc0\x0c",        # two pointers pointing at each other
    b"\x3f" + b"a" * 63 + b"\xc0\x0c",
]


async def test_udp_compression_pointer_loops() -> None:
    for loop_name in POINTER_LOOPS:
        for section in ("question", "answer"):
            def reply(query: bytes, name: bytes = loop_name, where: str = section) -> list[bytes]:
                flags = b"\x81\x80"
                if where == "question":
                    body = struct.pack("!4H", 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
                else:
                    qd = dns.message.from_wire(query).question[0].name.to_wire()
                    here = 12 + len(qd) + 4  # the answer's name points at itself
                    name = name.replace(b"\xc0\x0c", struct.pack("!H", 0xC000 | here))
                    body = (struct.pack("!4H", 1, 1, 0, 0) + qd + b"\x00\x01\x00\x01" + name
                            + b"\x00\x01\x00\x01" + b"\x00\x00\x00\x3c\x00\x04" + b"\xc6\x12\x40\x01")
                return [query_id(query) + flags + body]

            async with ScriptedUDP(reply) as server:
                started = time.monotonic()
                obs = await resolve(server.port, timeout=0.3)
            CASES["dns/udp compression loops"] += 1
            assert_sane(obs, started, 0.3)
            assert obs.failure == failures.GENERIC_TIMEOUT  # garbage is not an answer
            assert obs.details.get("garbage_replies", 0) >= 1


async def test_udp_wrong_ids_and_a_flood() -> None:
    def reply(query: bytes) -> list[bytes]:
        wrong = bytearray(good_reply(query, "198.18.9.9"))
        wrong[0] ^= 0xFF
        return [bytes(wrong)] * 200  # a flood of spoofed replies with the wrong id
    async with ScriptedUDP(reply) as server:
        started = time.monotonic()
        obs = await resolve(server.port, timeout=0.3)
    CASES["dns/udp wrong ids"] += 200
    assert_sane(obs, started, 0.3)
    assert obs.failure == failures.GENERIC_TIMEOUT


async def test_udp_huge_answer_and_many_injected_replies() -> None:
    def reply(query: bytes) -> list[bytes]:
        huge = _big_reply(query, 18, 4000, first=198)
        injected = [good_reply(query, f"198.18.100.{i}") for i in range(1, 60)]
        return [huge, *injected]
    async with ScriptedUDP(reply) as server:
        started = time.monotonic()
        spec = ResolverSpec("fuzz", "udp", "127.0.0.1", server.port)
        obs = await lookup(spec, 1.0, race_window=0.3)
    CASES["dns/udp huge answers"] += 60
    assert_sane(obs, started, TIMEOUT + 0.5)  # the peer builds 64 KiB replies in our loop too
    # The first reply that arrived is the answer. That is the 64 KiB one unless the kernel
    # dropped it: on a loaded machine (the lab beside this test) the client's trace showed
    # the 50-byte replies arriving and the 64 KiB datagram never, in 3 of 8 runs.
    answers = obs.details["answers"]
    # kept: the first 32 of the 64 records parsed, and the count the reply announced
    assert (len(answers) == 32 and obs.details["answer_records_max"] == 4000) or (
        len(answers) == 1 and answers[0].startswith("198.18.100.")), answers
    assert len(obs.details["late_answers"]) <= 16  # kept replies are capped


async def test_udp_silent_resolver_times_out_on_time() -> None:
    async with ScriptedUDP(lambda q: []) as server:
        started = time.monotonic()
        obs = await resolve(server.port, timeout=0.3)
    CASES["dns/udp silent"] += 1
    assert obs.failure == failures.GENERIC_TIMEOUT
    assert time.monotonic() - started < 0.3 + SLACK


# ---- TCP: fuzzed length prefixes and bodies ---------------------------------------------

@FUZZ
@given(data=st.data())
async def test_tcp_fuzzed_replies(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["random", "mutated", "prefix-lies", "empty"]))

    def script(first: bytes) -> list[tuple[str, object]]:
        query = first[2:]
        if kind == "random":
            return [("send", data.draw(st.binary(max_size=600))), ("close", None)]
        if kind == "empty":
            return [("send", b"\x00\x00"), ("close", None)]
        try:
            reply = good_reply(query)
        except Exception:
            return [("close", None)]
        if kind == "mutated":
            reply = mutate(reply, data)
            return [("send", struct.pack("!H", len(reply)) + reply), ("close", None)]
        length = data.draw(st.integers(0, 65535))
        return [("send", struct.pack("!H", length) + reply), ("close", None)]

    async with ScriptedTCP(script, read_first=512) as server:
        started = time.monotonic()
        obs = await resolve(server.port, "tcp")
    CASES["dns/tcp fuzzed replies"] += 1
    assert_sane(obs, started)


async def test_tcp_oversized_prefix_then_stall_times_out() -> None:
    async with ScriptedTCP([("read", 512), ("send", b"\xff\xff" + b"x" * 100), ("stall", None)]) as server:
        started = time.monotonic()
        obs = await resolve(server.port, "tcp", timeout=0.4)
    CASES["dns/tcp stalls"] += 1
    assert obs.failure == failures.GENERIC_TIMEOUT
    assert time.monotonic() - started < 0.4 + SLACK


async def test_tcp_never_answers_and_reset() -> None:
    for script, expected in (([("stall", None)], failures.GENERIC_TIMEOUT),
                             ([("read", 512), ("reset", None)], failures.CONNECTION_RESET)):
        async with ScriptedTCP(script) as server:
            started = time.monotonic()
            obs = await resolve(server.port, "tcp", timeout=0.4)
        CASES["dns/tcp stalls"] += 1
        assert obs.failure == expected, obs.details
        assert time.monotonic() - started < 0.4 + SLACK
    await asyncio.sleep(0)


# ---- a hostile resolver's size: what is kept is bounded, wrong ids are never parsed ------

def _big_reply(query: bytes, salt: int, records: int = 3600, first: int = 10) -> bytes:
    """A reply to `query` with `records` A records (first.salt.x.y), built byte by byte:
    dnspython takes seconds to build one on a loaded machine, inside the test's loop."""
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    header = query[:2] + b"\x81\x80" + b"\x00\x01" + records.to_bytes(2, "big") + bytes(4)
    body = b"".join(
        b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes((first, salt, i // 250, i % 250 + 1))
        for i in range(records))
    return header + question + body


async def test_udp_seventeen_60kb_replies_keep_a_bounded_observation() -> None:
    """The review's resolver: 17 distinct replies of about 60 KB to one query. The kept
    lists are cut to a few dozen addresses plus their count, so one observation stays a
    few KB however much was sent (before: 2.8 MB of evidence per round)."""
    async with ScriptedUDP(lambda q: [_big_reply(q, salt) for salt in range(17)]) as server:
        spec = ResolverSpec("fuzz", "udp", "127.0.0.1", server.port)
        obs = await lookup(spec, 2.0, race_window=1.0)
    details = obs.details
    CASES["dns/udp huge answers"] += 17
    assert len(details["answers"]) == 32 and details["answers_total"] == 64, details
    assert details["answer_records_max"] >= 3000  # announced; never parsed
    assert obs.failure is None and details["answers"][0] == "10.0.0.1"
    assert len(details["late_answers"]) >= 1  # the kernel may drop some 60 KB datagrams
    assert all(len(answer) <= 32 for answer in details["late_answers"])
    assert len(json.dumps(obs.to_json())) < 16_000


async def test_udp_wrong_id_60kb_flood_is_dropped_unparsed() -> None:
    """60 KB replies with the wrong id, sent as fast as loopback takes them while the query
    waits: each is dropped on its first two bytes, so the event loop stays free (before:
    about 115 ms of parsing per datagram, a 2.25 s lag) and the real answer still wins."""
    import os
    import socket
    import threading

    stop = threading.Event()
    sent = [0]

    def flood(query: bytes, addr: tuple[str, int], fd: int) -> None:
        wrong = bytearray(_big_reply(query, 1))
        wrong[0] ^= 0xFF
        # from the server's own port: the check's socket is connected to it
        with socket.socket(fileno=fd) as sock:
            deadline = time.monotonic() + 1.5
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    sock.sendto(wrong, addr)
                    sent[0] += 1
                except OSError:
                    time.sleep(0.001)

    class Flooding(ScriptedUDP):
        def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
            if self.queries == 0:
                assert self.transport is not None
                fd = os.dup(self.transport.get_extra_info("socket").fileno())
                threading.Thread(target=flood, args=(data, addr, fd), daemon=True).start()
                loop = asyncio.get_running_loop()
                answer = good_reply(data)
                for delay in (0.8, 1.7):  # during the flood, and after it (the first may be lost)
                    loop.call_later(delay, lambda: self.transport and self.transport.sendto(answer, addr))
            self.queries += 1

    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with Flooding(lambda q: []) as server:
        tick = asyncio.create_task(ticker())
        try:
            started = time.monotonic()
            spec = ResolverSpec("fuzz", "udp", "127.0.0.1", server.port)
            obs = await lookup(spec, 3.0, race_window=0.0)
        finally:
            stop.set()
            tick.cancel()
    CASES["dns/udp wrong ids"] += sent[0]
    assert_sane(obs, started, 3.0)
    assert obs.failure is None and obs.details["answers"] == ["198.18.64.1"], (obs.details, sent)
    assert obs.details.get("garbage_replies", 0) >= 3, (obs.details, sent)  # the flood arrived
    print(f"wrong-id 60 KB flood: {sent[0]} sent, {obs.details['garbage_replies']} read and dropped, "
          f"longest event-loop gap {max(gaps) * 1000:.0f} ms, answer in {obs.duration_seconds:.2f} s")
    assert max(gaps) < 0.5, max(gaps)  # one parse of a 60 KB reply alone took ~0.1 s
