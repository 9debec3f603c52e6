"""An offline vantage is proven, not assumed (issue 14), on loopback with real rounds.

The machine this was built on sits behind a transparent proxy that accepts every TCP
connect and answers HTTP 400; a probe there has no internet, yet every connect succeeds.
`TransparentProxy` is that proxy on loopback: the whole catalogue, the baseline and the
DoH control point at it, and the round must end with every target `vantage_offline` and
never a block. (The loopback addresses are declared public, so the only thing that keeps
the proxy from passing for the internet is that nothing it says can be verified.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from probe.inputs.config import parse_config
from probe.measure.round import run_round
from probe.model.observation import RoundResult
from probe.model.verdicts import BLOCKING_VERDICTS
from tests.support._common import StreamServer
from tests.support.tlsserver import LabCA
from tests.unit.conftest import WEB, World, verdicts

PROXIED = {"dc1": "127.0.40.1", "dc2": "127.0.40.2", "web": "127.0.40.10",
           "site": "127.0.40.20", "tcp-site": "127.0.40.21", "doh": "127.0.40.30"}
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 11\r\n"
               b"Connection: close\r\n\r\nBad Request")


class TransparentProxy(StreamServer):
    """Accepts every connection and answers HTTP 400 to whatever arrives; with `intercept`,
    it first completes TLS for any name with a certificate from its own (untrusted) CA."""

    def __init__(self, host: str, port: int, intercept: LabCA | None = None) -> None:
        super().__init__(host, port)
        self.intercept = intercept

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.intercept is None:
            return None
        return self.intercept.server_context([WEB, "site.example", PROXIED["doh"]])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(4096), 1)
        writer.write(BAD_REQUEST)
        await writer.drain()


@pytest.fixture(params=["plain", "intercepting"])
async def proxy(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """The proxy on every PROXIED address, one port; yields the port."""
    intercept = LabCA(organization="transparent proxy CA") if request.param == "intercepting" else None
    first = TransparentProxy(PROXIED["dc1"], 0, intercept)
    port = await first.start()
    servers = [first]
    try:
        for address in list(PROXIED.values())[1:]:
            server = TransparentProxy(address, port, intercept)
            await server.start()
            servers.append(server)
        yield port
    finally:
        for server in servers:
            await server.stop()


def proxied_config(world: World, port: int) -> dict[str, Any]:
    data = world.config_data()
    telegram = data["messengers"]["telegram"]
    telegram["datacenters"] = [{"name": n, "addresses": [PROXIED[n]]} for n in ("dc1", "dc2")]
    telegram["domains"] = [{"name": WEB, "port": port, "url": f"https://{WEB}:{port}/"}]
    telegram["ports"] = [port]
    telegram["address_space"] = ["127.0.40.0/24"]
    data["resolvers"]["control"] = [
        {"name": "doh", "url": f"https://{PROXIED['doh']}:{port}/dns-query"},
        {"name": "control", "address": "127.0.0.1", "port": world.control.port, "protocol": "tcp"},
    ]
    data["baseline"] = {"targets": [
        {"name": "site", "address": PROXIED["site"], "port": port, "sni": "site.example"},
        {"name": "tcp-site", "address": PROXIED["tcp-site"], "port": port},
    ]}
    return data


async def test_behind_a_transparent_proxy_every_target_is_offline(world: World, proxy: int) -> None:
    """Every connect succeeds and the vantage's resolvers answer, but nothing verifies:
    `vantage_offline` everywhere, never a block (without the proof, the DCs' HTTP 400 to
    MTProto would read as protocol_filtering and the front's as a failed TLS)."""
    for resolver in (world.resolver, world.control):
        resolver.zone[f"{WEB}."] = {"A": [PROXIED["web"]]}
    result = await run_round(parse_config(yaml.safe_dump(proxied_config(world, proxy)), "p.yaml"))
    v = verdicts(result)
    assert {x.verdict for x in v.values()} == {"vantage_offline"}, {x.target: x.rule for x in v.values()}
    assert not BLOCKING_VERDICTS & {x.verdict for x in v.values()}
    # over IPv4 the baseline's bare TCP connect answered: the rule says it proves nothing;
    # over IPv6 (the front's AAAA) no baseline site exists at all
    assert {x.rule for x in v.values() if x.target != f"{WEB}/v6"} == {"connectivity_unproven"}
    assert v[f"{WEB}/v6"].rule == "baseline_unreachable"
    assert result.baseline.ipv4 and result.network.baseline_sites == {"site": False, "tcp-site": True}
    assert not result.network.online and not result.network.baseline_blocked
    assert result.network.online_evidence == []
    # what the trap looks like: every connect succeeded, MTProto got garbage, DNS answered
    seen = {(o.target, o.check): o for o in result.observations if o.role != "differential"}
    assert all(o.ok for o in result.observations if o.check == "tcp")
    assert seen[(f"dc1-v4:{proxy}", "mtproto")].failure in ("mtproto_unexpected_response",
                                                           "eof_error")  # HTTP 400 / no TLS
    assert not seen[(f"{WEB}/v4", "tls")].ok and not seen[("site", "tls")].ok
    assert any(o.ok for o in result.observations if o.check == "dns" and o.details.get("protocol") != "doh")


async def test_behind_a_transparent_proxy_without_a_tcp_site(world: World, proxy: int) -> None:
    data = proxied_config(world, proxy)
    data["baseline"]["targets"] = data["baseline"]["targets"][:1]
    result = await run_round(parse_config(yaml.safe_dump(data), "p.yaml"))
    assert {(v.verdict, v.rule) for v in result.verdicts} == {("vantage_offline", "baseline_unreachable")}


async def test_a_failed_baseline_with_a_verified_service_is_a_blocked_baseline(world: World) -> None:
    """The baseline is gone, the web front's verified handshake and the DCs' MTProto answers
    prove the vantage online: the baseline is blocked, the targets are judged (ok here),
    and each verdict names the baseline's failure."""
    await world.baseline.stop()
    result = await world.round()
    network = result.network
    assert not result.baseline.ok
    assert network.online and network.online_ipv4 and not network.online_ipv6
    assert network.baseline_blocked and network.baseline_sites == {"site": False}
    assert any("verified TLS 127.0.20.1" in p for p in network.online_evidence)
    assert any("MTProto resPQ" in p for p in network.online_evidence)
    v = verdicts(result)
    assert v.pop(f"{WEB}/v6").verdict == "vantage_offline"  # nothing answers over IPv6 here
    assert {x.verdict for x in v.values()} == {"ok"}
    for verdict in v.values():
        assert any(o.messenger is None and o.failure == "connection_refused" for o in verdict.evidence)
        assert "baseline of this family is blocked" in verdict.reason


async def test_blocked_baseline_and_blocked_dcs(world: World) -> None:
    """Baseline and DCs refused, the front verified: tcp_reset for the DCs, not offline."""
    await world.baseline.stop()
    for server in world.dcs:
        await server.stop()
    v = verdicts(await world.round())
    assert v[f"{WEB}/v4"].verdict == "ok"
    assert {v[t].verdict for t in v if t.startswith("dc")} == {"tcp_reset"}


async def test_an_ipv4_only_vantage_says_offline_for_ipv6(world: World) -> None:
    """Nothing answers over IPv6 (no v6 baseline answers, the DCs' v6 addresses refuse):
    the v6 targets are vantage_offline, the v4 ones judged; no v6 baseline configured
    means no blocked baseline either."""
    data = world.config_data()
    data["messengers"]["telegram"]["datacenters"] = [
        {"name": "dc1", "addresses": ["127.0.10.1", "::1"]}]
    data["resolvers"]["public_networks"] += ["::1/128"]
    result = await run_round(parse_config(yaml.safe_dump(data), "unit.yaml"))
    v = verdicts(result)
    port = world.dc_port
    assert (v[f"dc1-v6:{port}"].verdict, v[f"dc1-v6:{port}"].rule) == ("vantage_offline",
                                                                      "baseline_unreachable")
    assert v[f"dc1-v4:{port}"].verdict == "ok"
    assert (v[f"{WEB}/v6"].verdict, v[f"{WEB}/v6"].rule) == ("vantage_offline", "baseline_unreachable")
    assert result.network.online_ipv4 and not result.network.online_ipv6
    assert not result.network.baseline_blocked


async def _sites_round(world: World, require: str) -> RoundResult:
    """Three verified baseline sites (all on the world's front), two of them refusing."""
    data = world.config_data()
    port = world.web.port
    data["baseline"] = {"require": require, "targets": [
        {"name": "up", "address": world.web.host, "port": port, "sni": WEB},
        {"name": "down-1", "address": "127.0.20.2", "port": port, "sni": WEB, "kind": "domestic"},
        {"name": "down-2", "address": "127.0.20.3", "port": port, "sni": WEB},
    ]}
    return await run_round(parse_config(yaml.safe_dump(data), "unit.yaml"))


async def test_any_of_rule(world: World) -> None:
    result = await _sites_round(world, "any")
    assert result.baseline.ipv4 and not result.network.baseline_blocked
    assert result.network.baseline_sites == {"up": True, "down-1": False, "down-2": False}


async def test_majority_rule(world: World) -> None:
    """One of three answers: no majority, so the baseline failed, and as the vantage is
    proven online (that one site's verified handshake among others) it is blocked."""
    result = await _sites_round(world, "majority")
    assert not result.baseline.ipv4 and result.network.baseline_blocked
    assert {v.verdict for v in result.verdicts if v.target != f"{WEB}/v6"} == {"ok"}
