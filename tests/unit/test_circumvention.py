"""The apps' ways around a block: Signal's domain fronting (the `fronted` check against a
real TLS front), a configured WhatsApp proxy (Noise through it, plain and TLS-wrapped),
and the per-messenger answer "circumvention works", which never changes the service's own
status."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from probe.inputs.config import ConfigError, parse_config
from probe.inputs.plan import plan
from probe.judge.circumvention import answer, by_messenger
from probe.model import failures as F
from probe.model.observation import RoundDraft, Verdict
from probe.sinks.metrics import Metrics
from probe.sinks.statuspage import History, messenger_status, render_page
from tests.support import checks
from tests.support._common import HttpSpec
from tests.support.noiseserver import NoiseServer, root_pem
from tests.support.tlsserver import LabCA, TlsServer
from tests.support.waproxy import WhatsappProxy

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
    async with NoiseServer() as chat, WhatsappProxy(upstream=("127.0.0.1", chat.port), tls=tls) as relay:
        config = parse_config(_proxy_config(tmp_path, root, relay.port, tls))
        (target,) = [t for p in plan(config) for t in p.targets if t.circumvention]
        assert (target.name, target.group, target.circumvention) == (
            "wa-proxy-v4:" + str(relay.port), "proxy", "whatsapp_proxy")
        (obs,) = await checks.run("noise", target, checks.env(3.0, trust={"whatsapp": root}),
                                  options=target.steps[-1].options)
    assert obs.failure is None, obs.details
    assert len(chat.hellos) == 1  # the handshake went through the relay to the chat server


def _round_json(verdicts: list[dict[str, object]]) -> dict[str, object]:
    return {"started": "2026-11-25T04:00:00+00:00", "verdicts": verdicts, "observations": [],
            "network": {"online": True}}


def test_the_status_card_says_whether_circumvention_works() -> None:
    verdicts: list[dict[str, object]] = [
        {"messenger": "signal", "target": "chat.signal.org/v4", "rule": "r", "evidence": [],
         "verdict": "ip_blocking"},
        {"messenger": "signal", "target": "www.google.com/v4", "rule": "r", "evidence": [],
         "verdict": "ok", "circumvention": "domain_fronting"},
        {"messenger": "telegram", "target": "dc1-v4:443", "rule": "r", "evidence": [],
         "verdict": "ok"},
    ]
    page = render_page(_round_json(verdicts), History(), vantage={"name": "s", "role": "subject"},
                       now=1_800_000_000.0)
    cards = dict(re.findall(r"<section class='card' data-messenger='(\w+)'>(.*?)</section>", page))
    assert "1 of 1 targets blocked" in cards["signal"]  # the detour is not one of Signal's targets
    assert "data-status='blocked'" in cards["signal"]
    assert "circumvention works: yes" in cards["signal"]
    assert "circumvention works: untested" in cards["telegram"]


def test_metrics_keep_detours_out_of_reach_verdict() -> None:
    now = time.time()
    draft = RoundDraft(parse_config("vantage: {name: v}\n").vantage.identity(), targets=[],
                       started=now - 1, finished=now)
    result = draft.judged([
        Verdict("signal", "chat.signal.org/v4", "ip_blocking", "connect_timeout", "", []),
        Verdict("signal", "www.google.com/v4", "ok", "all_checks_ok", "", [],
                circumvention="domain_fronting"),
        Verdict("whatsapp", "wa-proxy-v4:443", "tcp_reset", "noise_reset", "", [],
                circumvention="whatsapp_proxy"),
    ])
    metrics = Metrics()
    metrics.record_round(result)
    text = metrics.render().decode()
    verdict_lines = [line for line in text.splitlines() if line.startswith("reach_verdict{")]
    assert verdict_lines == ['reach_verdict{vantage="v",messenger="signal",target="chat.signal.org/v4",'
                             'verdict="ip_blocking"} 1']
    assert 'reach_circumvention{vantage="v",messenger="signal",answer="yes"} 1' in text
    assert 'reach_circumvention{vantage="v",messenger="whatsapp",answer="no"} 1' in text
    assert ('reach_circumvention_verdict{vantage="v",messenger="signal",target="www.google.com/v4",'
            'path="domain_fronting",verdict="ok"} 1') in text
