"""Alerts from the rules reach a real Alertmanager, routed and inhibited as configured.

Prometheus loads the shipped rules (only `for`/`keep_firing_for` shortened, 10m -> 10s)
and scrapes fake probes; Alertmanager runs the shipped config with its webhook receivers
pointed at a local collector. What on-call people would get is what is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import promstack
from .conftest import iran_2015_probes, require_prometheus, serve_fake_probes
from .fakeprobe import FakeProbe


@dataclass
class Stack:
    probes: list[FakeProbe]
    prometheus: promstack.Prometheus
    alertmanager: promstack.Alertmanager
    webhook: promstack.WebhookReceiver


def require_alertmanager() -> None:
    if promstack.alertmanager_binary() is None:
        pytest.skip("alertmanager not installed (Debian package prometheus-alertmanager)")


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Prometheus + Alertmanager + webhook collector around the probes the test asks for."""
    require_prometheus()
    require_alertmanager()
    probes: list[FakeProbe] = request.param()
    started: list[object] = []
    servers = serve_fake_probes(probes)
    started += servers
    try:
        webhook, am, prom = promstack.start_alerting(
            tmp_path, [s.address for s in servers], started)
        yield Stack(probes, prom, am, webhook)
    finally:
        for server in reversed(started):
            server.stop()  # type: ignore[attr-defined]


def outage_probes() -> list[FakeProbe]:
    """The service is down: the subject and the control both time out everywhere."""
    subject, control = iran_2015_probes()
    subject.set_all("ip_blocking")
    control.set_all("ip_blocking")
    return [subject, control]


def uplink_cut_probes() -> list[FakeProbe]:
    """The subject's own network is down: its baseline fails, every verdict vantage_offline."""
    subject, control = iran_2015_probes()
    subject.baseline = False
    return [subject, control]


def blocked_baseline_probes() -> list[FakeProbe]:
    """Issue 14: the censor also blocks the baseline, but the subject proved connectivity."""
    subject, control = iran_2015_probes()
    subject.baseline, subject.online = False, True
    return [subject, control]


def lossy_probes() -> list[FakeProbe]:
    """Issue 9: the subject's own network is lossy (degraded); no target is blocked."""
    subject, control = iran_2015_probes()
    subject.verdicts, subject.degraded = {}, True
    return [subject, control]


@pytest.mark.parametrize("stack", [blocked_baseline_probes], indirect=True)
def test_a_blocked_baseline_still_pages_the_block(stack: Stack) -> None:
    stack.prometheus.wait_for_alert("BaselineBlocked", {"vantage": "ir-lab"}, timeout=60)
    alert = stack.prometheus.wait_for_alert("MessengerBlocked", {"vantage": "ir-lab"}, timeout=60)
    assert "cloudflare, quad9" in stack.prometheus.firing("BaselineBlocked")[0]["annotations"]["description"]
    stack.webhook.wait_for_alert("MessengerBlocked", path="/page", timeout=30)  # not inhibited
    assert alert["labels"]["severity"] == "page"
    assert not stack.prometheus.firing("VantageOffline")


@pytest.mark.parametrize("stack", [lossy_probes], indirect=True)
def test_a_lossy_vantage_is_a_degraded_ticket_never_a_page(stack: Stack) -> None:
    stack.prometheus.wait_for_alert("VantageDegraded", {"vantage": "ir-lab"}, timeout=60)
    stack.webhook.wait_for_alert("VantageDegraded", path="/ticket", timeout=30)
    (status,) = stack.prometheus.query('vantage_messenger:reach_status:code{vantage="ir-lab"}')
    assert status["value"][1] == "6"
    assert not stack.webhook.notifications("/page")


@pytest.mark.parametrize("stack", [iran_2015_probes], indirect=True)
def test_block_pages_through_alertmanager(stack: Stack) -> None:
    alert = stack.prometheus.wait_for_alert("MessengerBlocked", {"vantage": "ir-lab"}, timeout=60)
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["country"] == "IR"
    assert "dns_injection" in alert["annotations"]["description"]
    assert "ip_blocking" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"].endswith("#messengerblocked")
    stack.alertmanager.wait_for_alert("MessengerBlocked", {"vantage": "ir-lab"}, timeout=30)
    paged = stack.webhook.wait_for_alert("MessengerBlocked", path="/page", timeout=30)
    assert paged["labels"]["messenger"] == "telegram"
    # the control is never called blocked, and nothing else fires
    assert {a["labels"]["vantage"] for a in stack.prometheus.firing("MessengerBlocked")} == {"ir-lab"}
    assert {a["labels"]["alertname"] for a in stack.prometheus.firing()} == {"MessengerBlocked"}


