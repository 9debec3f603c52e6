"""A small world on loopback for the engine's tests: real servers, real sockets.

Two data centres (MTProto responders), a TLS front for web.telegram.org, the vantage's
resolver and a control resolver (real DNS servers), a baseline site. Tests flip the
servers' modes and run real rounds through the real pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.inputs.catalog import builtin
from probe.inputs.config import Config, parse_config
from probe.measure.round import RoundResult, run_round
from probe.model.observation import Verdict
from tests.support.dnsserver import DnsServer
from tests.support.mtproto import MtprotoServer
from tests.support.tcpserver import HttpServer
from tests.support.tlsserver import LabCA, TlsServer

WEB = "web.telegram.org"
DC_ADDRESSES = ("127.0.10.1", "127.0.10.2")
WEB_ADDRESS = "127.0.20.1"


class ProtocolFilteredDC(MtprotoServer):
    """A DC behind a protocol filter: plain HTTP is answered, MTProto is silently dropped."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(4)
        if head in (b"POST", b"GET ", b"HEAD"):
            writer.write(b"HTTP/1.1 501 Not Implemented\r\nServer: nginx/0.3.33\r\n\r\n")
            await writer.drain()
            return
        while await reader.read(65536):
            pass


@dataclass
class World:
    dcs: list[MtprotoServer]
    dc_port: int
    web: TlsServer
    resolver: DnsServer
    control: DnsServer
    baseline: HttpServer
    ca_file: Path

    async def restart_web(self, mode: str) -> None:
        """The TLS front again on the same address and port, with another certificate mode."""
        await self.web.stop()
        self.web = TlsServer(self.web.host, self.web.port, ca=self.web.ca, names=self.web.names,
                             mode=mode)
        await self.web.start()

    async def cut_off(self) -> None:
        """Nothing answers any more, baseline, front and DCs alike: the vantage is offline.
        (The baseline alone failing is a blocked baseline when the front's verified
        handshake or a DC's MTProto answer still proves the vantage online.)"""
        for server in (self.baseline, self.web, *self.dcs):
            await server.stop()

    def config_data(self, **overrides: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "vantage": {"name": "unit", "country": "IR", "asn": 64500, "role": "subject"},
            "messengers": {"telegram": {
                "datacenters": [{"name": f"dc{i + 1}", "addresses": [a]}
                                for i, a in enumerate(DC_ADDRESSES)],
                "domains": [{"name": WEB, "port": self.web.port,
                             "url": f"https://{WEB}:{self.web.port}/"}],
                "ports": [self.dc_port],
                "address_space": ["127.0.0.0/16"],
                "neutral_sni": "neutral.example",
                # the catalogue's other groups (media DCs, the web client's hosts, ...) hold
                # Telegram's real addresses and names: emptied, so the world stays on loopback
                "groups": {name: {"endpoints": []} for name in builtin("telegram").groups
                           if name not in ("datacenters", "domains")},
            }},
            "resolvers": {
                "system": False,
                "servers": [{"name": "isp", "address": "127.0.0.1", "port": self.resolver.port}],
                "control": [{"name": "control", "address": "127.0.0.1",
                             "port": self.control.port, "protocol": "tcp"}],
                "race_window": 0.5,
                "public_networks": ["127.0.0.0/16"],
            },
            "baseline": {"targets": [{"name": "site", "address": "127.0.0.1",
                                      "port": self.baseline.port}], "samples": 40},
            "schedule": {"timeouts": {"dns": 1.5, "connect": 1.5, "tls": 1.5, "mtproto": 1.5,
                                      "http": 3}, "confirm": {"attempts": 4, "spacing": 0.3}},
            "tls": {"ca_file": str(self.ca_file)},
        }
        for key, value in overrides.items():
            data[key] = value
        return data

    def config(self, **overrides: Any) -> Config:
        return parse_config(yaml.safe_dump(self.config_data(**overrides)), "unit.yaml")

    async def round(self, **overrides: Any) -> RoundResult:
        return await run_round(self.config(**overrides))


def verdicts(result: RoundResult) -> dict[str, Verdict]:
    return {v.target: v for v in result.verdicts}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    ca = LabCA()
    ca_file = ca.write_ca_pem(tmp_path / "ca.pem")
    zone = {WEB: {"A": [WEB_ADDRESS]}}
    first = MtprotoServer(DC_ADDRESSES[0], 0)
    port = await first.start()
    dcs = [first]
    for address in DC_ADDRESSES[1:]:
        server = MtprotoServer(address, port)
        await server.start()
        dcs.append(server)
    web = TlsServer(WEB_ADDRESS, 0, ca=ca, names=[WEB])
    resolver = DnsServer("127.0.0.1", 0, zone=zone)
    control = DnsServer("127.0.0.1", 0, zone=zone)
    baseline = HttpServer("127.0.0.1", 0)
    servers = [web, resolver, control, baseline]
    for server in servers:
        await server.start()
    try:
        yield World(dcs, port, web, resolver, control, baseline, ca_file)
    finally:
        for server in [*dcs, *servers]:
            await server.stop()
