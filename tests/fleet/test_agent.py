"""Fleet topology on loopback: a vantage's Prometheus agent remote_writes to the centre.

This is the deployment of docs/fleet.md in miniature: the agent runs the shipped
configs/prometheus/prometheus-agent.yml (only its addresses adapted to loopback), scrapes
a probe, and the central Prometheus, which never contacts the vantage, receives the series
with the vantage label and computes the fleet status from them with the shipped rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import promstack
from .conftest import require_prometheus
from .fakeprobe import FakeProbe

AGENT_EXAMPLE = promstack.REPO / "configs" / "prometheus" / "prometheus-agent.yml"
VANTAGE = "ir-mci-1"  # the vantage named in the shipped agent example


def agent_config(probe_address: str, central_url: str) -> dict[str, Any]:
    """The shipped agent config with loopback addresses, fast timers and no secrets."""
    config = yaml.safe_load(AGENT_EXAMPLE.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["scrape_timeout"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [probe_address]}]
    (remote,) = config["remote_write"]
    remote["url"] = f"{central_url}/api/v1/write"
    del remote["basic_auth"]
    remote["queue_config"]["batch_send_deadline"] = "1s"
    return dict(config)


@pytest.fixture
def central_and_agent(tmp_path: Path) -> Iterator[tuple[promstack.Prometheus, FakeProbe]]:
    require_prometheus()
    probe = FakeProbe(vantage=VANTAGE, country="IR", verdicts={"dc1-v4:443": "ip_blocking"})
    server = promstack.MetricsServer(probe.render).start()
    central = agent = None
    try:
        central = promstack.start_prometheus(
            tmp_path / "central",
            rule_files=promstack.shorten_rules(tmp_path / "rules"),
            remote_write_receiver=True,
        )
        agent = promstack.launch_prometheus(
            tmp_path / "agent", agent_config(server.address, central.url), agent=True
        )
        yield central, probe
    finally:
        for running in (agent, central, server):
            if running is not None:
                running.stop()


def test_series_arrive_at_the_centre_with_the_vantage_label(
    central_and_agent: tuple[promstack.Prometheus, FakeProbe],
) -> None:
    central, _probe = central_and_agent
    verdicts = central.wait_for_series(f'reach_verdict{{vantage="{VANTAGE}"}} == 1', count=5)
    assert {r["metric"]["target"] for r in verdicts} >= {"dc1-v4:443", "web.telegram.org/v4"}
    blocked = [r for r in verdicts if r["metric"]["target"] == "dc1-v4:443"]
    assert blocked[0]["metric"]["verdict"] == "ip_blocking"
    # up has no vantage label of its own: the agent's external label supplies it, which
    # the ProbeAbsent alert and the Alertmanager inhibitions rely on.
    (up,) = central.wait_for_series('up{job="reach"}')
    assert up["metric"]["vantage"] == VANTAGE
    assert up["metric"]["instance"] == VANTAGE, "the probe's local address left the vantage"


def test_nothing_but_probe_series_crosses_and_no_address_leaks(
    central_and_agent: tuple[promstack.Prometheus, FakeProbe],
) -> None:
    central, _probe = central_and_agent
    central.wait_for_series(f'reach_verdict{{vantage="{VANTAGE}"}}')
    # ALERTS* are made at the centre by its own rules, not sent by the agent
    sent = '{job="reach",__name__!~"ALERTS.*"}'
    names = {r["metric"]["__name__"] for r in central.query(sent)}
    assert names, "no series from the agent"
    assert all(n.startswith(("reach_", "up", "scrape_")) for n in names), names
    for series in central.query(sent):
        assert "127.0.0.1" not in "".join(series["metric"].values()), series["metric"]


def test_central_rules_compute_the_fleet_status_from_remote_written_data(
    central_and_agent: tuple[promstack.Prometheus, FakeProbe],
) -> None:
    central, _probe = central_and_agent
    (status,) = central.wait_for_series(f'vantage_messenger:reach_status:code{{vantage="{VANTAGE}"}}')
    # A subject with a blocking verdict but no control vantage anywhere: unknown, not blocked.
    assert status["value"][1] == "2"
    assert status["metric"]["country"] == "IR"
