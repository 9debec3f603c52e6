"""Issue 19: a shutdown with a domestic whitelist is named as a shutdown, everywhere a user
reads the round: its verdicts, `probe once`'s JSON and table, /metrics and the status page.

The round is built from observations as a probe in Iran in November 2019 would have made
them (the domestic bank's verified handshake answered; the international baseline, the
control resolvers and the messengers timed out; the ISP's resolver answered honestly) and
runs through the real judge, classifier and sinks.
"""

from __future__ import annotations

import io
import ipaddress
import json

from rich.console import Console

from probe.inputs.catalog import StepSpec, Target
from probe.judge.classify import classify_round
from probe.judge.vantage import judge
from probe.model import failures as F
from probe.model.observation import Baseline, Observation, RoundDraft, RoundResult, VantageIdentity
from probe.model.verdicts import BLOCKING_VERDICTS
from probe.sinks.metrics import Metrics
from probe.sinks.report import print_table
from probe.sinks.statuspage import History, messenger_status, render_page

LAB = (ipaddress.ip_network("198.18.0.0/15"),)
T0 = 1_800_000_000.0
DC = Target(messenger="telegram", name="dc1-v4:443", group="datacenters", endpoint="dc1", family=4,
            port=443, address="198.18.64.1", steps=(StepSpec(check="tcp"), StepSpec(check="mtproto")))
WEB = Target(messenger="whatsapp", name="web.whatsapp.com/v4", group="web", endpoint="web.whatsapp.com",
             family=4, port=443, domain="web.whatsapp.com", sni="web.whatsapp.com",
             steps=(StepSpec(check="dns"), StepSpec(check="tcp"), StepSpec(check="tls")), path="web")
SITES = [Target(messenger=None, name=name, group="baseline", endpoint=name, family=4, port=443,
                address=address, sni=f"{name}.example", steps=(StepSpec(check="tls"),))
         for name, address in (("bank", "198.18.1.44"), ("abroad", "198.18.2.10"))]


def observations(cut: bool = True) -> list[Observation]:
    timeout = F.GENERIC_TIMEOUT if cut else None
    found = [
        Observation(None, "bank", "tls", F.TLS_HANDSHAKE, None, "198.18.1.44", 443, T0,
                    role="control", details={"sni": "bank.example"}),
        Observation(None, "abroad", "tls", F.TLS_HANDSHAKE, timeout, "198.18.2.10", 443, T0,
                    role="control", details={"sni": "abroad.example"}),
        Observation("telegram", DC.name, "tcp", F.CONNECT, timeout, DC.address, 443, T0),
        Observation("whatsapp", WEB.name, "dns", F.RESOLVE, None, "198.18.1.53", 53, T0,
                    details={"protocol": "udp", "rcode": "NOERROR", "answers": ["198.18.81.11"]}),
        Observation("whatsapp", WEB.name, "dns", F.RESOLVE, F.GENERIC_TIMEOUT, "198.18.3.53", 53, T0,
                    role="control", details={"protocol": "udp"}),
        Observation("whatsapp", WEB.name, "tcp", F.CONNECT, F.GENERIC_TIMEOUT, "198.18.81.11", 443, T0),
    ]
    for i, obs in enumerate(found):
        obs.id = i
    return found


def shutdown_round(cut: bool = True, domestic: frozenset[str] = frozenset({"bank"})) -> RoundResult:
    draft = RoundDraft(VantageIdentity("ir-mci", "IR", 64500, "mobile", "subject"), [DC, WEB], T0,
                       finished=T0 + 12, baseline=Baseline(ipv4=True), observations=observations(cut))
    draft.network.baseline_sites = {"bank": True, "abroad": not cut}
    draft.network.baseline_ok = True
    draft.network.degraded = cut  # the international site's timeouts
    judge(draft, SITES, LAB, domestic)
    return draft.judged(classify_round(draft))


def test_every_target_names_the_cut_and_none_is_blocked() -> None:
    result = shutdown_round()
    assert {(v.target, v.verdict, v.rule) for v in result.verdicts} == {
        (DC.name, "vantage_offline", "international_cut"),
        (WEB.name, "vantage_offline", "international_cut")}
    assert not {v.verdict for v in result.verdicts} & BLOCKING_VERDICTS
    for verdict in result.verdicts:
        assert "cut off from abroad" in verdict.reason
        assert "answered: bank; failed: abroad" in verdict.reason
    network = result.json["network"]
    assert network["state"] == "international_cut" and network["international_cut"] is True
    assert network["online"] is True and network["baseline_blocked"] is False
    assert network["degraded"] is False
    assert {a["answer"] for a in result.json["answers"].values()} == {"unknown"}


def test_without_the_domestic_mark_the_same_round_is_judged_by_mechanism() -> None:
    """What the issue measured: the domestic site counted as online proof and the targets
    were judged by mechanism (here, with a one-handshake baseline, as loss the baseline
    shares; in the issue's run, ip_blocking). The mark (`kind: domestic`) is what lets the
    probe tell a shutdown."""
    result = shutdown_round(domestic=frozenset())
    assert result.network.online and not result.network.international_cut
    assert result.network.state == "degraded"
    assert not {v.rule for v in result.verdicts} & {"international_cut", "baseline_unreachable"}


def test_metrics_export_the_cut_as_its_own_state() -> None:
    metrics = Metrics()
    metrics.record_round(shutdown_round())
    text = metrics.render().decode()
    for line in ('reach_vantage_international_cut{vantage="ir-mci"} 1',
                 'reach_vantage_state{vantage="ir-mci",state="international_cut"} 1',
                 'reach_vantage_online{vantage="ir-mci"} 1',
                 'reach_baseline_blocked{vantage="ir-mci"} 0',
                 'reach_verdict{vantage="ir-mci",messenger="telegram",target="dc1-v4:443",'
                 'verdict="vantage_offline"} 1'):
        assert line in text, line
    assert text.count("reach_vantage_state{") == 1  # the current state only
    metrics.record_round(shutdown_round(cut=False))
    text = metrics.render().decode()
    assert 'reach_vantage_international_cut{vantage="ir-mci"} 0' in text
    assert 'reach_vantage_state{vantage="ir-mci",state="online"} 1' in text
    assert "international_cut\"}" not in text


def test_probe_once_table_says_so() -> None:
    out = io.StringIO()
    print_table(shutdown_round(), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "network international_cut" in text.splitlines()[0]
    assert "INTERNATIONAL CUT" in text and "only domestic sites answer (bank)" in text
    assert "ip_blocking" not in text


def test_status_page_and_api_status_show_the_cut() -> None:
    round_ = json.loads(json.dumps(shutdown_round().json))  # what /api/status serves
    assert round_["network"]["state"] == "international_cut"
    page = render_page(round_, History(), vantage={"name": "ir-mci", "role": "subject",
                                                   "country": "IR", "asn": 64500}, now=T0 + 30)
    assert "This vantage is cut off from abroad (international cut)" in page
    assert "only domestic sites answer (bank)" in page and "This vantage is offline" not in page
    assert "data-vantage-state='international_cut'" in page
    assert page.count("data-status='international_cut'") == 2  # one card per messenger
    assert messenger_status(["vantage_offline"], round_["network"], "subject") == "international_cut"
    assert messenger_status(["vantage_offline"], {"online": False}, "subject") == "offline"
