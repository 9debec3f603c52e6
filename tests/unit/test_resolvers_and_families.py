"""A DNS-over-HTTPS control resolver, and the IPv6 family, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from probe.inputs.config import parse_config
from probe.measure.round import run_round
from tests.support.dnsserver import DnsServer
from tests.support.mtproto import MtprotoServer
from tests.support.tlsserver import LabCA, TlsServer
from tests.unit.conftest import WEB, World, verdicts


@pytest.fixture
async def doh(world: World) -> AsyncIterator[str]:
    """A DoH server (RFC 8484, POST) with the lab CA, answering from the control zone."""
    ca = LabCA.load_or_create(world.ca_file.parent / "doh-ca")
    world.ca_file.write_text(world.ca_file.read_text() + ca.ca.cert_pem.bytes().decode())

    async def answer(request: web.Request) -> web.Response:
        assert request.content_type == "application/dns-message"
        replies = world.control.respond(await request.read(), "tcp")
        return web.Response(body=replies[0][1], content_type="application/dns-message")

    app = web.Application()
    app.router.add_post("/dns-query", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ca.server_context(["127.0.0.1"]))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/dns-query"
    finally:
        await runner.cleanup()


async def test_dns_blocking_seen_through_a_doh_control(world: World, doh: str) -> None:
    data = world.config_data()
    data["resolvers"]["control"] = [{"name": "doh", "url": doh}]
    world.resolver.set_behaviour("nxdomain")
    result = await run_round(parse_config(yaml.safe_dump(data), "unit.yaml"))
    v = verdicts(result)[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("dns_blocking", "dns_failure_control_ok")
    control = v.evidence[1]
    assert control.details["protocol"] == "doh" and control.details["answers"] == ["127.0.20.1"]
    # the TLS and TCP checks went on with the control's answer: the address itself is fine
    tls = next(o for o in result.observations if o.target == f"{WEB}/v4" and o.check == "tls")
    assert tls.ok and tls.address == "127.0.20.1"


async def test_ipv6_targets_have_their_own_verdicts(tmp_path: Path) -> None:
    ca = LabCA()
    ca_file = ca.write_ca_pem(tmp_path / "ca.pem")
    # the baseline is verified TLS: a bare TCP connect would not prove IPv4 online
    async with MtprotoServer("::1", 0) as dc, TlsServer("::1", 0, ca=ca, names=["site.example"]) as site6, \
            TlsServer("127.0.0.1", 0, ca=ca, names=["site.example"]) as site4, \
            DnsServer("127.0.0.1", 0, zone={}) as resolver:
        config = parse_config(f"""
vantage: {{name: v6, role: control}}
messengers:
  telegram:
    datacenters: [{{name: dc1, addresses: ["127.0.0.1", "::1"]}}]
    domains: []
    ports: [{dc.port}]
resolvers: {{system: false, servers: [{{name: isp, address: 127.0.0.1, port: {resolver.port}}}],
            public_networks: ["127.0.0.0/8", "::1/128"]}}
baseline:
  targets:
    - {{name: site6, address: "::1", port: {site6.port}, sni: site.example}}
    - {{name: site4, address: 127.0.0.1, port: {site4.port}, sni: site.example}}
schedule: {{timeouts: {{connect: 1, mtproto: 1}}}}
tls: {{ca_file: {ca_file}}}
""", "v6.yaml")
        result = await run_round(config)
    v = verdicts(result)
    assert result.baseline.ipv4 and result.baseline.ipv6
    assert v[f"dc1-v6:{dc.port}"].verdict == "ok"  # the responder listens on ::1 only
    assert v[f"dc1-v4:{dc.port}"].verdict == "tcp_reset"  # and not on 127.0.0.1
