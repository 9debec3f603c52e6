"""A UDP+TCP DNS server that answers from a small zone, or misbehaves like a censor.

Why: the probe's DNS check must tell a working resolver from NXDOMAIN/SERVFAIL/REFUSED
blocking, silence, bogon answers (Iran's 10.10.34.34 / d0::11) and on-path injection that
races the real answer (GFW style). Each of these is a *behaviour*, set globally or per name.

Behaviours:
  answer    records from the zone (NXDOMAIN for names outside it, NOERROR/empty for a
            missing type)
  nxdomain  NXDOMAIN          servfail  SERVFAIL          refused  REFUSED
  noanswer  NOERROR, no records
  silent    never answers (the query is read and dropped)
  race      a forged answer at once, the real answer ``race_delay`` seconds later, both to
            the same query id and port: what a client sees behind an on-path injector
  bogon     the configured forged address(es) (also used for plausible non-bogon forgeries)

Standalone::

  python -m tests.support.dnsserver --listen 198.18.1.53:53 --listen [2001:db8:1::53]:53 \
      --config zone.yaml
  python -m tests.support.dnsserver --listen 127.0.0.1:5353 --record t.me=198.18.64.9 \
      --behaviour race --forged 10.10.34.34

SIGHUP re-reads the config file (prints ``reloaded``), so a lab resolver can change its
behaviour between scenarios without a restart.

The zone file (YAML or JSON)::

  zone: {telegram.org: {A: [198.18.64.10], AAAA: ["2001:db8:64::10"]}}
  behaviour: answer
  behaviours: {web.telegram.org: nxdomain}
  forged: {A: [10.10.34.34], AAAA: ["d0::11"]}
  race_delay: 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.support._common import (
    BaseServer,
    StreamServer,
    add_listen_argument,
    listen_addresses,
    make_socket,
    run_standalone,
)

BEHAVIOURS = ("answer", "nxdomain", "servfail", "refused", "noanswer", "silent", "race", "bogon")
DEFAULT_FORGED: dict[str, list[str]] = {"A": ["10.10.34.34"], "AAAA": ["d0::11"]}

Zone = dict[str, dict[str, list[str]]]


def _norm(name: str) -> str:
    """Lower-case, absolute form of a DNS name, the key used in zone and behaviour maps."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _rtype_of(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


