"""The apps' ways around a block: Signal's domain fronting (the `fronted` check against a
real TLS front), a configured WhatsApp proxy (Noise through it, plain and TLS-wrapped),
and the per-messenger answer "circumvention works", which never changes the service's own
status."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from probe.inputs.config import ConfigError, parse_config
from probe.inputs.plan import plan
from probe.judge.circumvention import answer, by_messenger
from probe.model import failures as F
from probe.sinks.statuspage import messenger_status
from tests.support import checks
from tests.support._common import HttpSpec
from tests.support.noiseserver import NoiseServer, root_pem
from tests.support.tlsserver import LabCA, TlsServer

FRONT = "github.githubassets.com"
REFLECTOR = "reflector-signal.global.ssl.fastly.net"


def test_answer_from_the_detours_only() -> None:
    assert answer([("", "tcp_reset"), ("domain_fronting", "ok")]) == "yes"
    assert answer([("", "ok"), ("domain_fronting", "sni_filtering"),
                   ("domain_fronting", "inconclusive")]) == "no"
    assert answer([("", "ok")]) == "untested"
    assert answer([("domain_fronting", "vantage_offline")]) == "untested"
    assert by_messenger([("signal", "domain_fronting", "ok")], ["telegram", "signal"]) == {
        "telegram": "untested", "signal": "yes"}


def test_a_working_detour_never_turns_a_block_into_ok() -> None:
    # the status page reads the service's own verdicts; the detour's are filtered out before
    assert messenger_status(["tcp_reset", "ok"], {"online": True}, "subject") == "blocked"


async def _fronted(server: TlsServer, ca_file: Path) -> tuple[str | None, dict[str, object]]:
    where = checks.target("127.0.0.1", server.port, name=f"{FRONT}/v4", domain=FRONT,
                          messenger="signal")
    (obs,) = await checks.run("fronted", where, checks.env(3.0, ca_file=ca_file),
                              options={"host": REFLECTOR, "path": "/service/v1/websocket/"})
    return obs.failure, obs.details


async def test_fronting_is_proven_by_signals_confirmation_header(tmp_path: Path) -> None:
    ca = LabCA()
    ca_file = ca.write_ca_pem(tmp_path / "ca.pem")
    spec = HttpSpec(status=400, extra_headers={"X-Signal-Timestamp": "1733300000000"})
    async with TlsServer(ca=ca, names=[FRONT], http=spec) as signal_behind_cdn:
        failure, details = await _fronted(signal_behind_cdn, ca_file)
    assert failure is None, details
    assert details["host"] == REFLECTOR and details["front"] == FRONT
    assert details["headers"] == {"x-signal-timestamp": "1733300000000"}
    # the CDN's own answer (the reflector unknown, or a censor's page): no proof
    async with TlsServer(ca=ca, names=[FRONT], http=HttpSpec(status=200)) as cdn_only:
        failure, details = await _fronted(cdn_only, ca_file)
    assert failure == F.HTTP_UNEXPECTED_STATUS and "x-signal-timestamp" in str(details["error"])


def test_fronting_groups_are_opt_in(tmp_path: Path) -> None:
    def targets(signal: dict[str, object]) -> list[str]:
        config = parse_config(f"vantage: {{name: t}}\nmessengers: {{signal: {signal}}}\n".replace("'", ""))
        return [t.name for p in plan(config) for t in p.targets if t.circumvention]
    assert targets({}) == []
    fronts = targets({"circumvention": "true"})
    assert f"{FRONT}/v4" in fronts and "www.google.com/v6" in fronts and len(fronts) == 16


def _proxy_config(tmp_path: Path, root: Path, port: int, tls: bool) -> str:
    return (f"vantage: {{name: t}}\ntls: {{trust: {{whatsapp: {root}}}}}\n"
            f"messengers:\n  whatsapp:\n    whatsapp_proxies:\n"
            f"      - {{name: wa-proxy, address: 127.0.0.1, port: {port}, tls: {str(tls).lower()}}}\n")


def test_a_whatsapp_proxy_needs_an_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="address"):
        parse_config("vantage: {name: t}\nmessengers: {whatsapp: {whatsapp_proxies: [{name: p}]}}\n")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-wrapped"])
async def test_noise_through_a_whatsapp_proxy(tmp_path: Path, tls: bool) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(root_pem())
    async with NoiseServer() as chat:
        relay = _Relay(chat.port, tls, tmp_path)
        async with relay:
            config = parse_config(_proxy_config(tmp_path, root, relay.port, tls))
            (target,) = [t for p in plan(config) for t in p.targets if t.circumvention]
            assert (target.name, target.group, target.circumvention) == (
                "wa-proxy-v4:" + str(relay.port), "proxy", "whatsapp_proxy")
            (obs,) = await checks.run("noise", target, checks.env(3.0, trust={"whatsapp": root}),
                                      options=target.steps[-1].options)
    assert obs.failure is None, obs.details
    assert len(chat.hellos) == 1  # the handshake went through the relay to the chat server


class _Relay:
    """A WhatsApp proxy in miniature: a TCP (optionally TLS-terminating) relay to the chat
    server, as github.com/WhatsApp/proxy's HAProxy does."""

    def __init__(self, upstream: int, tls: bool, tmp_path: Path) -> None:
        self.upstream = upstream
        self.port = 0
        self._context: ssl.SSLContext | None = None
        if tls:
            ca = LabCA()
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ca.ca.issue_cert("proxy.example").configure_cert(self._context)
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
