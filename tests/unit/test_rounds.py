"""Whole rounds on loopback: each server misbehaviour yields its failure string and verdict."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from probe.inputs.config import parse_config
from probe.measure.round import run_round
from probe.model.observation import Verdict
from tests.support._common import HttpSpec
from tests.support.tcpserver import HttpServer, ResetServer
from tests.support.tlsserver import TlsServer
from tests.unit.conftest import WEB, ProtocolFilteredDC, World, verdicts


def dc(world: World, n: int) -> str:
    return f"dc{n}-v4:{world.dc_port}"


async def test_everything_reachable_is_ok(world: World) -> None:
    result = await world.round()
    v = verdicts(result)
    assert v[dc(world, 1)].verdict == "ok" and v[dc(world, 1)].rule == "all_checks_ok"
    assert v[dc(world, 2)].verdict == "ok"
    assert v[f"{WEB}/v4"].verdict == "ok"
    # no IPv6 baseline on loopback: IPv6 targets are never called blocked
    assert v[f"{WEB}/v6"].verdict == "vantage_offline"
    # the neutral SNI first (before the service's name can trigger a residual block),
    # then the tls check and the http check
    assert world.web.server_names[1:] == [WEB, WEB]
    assert world.web.server_names[0] != WEB
    # the apps' transport (the primary), then the plain one (the differential)
    assert world.dcs[0].transports == ["obfuscated2/intermediate", "intermediate"]
    assert len(world.dcs[0].nonces) == 2


async def test_partial_dc_failure_is_reported_per_dc(world: World) -> None:
    await world.dcs[1].stop()
    filtered = ProtocolFilteredDC(world.dcs[1].host, world.dc_port)
    await filtered.start()
    world.dcs[1] = filtered
    result = await world.round()
    v = verdicts(result)
    assert v[dc(world, 1)].verdict == "ok"
    assert v[dc(world, 2)].verdict == "protocol_filtering"
    assert v[dc(world, 2)].rule == "mtproto_silenced"
    evidence = {(e.check, e.failure) for e in v[dc(world, 2)].evidence}
    assert ("mtproto", "generic_timeout_error") in evidence
    assert ("http", None) in evidence  # the DC answered plain HTTP: the protocol is filtered


@pytest.mark.parametrize(("mode", "verdict", "rule"), [
    ("garbage", "protocol_filtering", "mtproto_tampered"),
    ("wrong_nonce", "protocol_filtering", "mtproto_tampered"),
    ("transport_error", "inconclusive", "mtproto_transport_error"),
])
async def test_mtproto_answers(world: World, mode: str, verdict: str, rule: str) -> None:
    world.dcs[0].mode = mode
    result = await world.round()
    v = verdicts(result)[dc(world, 1)]
    assert (v.verdict, v.rule) == (verdict, rule)
    mtproto = next(o for o in result.observations if o.target == dc(world, 1) and o.check == "mtproto")
    assert mtproto.failure == "mtproto_unexpected_response"


async def test_dc_silent_to_every_protocol_is_inconclusive(world: World) -> None:
    world.dcs[0].mode = "silent"
    v = verdicts(await world.round())[dc(world, 1)]
    assert (v.verdict, v.rule) == ("inconclusive", "mtproto_failed")
    assert [e.failure for e in v.evidence] == ["generic_timeout_error"]


async def test_mtproto_transport_error_is_named(world: World) -> None:
    world.dcs[0].mode = "transport_error"
    result = await world.round()
    mtproto = next(o for o in result.observations if o.target == dc(world, 1) and o.check == "mtproto")
    assert "-404" in mtproto.details["error"]


async def test_port_nobody_listens_on_is_refused(world: World) -> None:
    await world.dcs[0].stop()
    result = await world.round()
    v = verdicts(result)[dc(world, 1)]
    assert (v.verdict, v.rule) == ("tcp_reset", "connect_reset")
    assert [e.failure for e in v.evidence] == ["connection_refused"]


async def test_listener_that_resets_every_connection(world: World) -> None:
    await world.dcs[0].stop()
    async with ResetServer(world.dcs[0].host, world.dc_port):
        result = await world.round()
    v = verdicts(result)[dc(world, 1)]
    assert (v.verdict, v.rule) == ("tcp_reset", "mtproto_reset_any_protocol")
    assert {e.failure for e in v.evidence} <= {"connection_reset", "eof_error"}


@pytest.mark.parametrize(("mode", "failure", "verdict"), [
    ("wrong_name", "ssl_invalid_hostname", "tls_interception"),
    ("unknown_ca", "ssl_unknown_authority", "tls_interception"),
])
async def test_bad_certificates(world: World, mode: str, failure: str, verdict: str) -> None:
    await world.restart_web(mode)
    result = await world.round()
    v = verdicts(result)[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == (verdict, "tls_certificate_invalid")
    assert v.evidence[0].failure == failure
    fetched = next(o for o in result.observations if o.check == "tls" and o.role == "differential")
    assert fetched.ok and len(fetched.details["peer_certificate_sha256"]) == 64


async def test_bogon_answer_is_dns_injection(world: World) -> None:
    world.resolver.set_behaviour("bogon")
    result = await world.round()
    v = verdicts(result)[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("dns_injection", "dns_fingerprint")
    dns = v.evidence[0]
    assert dns.failure == "dns_bogon_error"
    assert dns.details["answers"] == ["10.10.34.34"]
    assert dns.details["fingerprints"] == ["ooni.ir_4"]


@pytest.mark.parametrize(("behaviour", "failure"), [
    ("nxdomain", "dns_nxdomain_error"),
    ("servfail", "dns_servfail_error"),
    ("refused", "dns_refused_error"),
    ("noanswer", "dns_no_answer"),
    ("silent", "generic_timeout_error"),
])
async def test_resolver_failures_with_working_control(
    world: World, behaviour: str, failure: str
) -> None:
    world.resolver.set_behaviour(behaviour)
    result = await world.round()
    v = verdicts(result)[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("dns_blocking", "dns_failure_control_ok")
    assert v.evidence[0].failure == failure
    assert v.evidence[1].role == "control" and v.evidence[1].ok


async def test_failure_everywhere_is_not_a_block(world: World) -> None:
    world.resolver.set_behaviour("nxdomain")
    world.control.set_behaviour("nxdomain")
    v = verdicts(await world.round())[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("inconclusive", "dns_no_address")


async def test_two_answers_to_one_query_is_injection(world: World) -> None:
    world.resolver.set_behaviour("race")
    result = await world.round()
    v = verdicts(result)[f"{WEB}/v4"]
    assert v.verdict == "dns_injection"
    dns = next(o for o in result.observations if o.check == "dns" and o.primary and o.target == f"{WEB}/v4")
    assert dns.details["answers"] == ["10.10.34.34"]
    assert dns.details["late_answers"] == [["127.0.20.1"]]


async def test_answer_outside_address_space_that_fails_tls(world: World) -> None:
    data = world.config_data()
    data["messengers"]["telegram"]["address_space"] = ["127.0.10.0/24"]  # web's address is outside
    await world.restart_web("unknown_ca")
    result = await run_round(parse_config(yaml.safe_dump(data), "unit.yaml"))
    v = verdicts(result)[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("dns_injection", "dns_outside_space")
    assert {e.check for e in v.evidence} == {"dns", "tls"}


async def test_baseline_down_means_vantage_offline_never_a_block(world: World) -> None:
    await world.cut_off()
    result = await world.round()
    assert not result.baseline.ok
    assert {v.verdict for v in result.verdicts} == {"vantage_offline"}
    assert {v.rule for v in result.verdicts} == {"baseline_unreachable"}


async def _throttle_round(world: World, web_rate: float | None) -> dict[str, Verdict]:
    """The web front serves a 4 MB blob (paced to `web_rate` bit/s); the baseline a fast one."""
    await world.web.stop()
    world.web = TlsServer(world.web.host, world.web.port, ca=world.web.ca, names=world.web.names,
                          http=HttpSpec(blobs={"/blob": 4 << 20}, rate_bps=web_rate))
    await world.web.start()
    async with HttpServer("127.0.0.1", 0, http=HttpSpec(blobs={"/blob": 4 << 20})) as site:
        data = world.config_data()
        data["messengers"]["telegram"]["domains"][0]["url"] = f"https://{WEB}:{world.web.port}/blob"
        data["baseline"]["throughput_url"] = f"http://127.0.0.1:{site.port}/blob"
        data["http"] = {"max_bytes": 2 << 20, "transfer_seconds": 1}
        return verdicts(await run_round(parse_config(yaml.safe_dump(data), "unit.yaml")))


async def test_throttled_transfer_is_throttling(world: World) -> None:
    v = (await _throttle_round(world, 800_000))[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("throttling", "throughput_below_baseline")
    http = v.evidence[0]
    assert http.details["cut_by_time"] is True
    assert http.details["throughput_bps"] < 2_000_000


async def test_fast_transfer_is_never_throttling(world: World) -> None:
    v = (await _throttle_round(world, None))[f"{WEB}/v4"]
    assert (v.verdict, v.rule) == ("ok", "all_checks_ok")


async def test_a_slow_server_answering_out_of_order_is_no_loss(world: World) -> None:
    """A busy server answers its connections out of order: the front's first TLS handshake
    (connected, then kept waiting a second) is overtaken by the next attempt's. That attempt
    had its connect, so nothing was lost: it is not an overtaken one, and the front is ok.
    (Before, any overtaking counted as a lost packet, and a CPU-starved lab server made a
    control vantage call Signal `ip_blocking`.)"""
    upstream = world.web.port
    delayed = 0

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal delayed
        try:
            first = await reader.read(65536)
            if WEB.encode() in first and delayed == 0:  # the first handshake for the name waits
                delayed += 1
                await asyncio.sleep(1.0)
            up_reader, up_writer = await asyncio.open_connection("127.0.20.1", upstream)
            up_writer.write(first)

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                dst.close()

            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer),
                                 return_exceptions=True)
        finally:
            writer.close()

    server = await asyncio.start_server(relay, "127.0.20.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        data = world.config_data()
        data["messengers"]["telegram"]["domains"] = [{"name": WEB, "port": port}]
        result = await run_round(parse_config(yaml.safe_dump(data), "unit.yaml"))
    finally:
        server.close()
    assert delayed == 1
    tls = next(o for o in result.observations
               if o.check == "tls" and o.primary and o.target == f"{WEB}/v4")
    assert tls.ok and len(tls.tries()) >= 1
    assert "overtaken_seconds" not in tls.details, tls.details
    assert verdicts(result)[f"{WEB}/v4"].verdict == "ok"