class DnsServer(BaseServer):
    """Authoritative-looking DNS server over UDP and TCP on the same port.

    ``queries`` records (transport, name, type) of every query, so tests can check that the
    probe asked what it should have asked.
    """

    kind = "dns"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        zone: Mapping[str, Mapping[str, list[str]]] | None = None,
        behaviour: str = "answer",
        behaviours: Mapping[str, str] | None = None,
        forged: Mapping[str, list[str]] | None = None,
        race_delay: float = 0.2,
        ttl: int = 60,
        udp: bool = True,
        tcp: bool = True,
    ) -> None:
        super().__init__(host, port)
        self.zone: Zone = {}
        for name, records in (zone or {}).items():
            self.zone[_norm(name)] = {k.upper(): list(v) for k, v in records.items()}
        self.behaviour = "answer"
        self.behaviours: dict[str, str] = {}
        self.set_behaviour(behaviour)
        for name, b in (behaviours or {}).items():
            self.set_behaviour(b, name)
        self.forged = {k.upper(): list(v) for k, v in (forged or DEFAULT_FORGED).items()}
        self.race_delay = race_delay
        self.ttl = ttl
        self.udp = udp
        self.tcp = tcp
        self.queries: list[tuple[str, str, str]] = []
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._tcp: _DnsTcp | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    # ------------------------------------------------------------------ configuration

    @classmethod
    def from_config(cls, data: Mapping[str, Any], host: str = "127.0.0.1", port: int = 0) -> DnsServer:
        """Build from the mapping of a zone file (see module docstring)."""
        unknown = set(data) - {"zone", "behaviour", "behaviours", "forged", "race_delay", "ttl"}
        if unknown:
            raise ValueError(f"unknown keys in DNS config: {sorted(unknown)}")
        return cls(
            host,
            port,
            zone=data.get("zone") or {},
            behaviour=data.get("behaviour", "answer"),
            behaviours=data.get("behaviours") or {},
            forged=data.get("forged") or DEFAULT_FORGED,
            race_delay=float(data.get("race_delay", 0.2)),
            ttl=int(data.get("ttl", 60)),
        )

    def set_behaviour(self, behaviour: str, name: str | None = None) -> None:
        """Change the behaviour globally or for one name (tests flip it between queries)."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}")
        if name is None:
            self.behaviour = behaviour
        else:
            self.behaviours[_norm(name)] = behaviour

    # ------------------------------------------------------------------ answering

    def _rrset(self, qname: dns.name.Name, rtype: str, addresses: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(qname, self.ttl, dns.rdataclass.IN, rtype, addresses)

    def _reply(self, query: dns.message.Message, rcode: int, addresses: list[str] | None = None) -> bytes:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.set_rcode(rcode)
        if addresses:
            q = query.question[0]
            rtype = dns.rdatatype.to_text(q.rdtype)
            response.answer.append(self._rrset(q.name, rtype, addresses))
        return response.to_wire()

    def respond(self, wire: bytes, transport: str = "udp") -> list[tuple[float, bytes]]:
        """The replies to one query as (delay seconds, wire bytes); empty = stay silent.

        Pure function of the query and the configuration, so fuzz tests can call it without
        sockets. Junk that does not parse gets no answer (a FORMERR needs a parsable id).
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            if len(wire) >= 12:
                (qid,) = struct.unpack("!H", wire[:2])
                # id, flags QR|FORMERR, zero counts: what BIND answers to junk with a header
                return [(0.0, struct.pack("!HHHHHH", qid, 0x8001, 0, 0, 0, 0))]
            return []
        if query.flags & dns.flags.QR:
            return []  # a response sent to us: ignore, as servers do
        if len(query.question) != 1:
            return [(0.0, self._reply(query, dns.rcode.FORMERR))]
        question = query.question[0]
        name = question.name.to_text().lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((transport, name, rtype))
        behaviour = self.behaviours.get(name, self.behaviour)

        def real() -> bytes:
            records = self.zone.get(name)
            if records is None:
                return self._reply(query, dns.rcode.NXDOMAIN)
            return self._reply(query, dns.rcode.NOERROR, records.get(rtype, []))

        def forged() -> bytes:
            return self._reply(query, dns.rcode.NOERROR, self.forged.get(rtype, []))

        if behaviour == "silent":
            return []
        if behaviour == "answer":
            return [(0.0, real())]
        if behaviour == "bogon":
            return [(0.0, forged())]
        if behaviour == "race":
            return [(0.0, forged()), (self.race_delay, real())]
        if behaviour == "noanswer":
            return [(0.0, self._reply(query, dns.rcode.NOERROR))]
        rcode = {
            "nxdomain": dns.rcode.NXDOMAIN,
            "servfail": dns.rcode.SERVFAIL,
            "refused": dns.rcode.REFUSED,
        }[behaviour]
        return [(0.0, self._reply(query, rcode))]

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        if self.tcp:
            # with port 0 the TCP port is chosen first and UDP takes the same number; retry
            # a few times if that UDP port happens to be taken.
            for attempt in range(20):
                self._tcp = _DnsTcp(self, self.host, self.port)
                port = await self._tcp.start()
                if not self.udp:
                    self.port = port
                    return port
                try:
                    await self._bind_udp(port)
                except OSError:
                    await self._tcp.stop()
                    if self.port != 0 or attempt == 19:
                        raise
                    continue
                return self.port
        await self._bind_udp(self.port)
        return self.port

    async def _bind_udp(self, port: int) -> None:
        sock = make_socket(self.host, port, socket.SOCK_DGRAM)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _DnsUdp(self), sock=sock)
        self._udp_transport = transport

    async def stop(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._tcp is not None:
            await self._tcp.stop()
            self._tcp = None

    def _send_later(self, delay: float, send: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        if delay <= 0:
            send(*args)
            return

        def fire() -> None:
            self._timers.discard(handle)
            with contextlib.suppress(OSError):
                send(*args)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.transport is not None
        for delay, reply in self.server.respond(data, "udp"):
            self.server._send_later(delay, self.transport.sendto, reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a client that gave up: not our problem


class _DnsTcp(StreamServer):
    """DNS over TCP: 2-byte length prefix, several queries per connection."""

    kind = "dns"

    def __init__(self, dns_server: DnsServer, host: str, port: int) -> None:
        super().__init__(host, port)
        self.dns = dns_server

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                wire = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                return
            for delay, reply in self.dns.respond(wire, "tcp"):
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()


# ---------------------------------------------------------------------- standalone


def load_config(path: str) -> dict[str, Any]:
    """Read a YAML or JSON zone file."""
    text = Path(path).read_text()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.dnsserver", description=__doc__.split("\n\n")[0]
    )
    add_listen_argument(parser)
    parser.add_argument("--config", help="zone + behaviours file (YAML or JSON)")
    parser.add_argument("--record", action="append", default=[], metavar="NAME=ADDR", help="zone record")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, help="global behaviour")
    parser.add_argument("--name-behaviour", action="append", default=[], metavar="NAME=BEHAVIOUR")
    parser.add_argument("--forged", action="append", default=[], metavar="ADDR", help="forged address(es)")
    parser.add_argument("--race-delay", type=float, help="seconds between forged and real")
    parser.add_argument("--no-tcp", action="store_true")
    parser.add_argument("--no-udp", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the config file and the CLI flags (flags win)."""
    data: dict[str, Any] = load_config(args.config) if args.config else {}
    zone: dict[str, dict[str, list[str]]] = dict(data.get("zone") or {})
    for item in args.record:
        name, _, addr = item.partition("=")
        zone.setdefault(name, {}).setdefault(_rtype_of(addr), []).append(addr)
    data["zone"] = zone
    if args.behaviour:
        data["behaviour"] = args.behaviour
    behaviours = dict(data.get("behaviours") or {})
    for item in args.name_behaviour:
        name, _, b = item.partition("=")
        behaviours[name] = b
    data["behaviours"] = behaviours
    if args.forged:
        forged: dict[str, list[str]] = {}
        for addr in args.forged:
            forged.setdefault(_rtype_of(addr), []).append(addr)
        data["forged"] = forged
    if args.race_delay is not None:
        data["race_delay"] = args.race_delay
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data = config_from_args(args)
        servers = []
        for host, port in listen_addresses(args):
            server = DnsServer.from_config(data, host, port)
            server.udp, server.tcp = not args.no_udp, not args.no_tcp
            servers.append(server)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def reload() -> None:
        """SIGHUP: re-read --config (and flags) and apply zone and behaviours in place."""
        fresh = DnsServer.from_config(config_from_args(args))
        for server in servers:
            server.zone, server.behaviour = fresh.zone, fresh.behaviour
            server.behaviours, server.forged = fresh.behaviours, fresh.forged
            server.race_delay, server.ttl = fresh.race_delay, fresh.ttl

    return run_standalone(servers, reload)


if __name__ == "__main__":
    sys.exit(main())
