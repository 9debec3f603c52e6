"""Issue 14's fleet side end to end in the lab: a blocked baseline does not hide a block,
and a really offline vantage still blocks nothing.

The same stack as tests/lab/test_fleet_e2e.py (real `probe run` in both namespaces, the
shipped rules in Prometheus with `for` scaled 1/60, the shipped Alertmanager config, a
webhook), on scenarios 15b and 15c of tests/lab/scenarios_offline.py. Results join
build/lab-fleet-e2e.json.

Run: ``sudo .venv/bin/python -m pytest -m lab tests/lab/test_fleet_offline.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.fleet import promstack
from tests.lab import plan
from tests.lab.scenarios_offline import SCENARIOS
from tests.lab.test_fleet_e2e import (
    RESULTS,
    SERVICE_ALERTS,
    VANTAGE,
    _subject,
    fleet_lab,
    fleet_stack,
    pytestmark,
)
from tests.lab.topology import Lab

__all__ = ["fleet_lab", "pytestmark"]  # the lab fixture with management links, and the marks

BY_ID = {s.id: s for s in SCENARIOS}
SUBJECT, CONTROL = VANTAGE[plan.SUBJECT], VANTAGE[plan.CONTROL]


def gauge(prom: promstack.Prometheus, name: str, vantage: str) -> float | None:
    rows = prom.query(f'{name}{{vantage="{vantage}"}}')
    return float(rows[0]["value"][1]) if rows else None


def test_blocked_baseline_does_not_hide_the_block(fleet_lab: Lab, tmp_path: Path) -> None:
    """15b: baseline, DCs and names blocked; the DoH control proves the subject online.
    MessengerBlocked pages for the subject, BaselineBlocked tickets it, VantageOffline
    never appears (not even pending)."""
    with fleet_stack(fleet_lab, BY_ID["15b-baseline-blocked-iran-2015"], tmp_path / "b") as stack:
        log, prom = stack.log, stack.prometheus
        log.watch(prom, timeout=60, what="MessengerBlocked and BaselineBlocked firing",
                  until=lambda: bool(log.matching("MessengerBlocked", "firing", **_subject())
                                     and log.matching("BaselineBlocked", "firing", vantage=SUBJECT)))
        (blocked,) = [a for a in prom.firing("MessengerBlocked") if a["labels"]["vantage"] == SUBJECT]
        assert blocked["labels"]["severity"] == "page"
        description = blocked["annotations"]["description"]
        assert "dns_injection" in description and "ip_blocking" in description, description
        (baseline,) = [a for a in prom.firing("BaselineBlocked") if a["labels"]["vantage"] == SUBJECT]
        assert baseline["labels"]["severity"] == "ticket"
        assert "lab-baseline" in baseline["annotations"]["description"]  # names the failing sites
        stack.webhook.wait_for_alert("MessengerBlocked", path="/page", timeout=30)
        stack.webhook.wait_for_alert("BaselineBlocked", path="/ticket", timeout=30)
        log.watch(prom, timeout=max(0.0, 8 - (time.monotonic() - log.started)) + 2)
        RESULTS["scenarios"][stack.scenario.id] = stack.record(gauges={
            v: {g: gauge(prom, g, v) for g in ("reach_vantage_online", "reach_baseline_blocked",
                                               "reach_baseline_success")}
            for v in (SUBJECT, CONTROL)})
        assert gauge(prom, "reach_vantage_online", SUBJECT) == 1
        assert gauge(prom, "reach_baseline_blocked", SUBJECT) == 1
        assert gauge(prom, "reach_baseline_success", SUBJECT) == 0
        assert not log.matching("VantageOffline"), log.summary()
        assert not log.matching("MessengerOutage"), log.summary()
        assert not log.matching("MessengerBlocked", vantage=CONTROL)
        assert not log.matching("BaselineBlocked", vantage=CONTROL)
        assert stack.record()["status_code_per_vantage"] == {SUBJECT: 5, CONTROL: 3}


def test_uplink_cut_stays_offline_and_blocks_nothing(fleet_lab: Lab, tmp_path: Path) -> None:
    """15c: the uplink is really cut: no proof, so VantageOffline (ticket) and nothing
    about the service; the baseline is not "blocked" either (nothing is online)."""
    with fleet_stack(fleet_lab, BY_ID["15c-uplink-cut"], tmp_path / "c") as stack:
        log, prom = stack.log, stack.prometheus
        log.watch(prom, timeout=60, what="VantageOffline firing for the subject",
                  until=lambda: bool(log.matching("VantageOffline", "firing", vantage=SUBJECT)))
        stack.webhook.wait_for_alert("VantageOffline", path="/ticket", timeout=30)
        # cover the 10 s `for` of the service alerts and BaselineBlocked since the first evaluation
        log.watch(prom, timeout=max(0.0, 13 - (time.monotonic() - log.started)) + 2)
        RESULTS["scenarios"][stack.scenario.id] = stack.record(gauges={
            v: {g: gauge(prom, g, v) for g in ("reach_vantage_online", "reach_baseline_blocked")}
            for v in (SUBJECT, CONTROL)})
        assert gauge(prom, "reach_vantage_online", SUBJECT) == 0
        assert gauge(prom, "reach_baseline_blocked", SUBJECT) == 0
        for name in (*SERVICE_ALERTS, "BaselineBlocked"):
            assert not log.matching(name), f"{name} seen: {log.summary()}"
        assert {a["labels"]["alertname"] for a in prom.firing()} == {"VantageOffline"}
        assert not stack.webhook.notifications("/page")
        assert stack.record()["status_code_per_vantage"] == {SUBJECT: 1, CONTROL: 3}