@pytest.mark.parametrize("stack", [outage_probes], indirect=True)
def test_outage_is_a_ticket_not_a_block(stack: Stack) -> None:
    stack.prometheus.wait_for_alert("MessengerOutage", {"messenger": "telegram"}, timeout=60)
    stack.webhook.wait_for_alert("MessengerOutage", path="/ticket", timeout=30)
    names = {a["labels"]["alertname"] for a in stack.prometheus.alerts()}  # pending too
    assert "MessengerBlocked" not in names
    assert not stack.webhook.notifications("/page")


@pytest.mark.parametrize("stack", [uplink_cut_probes], indirect=True)
def test_uplink_cut_is_vantage_offline_only(stack: Stack) -> None:
    alert = stack.prometheus.wait_for_alert("VantageOffline", {"vantage": "ir-lab"}, timeout=60)
    assert alert["labels"]["severity"] == "ticket"
    time.sleep(3)  # the shortened MessengerBlocked `for` (10s) has had time since the start
    names = {a["labels"]["alertname"] for a in stack.prometheus.alerts()}
    assert names == {"VantageOffline"}
    assert not stack.webhook.notifications("/page")


@pytest.mark.parametrize("stack", [iran_2015_probes], indirect=True)
def test_block_turns_into_probe_absent_when_the_probe_goes_silent(stack: Stack) -> None:
    """A blocked vantage that goes silent: ProbeAbsent fires and inhibits the page."""
    stack.prometheus.wait_for_alert("MessengerBlocked", {"vantage": "ir-lab"}, timeout=60)
    stack.probes[0].silent = True  # its scrapes fail from now on
    stack.prometheus.wait_for_alert("ProbeAbsent", {"vantage": "ir-lab"}, timeout=60)
    stack.alertmanager.wait_for_alert(
        "MessengerBlocked", {"vantage": "ir-lab"}, state="suppressed", timeout=30
    )


def test_alertmanager_inhibitions(tmp_path: Path) -> None:
    """VantageOffline/ProbeAbsent mute that vantage's block; MessengerOutage that messenger's."""
    require_alertmanager()
    with promstack.start_alertmanager(tmp_path) as am:
        assert isinstance(am, promstack.Alertmanager)

        def alert(name: str, **labels: str) -> dict[str, object]:
            return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name}}

        am.post_alerts(
            [
                alert("VantageOffline", severity="ticket", vantage="ir-a"),
                alert("ProbeAbsent", severity="ticket", vantage="ir-b"),
                alert("MessengerOutage", severity="ticket", messenger="signal"),
                alert("MessengerBlocked", severity="page", vantage="ir-a", messenger="telegram"),
                alert("MessengerBlocked", severity="page", vantage="ir-b", messenger="telegram"),
                alert("MessengerBlocked", severity="page", vantage="ir-c", messenger="signal"),
                alert("MessengerBlocked", severity="page", vantage="ir-d", messenger="telegram"),
                # a blocked baseline mutes nothing; an offline vantage mutes its network tickets
                alert("BaselineBlocked", severity="ticket", vantage="ir-d"),
                alert("VantageDegraded", severity="ticket", vantage="ir-a"),
                alert("BaselineBlocked", severity="ticket", vantage="ir-b"),
            ]
        )
        am.wait_for_alert("VantageDegraded", {"vantage": "ir-a"}, state="suppressed", timeout=20)
        am.wait_for_alert("BaselineBlocked", {"vantage": "ir-b"}, state="suppressed", timeout=20)
        am.wait_for_alert("BaselineBlocked", {"vantage": "ir-d"}, state="active", timeout=20)
        for vantage in ("ir-a", "ir-b", "ir-c"):
            am.wait_for_alert("MessengerBlocked", {"vantage": vantage}, state="suppressed", timeout=20)
        am.wait_for_alert("MessengerBlocked", {"vantage": "ir-d"}, state="active", timeout=20)
        states = {
            a["labels"].get("vantage", a["labels"].get("messenger")): a["status"]["state"]
            for a in am.alerts()
            if a["labels"]["alertname"] == "MessengerBlocked"
        }
        assert states == {"ir-a": "suppressed", "ir-b": "suppressed", "ir-c": "suppressed", "ir-d": "active"}
