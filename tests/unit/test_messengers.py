"""Messengers as data: the WhatsApp and Signal catalogues, per-host trust anchors, AS
prefixes with their refresh path, and a fourth messenger that is one YAML file.

Everything runs on loopback with lab CAs; no test contacts a real address.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from probe.cli import app
from probe.inputs import catalog, prefixes
from probe.inputs.config import ConfigError, load_config, parse_config
from probe.inputs.plan import plan
from probe.measure.checks.base import TrustStore
from probe.measure.round import run_round
from tests.support import checks
from tests.support.dnsserver import DnsServer
from tests.support.tcpserver import HttpServer
from tests.support.tlsserver import LabCA, TlsServer

RUNNER = CliRunner()


def config_file(tmp_path: Path, data: dict[str, Any], name: str = "probe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def three(tmp_path: Path) -> Path:
    return config_file(tmp_path, {"vantage": {"name": "t"},
                                  "messengers": {"telegram": {}, "whatsapp": {}, "signal": {}}})


# ----------------------------------------------------------------- the catalogues


def test_probe_catalog_lists_the_three_messengers() -> None:
    assert catalog.available() == ["signal", "telegram", "whatsapp"]
    out = RUNNER.invoke(app, ["catalog"])
    assert out.exit_code == 0, out.output
    assert [d["messenger"] for d in yaml.safe_load_all(out.output)] == ["signal", "telegram",
                                                                       "whatsapp"]


def test_whatsapp_every_endpoint_family_and_port_is_a_target(tmp_path: Path) -> None:
    plans = {p.messenger: p for p in plan(load_config(three(tmp_path)))}
    whatsapp = plans["whatsapp"]
    chat = [t for t in whatsapp.targets if t.group == "chat"]
    assert len(chat) == 16 * 2 * 2
    assert {t.name for t in chat} >= {"e1.whatsapp.net/v4:5222", "e16.whatsapp.net/v6:443"}
    assert all([s.check for s in t.steps] == ["dns", "tcp", "noise"] and t.trust == "whatsapp"
               for t in chat)
    names = set(whatsapp.target_names)
    assert {"v.whatsapp.net/v4", "web.whatsapp.com/v6", "mmg.whatsapp.net/v4"} <= names
    # http://web.whatsapp.com answers 403 since 2022-12-02: retired, as OONI did
    assert not any(t.port == 80 and t.endpoint == "web.whatsapp.com" for t in whatsapp.targets)
    web = next(t for t in whatsapp.targets if t.name == "web.whatsapp.com/v4")
    assert web.steps[-1].options["expect"] == "any_status"
    assert web.steps[-1].options["user_agent"] == "browser"
    # the gateway Meta's proxy forwards to, on the proxy's three ports
    gateway = {t.name for t in whatsapp.targets if t.group == "gateway"}
    assert gateway == {f"g.whatsapp.net/v{f}:{p}" for f in (4, 6) for p in (443, 5222, 80)}
    assert len(whatsapp.targets) == 76
    # the address-space check: AS32934's shipped prefixes
    assert whatsapp.targets[0].in_address_space("157.240.1.53")
    assert whatsapp.targets[0].in_address_space("2a03:2880:f10c::1")
    assert not whatsapp.targets[0].in_address_space("198.51.100.7")
    # Telegram's names are unchanged by the port-naming rule
    assert "web.telegram.org/v4" in plans["telegram"].target_names


def test_signal_trust_is_per_host(tmp_path: Path) -> None:
    signal = {p.messenger: p for p in plan(load_config(three(tmp_path)))}["signal"]
    trust = {t.endpoint: t.trust for t in signal.targets}
    assert trust == {"chat.signal.org": "signal", "cdsi.signal.org": "signal",
                     "svr2.signal.org": "signal",
                     "storage.signal.org": "system+signal", "cdn.signal.org": "system+signal",
                     "cdn2.signal.org": "system+signal", "cdn3.signal.org": "system+signal",
                     "sfu.voip.signal.org": "system+signal", "updates.signal.org": "system+signal"}
    assert signal.address_space == ()  # Signal publishes none: the pinned CA proves the hosts
    assert len(signal.targets) == 18  # textsecure-service.whispersystems.org is retired


def test_telegram_media_dcs_port_5222_and_web_client(tmp_path: Path) -> None:
    telegram = {p.messenger: p for p in plan(load_config(three(tmp_path)))}["telegram"]
    names = set(telegram.target_names)
    assert {"dc1-v4:5222", "dc2-media-v4:443", "dc4-media-v6:5222",
            "pluto.web.telegram.org/v4", "flora.web.telegram.org/v6"} <= names
    media = next(t for t in telegram.targets if t.name == "dc2-media-v4:80")
    assert media.address == "149.154.167.151"
    assert len(telegram.targets) == 65


def test_the_shipped_signal_anchor_is_signals_root() -> None:
    """Both roots libsignal pins: the RSA one to 2032 and the Ed25519 one from 2026-06-16
    (without it, Signal's next rotation would be a false tls_interception everywhere)."""
    context = TrustStore(None, {}).context("signal")
    roots = context.get_ca_certs()
    assert len(roots) == 2
    for root in roots:
        subject = dict(x[0] for x in root["subject"])
        assert subject == {"countryName": "US", "stateOrProvinceName": "California",
                           "localityName": "Mountain View",
                           "organizationName": "Signal Messenger, LLC",
                           "commonName": "Signal Messenger"}
    assert sorted((r["notBefore"], r["notAfter"]) for r in roots) == [
        ("Jan 26 00:45:51 2022 GMT", "Jan 24 00:45:50 2032 GMT"),
        ("Jun 16 21:29:14 2026 GMT", "Jun 16 21:34:14 2036 GMT")]


def test_union_of_anchors(tmp_path: Path) -> None:
    lab, pinned = LabCA(organization="lab system CA"), LabCA(organization="lab Signal CA")
    files = {"signal": pinned.write_ca_pem(tmp_path / "signal.pem")}
    store = TrustStore(lab.write_ca_pem(tmp_path / "lab.pem"), files)
    pinned_only = {c["serialNumber"] for c in store.context("signal").get_ca_certs()}
    union = {c["serialNumber"] for c in store.context("system+signal").get_ca_certs()}
    assert len(pinned_only) == 1 and pinned_only < union
    assert TrustStore.unknown("system+signal", {}) == []
    assert TrustStore.unknown("system+nosuch", files) == ["nosuch"]


def test_unknown_trust_anchor_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    path = config_file(tmp_path, {"vantage": {"name": "t"}, "messengers": {"signal": {
        "groups": {"storage": {"trust": "system+signa"}}}}})
    with pytest.raises(ConfigError, match=r"probe.yaml:\d+: messengers.signal.groups.storage: "
                                          r"unknown trust anchor 'signa'"):
        load_config(path)


# ----------------------------------------------------------------- AS prefixes


def ripestat(resource: str = "32934", prefixes_: list[str] | None = None,
             status: str = "ok") -> dict[str, Any]:
    """An answer in the shape of RIPEstat's announced-prefixes data call."""
    listed = prefixes_ if prefixes_ is not None else [
        "157.240.0.0/17", "157.240.128.0/17", "31.13.64.0/18", "2a03:2880::/32"]
    return {
        "messages": [], "see_also": [], "version": "1.2", "data_call_name": "announced-prefixes",
        "data_call_status": "supported", "cached": False,
        "data": {
            "prefixes": [{"prefix": p, "timelines": [{"starttime": "2026-11-11T08:00:00",
                                                      "endtime": "2026-11-25T00:00:00"}]}
                         for p in listed],
            "query_starttime": "2026-11-11T08:00:00", "query_endtime": "2026-11-25T00:00:00",
            "resource": resource, "latest_time": "2026-11-25T00:00:00",
            "earliest_time": "2000-08-01T00:00:00",
        },
        "query_id": "x", "process_time": 12, "server_id": "app", "build_version": "live",
        "status": status, "status_code": 200, "time": "2026-11-25T04:00:00.000000",
    }


def test_refresh_from_ripestat_rewrites_the_file(tmp_path: Path) -> None:
    source = tmp_path / "ripestat.json"
    source.write_text(json.dumps(ripestat()))
    out = tmp_path / "AS32934.txt"
    result = RUNNER.invoke(app, ["prefixes", "AS32934", "--from", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "# source: RIPEstat announced-prefixes" in text and "# date: 2026-11-25T04:00" in text
    # the two /17s are collapsed, IPv4 first
    assert prefixes.parse(text, "x") == (ipaddress.ip_network("31.13.64.0/18"),
                                         ipaddress.ip_network("157.240.0.0/16"),
                                         ipaddress.ip_network("2a03:2880::/32"))


@pytest.mark.parametrize(("answer", "message"), [
    (ripestat(resource="15169"), "is for resource '15169', not AS32934"),
    (ripestat(status="error"), "RIPEstat call failed"),
    (ripestat(prefixes_=[]), "lists no prefixes"),
    (ripestat(prefixes_=["157.240.0.0/33"]), "bad prefix"),
    ({"status": "ok"}, "not a RIPEstat answer"),
])
def test_a_bad_ripestat_answer_never_empties_the_file(tmp_path: Path, answer: dict[str, Any],
                                                      message: str) -> None:
    source = tmp_path / "ripestat.json"
    source.write_text(json.dumps(answer))
    out = tmp_path / "AS32934.txt"
    out.write_text("157.240.0.0/16\n")
    result = RUNNER.invoke(app, ["prefixes", "AS32934", "--from", str(source), "--output", str(out)])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1
    assert out.read_text() == "157.240.0.0/16\n"


def test_a_refreshed_prefix_file_replaces_the_shipped_space_without_a_new_image(
        tmp_path: Path) -> None:
    source = tmp_path / "ripestat.json"
    source.write_text(json.dumps(ripestat(prefixes_=["198.51.100.0/24"])))
    out = RUNNER.invoke(app, ["prefixes", "AS32934", "--from", str(source), "--output",
                              str(tmp_path / "AS32934.txt")])
    assert out.exit_code == 0, out.output
    path = config_file(tmp_path, {"vantage": {"name": "t"}, "messengers": {"whatsapp": {
        "address_space_file": "AS32934.txt"}}})
    (whatsapp,) = plan(load_config(path))
    assert whatsapp.address_space == (ipaddress.ip_network("198.51.100.0/24"),)
    (tmp_path / "AS32934.txt").write_text("# refreshed\n198.51.100.0/24\n198.51.100.0/33\n")
    with pytest.raises(ConfigError, match=r"AS32934.txt:3: '198.51.100.0/33' is not a network"):
        load_config(path)
    both = config_file(tmp_path, {"vantage": {"name": "t"}, "messengers": {"whatsapp": {
        "address_space_file": "AS32934.txt", "address_space": ["198.51.100.0/24"]}}}, "both.yaml")
    with pytest.raises(ConfigError, match="at most one of address_space and address_space_file"):
        load_config(both)


def test_shipped_prefix_file_names_source_and_date() -> None:
    text = prefixes.bundled_path(32934).read_text()
    assert "# source:" in text and "# date:" in text and "refresh" in text
    loaded = prefixes.load(32934)
    # the ranges the hand-written list lacked (ipverse/asn-ip's AS32934 aggregation)
    for missing in ("45.64.40.0/22", "57.141.0.0/20", "163.77.132.0/23", "163.77.136.0/23"):
        assert ipaddress.ip_network(missing) in loaded
    assert ipaddress.ip_network("157.240.0.0/17") in loaded
    with pytest.raises(ConfigError, match="no prefix file for AS64999"):
        prefixes.load(64999)
    assert prefixes.parse_asn("as32934") == 32934
    with pytest.raises(ConfigError):
        prefixes.parse_asn("AS-x")


# ----------------------------------------------------------------- on loopback


@dataclass
class Net:
    """Loopback stand-ins: a resolver, a baseline site, the lab CA (the "system" store)
    and a separate Signal lab CA (the pinned anchor)."""

    tmp: Path
    resolver: DnsServer
    baseline: TlsServer
    lab: LabCA
    pinned: LabCA

    def config(self, messengers: dict[str, Any]) -> dict[str, Any]:
        return {
            "vantage": {"name": "unit"},
            "messengers": messengers,
            "resolvers": {"system": False,
                          "servers": [{"name": "isp", "address": "127.0.0.1",
                                       "port": self.resolver.port}],
                          "public_networks": ["127.0.0.0/8"]},
            "baseline": {"targets": [{"name": "site", "address": "127.0.0.1",
                                      "port": self.baseline.port, "sni": "baseline.example"}]},
            "schedule": {"timeouts": {"dns": 1.5, "connect": 1.5, "tls": 1.5, "http": 3}},
            "tls": {"ca_file": str(self.lab.write_ca_pem(self.tmp / "lab.pem")),
                    "trust": {"signal": str(self.pinned.write_ca_pem(self.tmp / "signal.pem"))}},
        }


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    zone = {"chat.signal.org": {"A": ["127.0.40.1"]}, "storage.signal.org": {"A": ["127.0.40.2"]},
            "chat.threema.example": {"A": ["127.0.41.1"]}}
    lab = LabCA(organization="lab system CA")
    resolver = DnsServer("127.0.0.1", 0, zone=zone)
    # a verified handshake with an unrelated site: what proves the vantage online
    baseline = TlsServer("127.0.0.1", 0, ca=lab, names=["baseline.example"])
    await resolver.start()
    await baseline.start()
    try:
        yield Net(tmp_path, resolver, baseline, lab, LabCA(organization="lab Signal CA"))
    finally:
        await resolver.stop()
        await baseline.stop()


def signal_overrides(port: int) -> dict[str, Any]:
    """The Signal catalogue with two of its hosts on a loopback port (its plans, its trust)."""
    def host(name: str) -> dict[str, Any]:
        return {"name": name, "port": port, "url": f"https://{name}:{port}/"}
    return {"groups": {"chat": {"endpoints": [host("chat.signal.org")]},
                       "storage": {"endpoints": [host("storage.signal.org")]},
                       **{g: {"endpoints": []} for g in ("registration", "media", "calls",
                                                         "updates")}}}


@pytest.mark.parametrize(("chat_ca", "storage_ca", "chat", "storage"), [
    # chat pinned to Signal's CA, storage behind a "public" CDN: both fine
    ("pinned", "lab", "ok", "ok"),
    # storage's CDN moves to Signal's CA (ooni/probe#2344 the other way round): still fine
    ("pinned", "pinned", "ok", "ok"),
    # chat shows a certificate that chains to the system store but not to Signal's CA: an
    # interceptor with a trusted (e.g. government-installed) root
    ("lab", "lab", "tls_interception", "ok"),
])
async def test_signal_pinned_ca_per_host(net: Net, chat_ca: str, storage_ca: str, chat: str,
                                         storage: str) -> None:
    cas = {"lab": net.lab, "pinned": net.pinned}
    servers = [TlsServer("127.0.40.1", 0, ca=cas[chat_ca], names=["chat.signal.org"])]
    port = await servers[0].start()
    servers.append(TlsServer("127.0.40.2", port, ca=cas[storage_ca], names=["storage.signal.org"]))
    await servers[1].start()
    try:
        config = parse_config(yaml.safe_dump(net.config({"signal": signal_overrides(port)})),
                              "unit.yaml")
        result = await run_round(config)
    finally:
        for server in servers:
            await server.stop()
    v4 = {v.target.removesuffix("/v4"): v for v in result.verdicts if "/v4" in v.target}
    assert (v4["chat.signal.org"].verdict, v4["storage.signal.org"].verdict) == (chat, storage)
    if chat == "tls_interception":
        assert v4["chat.signal.org"].rule == "tls_certificate_invalid"
        assert "ssl_unknown_authority" in {e.failure for e in v4["chat.signal.org"].evidence}
    assert all(v.messenger == "signal" for v in result.verdicts)


async def test_pinned_check_rejects_a_system_ca_certificate(net: Net) -> None:
    """One handshake, by hand: the pinned anchor refuses what the system store accepts."""
    server = TlsServer("127.0.40.1", 0, ca=net.lab, names=["chat.signal.org"])
    port = await server.start()
    environment = checks.env(2.0, ca_file=net.lab.write_ca_pem(net.tmp / "lab.pem"),
                             trust={"signal": net.pinned.write_ca_pem(net.tmp / "signal.pem")})
    try:
        got = {}
        for trust in ("signal", "system", "system+signal"):
            where = checks.target("127.0.40.1", port, domain="chat.signal.org", trust=trust,
                                  messenger="signal")
            (obs,) = await checks.run("tls", where, environment)
            got[trust] = obs.failure
    finally:
        await server.stop()
    assert got == {"signal": "ssl_unknown_authority", "system": None, "system+signal": None}


THREEMA = """
# A fourth messenger, as an operator would add it: one YAML file, no code.
messenger: threema
description: a messenger the probe has no code for
groups:
  servers:
    ports: [{port}, {closed}]
    steps: [tcp]
    endpoints:
      - name: g1
        addresses: [127.0.41.2]
  names:
    ports: [{port}]
    steps: [dns, tcp]
    endpoints:
      - name: chat.threema.example
address_space: [127.0.41.0/24]
"""


async def test_a_fourth_messenger_is_one_yaml_file(net: Net) -> None:
    listener = HttpServer("127.0.41.1", 0)
    port = await listener.start()
    second = HttpServer("127.0.41.2", port)
    await second.start()
    closed = HttpServer("127.0.41.2", 0)  # bound, then stopped: a port nobody listens on
    closed_port = await closed.start()
    await closed.stop()
    (net.tmp / "catalogues").mkdir()
    (net.tmp / "catalogues" / "threema.yaml").write_text(THREEMA.format(port=port, closed=closed_port))
    path = config_file(net.tmp, net.config({"threema": {"catalog": "catalogues/threema.yaml"}}))
    try:
        check = RUNNER.invoke(app, ["check-config", str(path)])
        assert check.exit_code == 0, check.output
        assert "4 targets" in check.output
        result = await run_round(load_config(path))
    finally:
        await listener.stop()
        await second.stop()
    got = {v.target: (v.messenger, v.verdict) for v in result.verdicts}
    assert got == {
        f"g1-v4:{port}": ("threema", "ok"),
        f"g1-v4:{closed_port}": ("threema", "tcp_reset"),
        "chat.threema.example/v4": ("threema", "ok"),
        # no IPv6 baseline on this loopback: nothing is said about IPv6 targets
        "chat.threema.example/v6": ("threema", "vantage_offline"),
    }


def test_a_bad_catalogue_file_names_its_own_line(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("messenger: x\ngroups:\n  g:\n    endpoints: [{name: a}]\n"
                                     "    steps: [tcp]\n    portz: [1]\n")
    path = config_file(tmp_path, {"vantage": {"name": "t"}, "messengers": {"x": {"catalog": "x.yaml"}}})
    result = RUNNER.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'x.yaml'}:6: groups.g.portz: unknown key" in result.output


def test_two_endpoints_making_one_target_are_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path, {"vantage": {"name": "t"}, "messengers": {"whatsapp": {
        "groups": {"media": {"endpoints": [{"name": "web.whatsapp.com", "port": 443}]}}}}})
    result = RUNNER.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "two endpoints make the target 'web.whatsapp.com/v4'" in result.output
    assert result.output.count("\n") == 1
