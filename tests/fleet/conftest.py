"""Fixtures for the fleet tests: synthetic probes scraped by a real Prometheus.

``probe_targets`` is the one place that decides what Prometheus scrapes. Today it serves
``FakeProbe`` expositions from loopback aiohttp servers; the lab end-to-end tests provide
real probes instead and reuse everything else (promstack.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import promstack
from .fakeprobe import FakeProbe


def iran_2015_probes() -> list[FakeProbe]:
    """A subject vantage under an Iran-2015-style block, and a control that reaches all."""
    subject = FakeProbe(vantage="ir-lab", country="IR", role="subject", asn="AS64501")
    subject.verdicts = {
        "web.telegram.org/v4": "dns_injection",
        "web.telegram.org/v6": "dns_injection",
        "dc1-v4:443": "ip_blocking",
        "dc2-v4b:443": "ip_blocking",
        "dc1-v6:80": "tcp_reset",
    }
    control = FakeProbe(vantage="nl-lab", country="NL", role="control", asn="AS64502")
    return [subject, control]


def fleet_probes() -> list[FakeProbe]:
    """The Iran scenario plus a second subject vantage with TLS tampering and a third cut
    off from abroad.

    Together they make every board panel (DNS and TLS failures, interception verdicts,
    latency) return data.
    """
    tls = FakeProbe(vantage="ir-lab-2", country="IR", role="subject", asn="AS64503")
    tls.verdicts = {
        "web.telegram.org/v4": "tls_interception",
        "web.telegram.org/v6": "sni_filtering",
        "dc1-v4:443": "protocol_filtering",
    }
    # issue 19: a vantage in a shutdown with a domestic whitelist (its status panel row and
    # the network-state timeline show it; it adds no blocked target)
    cut = FakeProbe(vantage="ir-lab-3", country="IR", role="subject", asn="AS64504", cut=True)
    return [*iran_2015_probes(), tls, cut]


def serve_fake_probes(probes: list[FakeProbe]) -> list[promstack.MetricsServer]:
    """Start one loopback /metrics server per fake probe (the caller stops them)."""
    servers: list[promstack.MetricsServer] = []
    try:
        for probe in probes:
            servers.append(promstack.MetricsServer(probe.render).start())
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def require_prometheus() -> None:
    """Skip (with the reason) when the prometheus binary is not installed."""
    if not promstack.have_prometheus():
        pytest.skip("prometheus binary not installed (Debian package prometheus)")


@pytest.fixture(scope="module")
def fake_probes() -> list[FakeProbe]:
    return fleet_probes()


@pytest.fixture(scope="module")
def probe_targets(fake_probes: list[FakeProbe]) -> Iterator[list[str]]:
    """host:port addresses serving probe /metrics, stopped when the module is done."""
    servers = serve_fake_probes(fake_probes)
    try:
        yield [s.address for s in servers]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def fleet_prometheus(
    probe_targets: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[promstack.Prometheus]:
    """A real Prometheus with the repo's rules (timings shortened) scraping the probes.

    It is ready when every probe's verdicts are in and the rules have produced the fleet
    status, so tests can query immediately.
    """
    require_prometheus()
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    rules = promstack.shorten_rules(workdir / "rules")
    prom = promstack.start_prometheus(
        workdir,
        scrape_configs=[promstack.scrape_job("reach", probe_targets)],
        rule_files=rules,
    )
    try:
        prom.wait_for_series("count by (vantage) (reach_verdict)", count=len(probe_targets))
        prom.wait_rules_evaluated()
        prom.wait_for_series("vantage_messenger:reach_status:code", count=len(probe_targets))
        # a block is a block once it fills most of the (shortened) persistence window
        prom.wait_for_series("country_messenger:reach_status:code == 5")
        # rate() needs two samples of the counters inside its window
        prom.wait_for_series("rate(reach_check_failures_total[1m]) > 0")
        yield prom
    finally:
        prom.stop()
