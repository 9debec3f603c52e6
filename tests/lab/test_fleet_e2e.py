"""The fleet path end to end in the lab: real probes -> Prometheus (the shipped rules) ->
Alertmanager (the shipped config) -> a webhook, and every dashboard panel query.

Why in the lab: tests/fleet proves the rules with synthetic expositions; here the
metrics come from real `probe run` processes in the subject and control namespaces,
measuring the lab network while the censor does what a scenario says (the same
``apply_scenario`` the scenario tests use). Prometheus and Alertmanager run on the host
(127.0.0.1) and scrape the probes over the lab's out-of-band management veths
(198.19.254.0/24, ``Lab.add_mgmt_links``): a probe's management path is separate from the
network it measures, so cutting the subject's uplink (scenario 14) does not cut scraping.

Timing is shortened so the file stays quick: probe rounds every 2 s, scrapes and rule
evaluation every 1 s, the rules' ``for``/``keep_firing_for`` scaled 1/60 (10m -> 10s,
5m -> 5s; expressions unchanged), Alertmanager group timers 1 s.

Run: ``sudo .venv/bin/python -m pytest -m lab tests/lab/test_fleet_e2e.py``. The observed
alert states and panel results are written to build/lab-fleet-e2e.json.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet import promstack
from tests.fleet.test_dashboards import all_queries, substitute
from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.scenarios import Scenario, apply_scenario, scenario_by_id
from tests.lab.topology import PROBE_BIN, ROOT, Lab, lab_available, ns_exec, ns_run

RESULTS_FILE = ROOT / "build" / "lab-fleet-e2e.json"

#: Probe round interval (s), scrape and rule evaluation interval.
PROBE_INTERVAL = 2
SCRAPE_INTERVAL = "1s"
#: Port the probes listen on, on their namespace's management address.
PROBE_PORT = 9650
#: Vantage names and countries as the lab's probe configs set them.
VANTAGE = {plan.SUBJECT: "lab-subject", plan.CONTROL: "lab-control"}
COUNTRY = {plan.SUBJECT: "IR", plan.CONTROL: "NL"}
MESSENGER = "telegram"
#: The alerts that carry a verdict about the service (never for an offline vantage).
SERVICE_ALERTS = ("MessengerBlocked", "MessengerOutage")


def _skip_reason() -> str | None:
    reason = lab_available()
    if reason:
        return reason
    if not promstack.have_prometheus():
        return "prometheus binary not installed (Debian package prometheus)"
    if promstack.alertmanager_binary() is None:
        return "alertmanager not installed (Debian package prometheus-alertmanager)"
    return None


pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]

#: What this module observed, written to RESULTS_FILE at module teardown.
RESULTS: dict[str, Any] = {"scenarios": {}, "dashboards": {}}


# ------------------------------------------------------------------------------ alert log


@dataclass
class AlertLog:
    """Every alert Prometheus reported (pending or firing) while a scenario ran.

    Polled often (rules are evaluated every second, the shortened ``for`` is 5-10 s), so
    an alert that was pending only for a few evaluations is still seen.
    """

    started: float = field(default_factory=time.monotonic)
    seen: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    polls: int = 0

    def poll(self, prometheus: promstack.Prometheus) -> None:
        now = round(time.monotonic() - self.started, 1)
        self.polls += 1
        for alert in prometheus.alerts():
            labels = alert["labels"]
            key = tuple(
                labels.get(k, "") for k in ("alertname", "vantage", "messenger", "country", "instance")
            )
            entry = self.seen.setdefault(key, {"labels": dict(labels), "first_seen": {}})
            entry["first_seen"].setdefault(alert["state"], now)
            entry["last_state"] = alert["state"]

    def watch(
        self,
        prometheus: promstack.Prometheus,
        timeout: float,
        until: Callable[[], bool] | None = None,
        what: str = "",
    ) -> float:
        """Poll for ``timeout`` s, or until ``until()``; return the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            with contextlib.suppress(OSError, promstack.StackError):
                self.poll(prometheus)
            if until is not None and until():
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                if until is not None:
                    raise promstack.StackError(
                        f"timed out after {timeout:.0f}s waiting for {what}; alerts seen: {self.summary()}"
                    )
                return time.monotonic() - t0
            time.sleep(0.3)

    def matching(self, name: str, state: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Entries of alert ``name`` with these labels that were ever in ``state`` (any if None)."""
        return [
            e
            for e in self.seen.values()
            if e["labels"].get("alertname") == name
            and all(e["labels"].get(k) == v for k, v in labels.items())
            and (state is None or state in e["first_seen"])
        ]

    def summary(self) -> list[dict[str, Any]]:
        """JSON-friendly: one row per alert instance with when it was first pending/firing."""
        keep = ("alertname", "vantage", "messenger", "country", "severity", "instance")
        return [
            {
                "labels": {k: e["labels"][k] for k in keep if k in e["labels"]},
                "first_seen_s": e["first_seen"],
                "last_state": e["last_state"],
            }
            for e in sorted(self.seen.values(), key=lambda e: sorted(e["labels"].items()))
        ]


# ------------------------------------------------------------------------------ the stack


@dataclass
class FleetStack:
    """Real probes in both vantages, Prometheus, Alertmanager and a webhook collector."""

    scenario: Scenario
    lab: Lab
    probes: dict[str, promstack.Probe]
    prometheus: promstack.Prometheus
    alertmanager: promstack.Alertmanager
    webhook: promstack.WebhookReceiver
    log: AlertLog

    def record(self, **extra: Any) -> dict[str, Any]:
        """Observed states for build/lab-fleet-e2e.json."""
        am = [
            {
                "alertname": a["labels"].get("alertname"),
                "vantage": a["labels"].get("vantage"),
                "messenger": a["labels"].get("messenger"),
                "severity": a["labels"].get("severity"),
                "state": a["status"]["state"],
            }
            for a in self.alertmanager.alerts()
        ]
        notified = [
            {
                "receiver": path,
                "alertname": a["labels"].get("alertname"),
                "vantage": a["labels"].get("vantage"),
                "severity": a["labels"].get("severity"),
                "status": a["status"],
            }
            for path, body in list(self.webhook.received)
            for a in body.get("alerts", [])
        ]
        status = {
            r["metric"].get("vantage", "?"): int(float(r["value"][1]))
            for r in self.prometheus.query("vantage_messenger:reach_status:code")
        }
        return {
            "title": self.scenario.title,
            "seconds": round(time.monotonic() - self.log.started, 1),
            "prometheus_alerts": self.log.summary(),
            "alertmanager_alerts": sorted(am, key=lambda a: json.dumps(a, sort_keys=True)),
            "webhook_notifications": notified,
            "status_code_per_vantage": status,
            **extra,
        }


def lab_probe_config(vantage: str, lab: Lab) -> dict[str, Any]:
    """The lab's probe config for ``vantage`` with a short round interval."""
    config = probe_config(vantage, lab.workdir, lab.ca_dir / "ca.pem")
    config["schedule"]["interval"] = PROBE_INTERVAL
    return config


def start_lab_probe(vantage: str, lab: Lab, workdir: Path) -> promstack.Probe:
    """`probe run` inside the vantage namespace, listening on its management address.

    Not waited for: the caller starts both vantages, then waits (rounds run in parallel).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = lab_probe_config(vantage, lab)
    config["evidence"] = {"directory": str(workdir / "evidence")}  # the rounds, for checks
    config_path = workdir / "probe.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    host = plan.mgmt_link(vantage).ns_addr
    argv = [
        *ns_exec(vantage), str(PROBE_BIN), "run",
        "--config", str(config_path), "--listen", f"{host}:{PROBE_PORT}",
    ]  # fmt: skip
    probe = promstack.Probe(promstack.ManagedProcess(argv, workdir / "probe.log"), PROBE_PORT, workdir)
    probe.url = f"http://{host}:{PROBE_PORT}"
    return probe


@contextlib.contextmanager
def fleet_stack(
    lab: Lab, scenario: Scenario, workdir: Path, also: Callable[[Lab], None] | None = None
) -> Iterator[FleetStack]:
    """Put the lab into ``scenario``, start probes, Alertmanager and Prometheus; always stop.

    The probes start after the scenario is applied and Prometheus only after both finished
    a round, so every sample Prometheus ever sees already belongs to the scenario (a fresh
    Prometheus per scenario: no alert history carried over).
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    lab.reset()
    apply_scenario(lab, scenario)
    if also is not None:
        also(lab)  # what the scenario table cannot say (undone by the next lab.reset())
    started: list[Any] = []
    try:
        probes = {}
        for vantage in (plan.SUBJECT, plan.CONTROL):
            probes[vantage] = start_lab_probe(vantage, lab, workdir / vantage)
            started.append(probes[vantage])
        for probe in probes.values():
            probe.wait_ready(timeout=60)
        webhook, am, prom = promstack.start_alerting(
            workdir, [f"{plan.mgmt_link(v).ns_addr}:{PROBE_PORT}" for v in probes], started,
            scrape_interval=SCRAPE_INTERVAL)
        log = AlertLog()
        yield FleetStack(scenario, lab, probes, prom, am, webhook, log)
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()


@pytest.fixture(scope="module")
def fleet_lab(lab: Lab) -> Iterator[Lab]:
    """The session lab plus the out-of-band management links (removed afterwards)."""
    try:
        with lab.managed():
            yield lab
    finally:
        RESULTS["generated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        RESULTS["timing"] = {
            "probe_interval_s": PROBE_INTERVAL,
            "scrape_interval": SCRAPE_INTERVAL,
            "evaluation_interval": "1s",
            "rules_for_scale": "1/60 (10m -> 10s, 5m -> 5s)",
        }
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(RESULTS, indent=1, sort_keys=True) + "\n")


def _subject(**extra: str) -> dict[str, str]:
    return {"vantage": VANTAGE[plan.SUBJECT], "messenger": MESSENGER, **extra}


# ------------------------------------------------------------------------------ scenario 02


@pytest.fixture(scope="class")
def iran(fleet_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetStack]:
    """The lab in scenario 02 with the whole stack, shared by the alert and board tests."""
    workdir = tmp_path_factory.mktemp("fleet-iran")
    with fleet_stack(fleet_lab, scenario_by_id("02-iran-2015"), workdir) as stack:
        yield stack


class TestIran2015:
    """02: the Iran 2015 replay pages through Alertmanager; then every board panel query."""

    def test_blocked_pages_through_alertmanager(self, iran: FleetStack) -> None:
        log, prom = iran.log, iran.prometheus
        log.watch(
            prom,
            timeout=60,
            until=lambda: bool(log.matching("MessengerBlocked", "firing", **_subject(country="IR"))),
            what="MessengerBlocked firing for the subject",
        )
        (alert,) = [
            a for a in prom.firing("MessengerBlocked") if a["labels"]["vantage"] == VANTAGE[plan.SUBJECT]
        ]
        assert alert["labels"]["severity"] == "page"
        assert alert["labels"]["country"] == "IR"
        assert alert["labels"]["messenger"] == MESSENGER
        description = alert["annotations"]["description"]
        assert "dns_injection" in description and "ip_blocking" in description, description

        am_alert = iran.alertmanager.wait_for_alert("MessengerBlocked", _subject(), timeout=30)
        assert am_alert["labels"]["severity"] == "page"
        paged = iran.webhook.wait_for_alert("MessengerBlocked", path="/page", timeout=30)
        assert paged["labels"]["vantage"] == VANTAGE[plan.SUBJECT]
        assert paged["labels"]["severity"] == "page"
        assert paged["labels"]["country"] == "IR"
        log.watch(prom, timeout=3)  # a few more evaluations
        RESULTS["scenarios"][iran.scenario.id] = iran.record()

        # the control vantage is never called blocked; nothing else pages or fires
        assert not log.matching("MessengerBlocked", vantage=VANTAGE[plan.CONTROL])
        for name in ("MessengerOutage", "VantageOffline"):
            assert not log.matching(name), f"{name} seen: {log.summary()}"
        assert not log.matching("ProbeAbsent", "firing"), log.summary()
        paged_vantages = {
            a["labels"].get("vantage")
            for body in iran.webhook.notifications("/page")
            for a in body.get("alerts", [])
        }
        assert paged_vantages == {VANTAGE[plan.SUBJECT]}

    def test_every_panel_query_parses_and_returns_data(self, iran: FleetStack) -> None:
        prom = iran.prometheus
        # rate()/increase() over $__rate_interval need two samples of a counter that has
        # moved: wait until the failure counters have a rate (a few probe rounds).
        rate_window = rate_interval()
        prom.wait_for_series(f"rate(reach_check_failures_total[{rate_window}]) > 0", timeout=60)
        prom.wait_for_series(f"rate(reach_check_latency_seconds_count[{rate_window}]) > 0", timeout=30)
        report: dict[str, Any] = {"macros": MACROS, "variants": {}}
        problems: list[str] = []
        for variant, values in VARIANTS.items():
            rows = run_panel_queries(prom, values)
            report["variants"][variant] = {"values": values, "panels": rows}
            empty_required = {r["title"] for r in rows if r["required"] and not r["data"]}
            expected = EMPTY_FOR_CONTROL if variant == "control" else set()
            for title in sorted(empty_required - expected):
                problems.append(f"{variant}: {title}: no data ({why(rows, title)})")
            for title in sorted(expected - empty_required):
                problems.append(f"{variant}: {title}: data where none is expected")
        RESULTS["dashboards"] = report
        assert not problems, "\n".join(problems)


def why(rows: list[dict[str, Any]], title: str) -> str:
    return "; ".join(r.get("why_empty", "") for r in rows if r["title"] == title)


# ------------------------------------------------------------------------------ 13 and 14


def test_service_outage_is_an_outage_not_a_block(fleet_lab: Lab, tmp_path: Path) -> None:
    """13: the service is down for both vantages -> MessengerOutage (ticket), never Blocked."""
    with fleet_stack(fleet_lab, scenario_by_id("13-service-outage"), tmp_path / "outage") as stack:
        log, prom = stack.log, stack.prometheus
        log.watch(
            prom,
            timeout=60,
            until=lambda: bool(log.matching("MessengerOutage", "firing", messenger=MESSENGER)),
            what="MessengerOutage firing",
        )
        ticket = stack.webhook.wait_for_alert("MessengerOutage", path="/ticket", timeout=30)
        assert ticket["labels"]["severity"] == "ticket"
        # MessengerBlocked's shortened `for` is 10 s: watch until it would have fired
        log.watch(prom, timeout=6)
        RESULTS["scenarios"][stack.scenario.id] = stack.record()
        assert not log.matching("MessengerBlocked"), f"MessengerBlocked seen: {log.summary()}"
        assert not log.matching("VantageOffline"), log.summary()
        assert not stack.webhook.notifications("/page")
        assert stack.record()["status_code_per_vantage"] == {
            VANTAGE[plan.SUBJECT]: 4,
            VANTAGE[plan.CONTROL]: 4,
        }


#: The endpoint the service "retired": DC1's IPv4 address on port 443 (target dc1-v4:443).
RETIRED = (plan.DCS[0].v4[0], 443)
RETIRED_TARGET = f"{plan.DCS[0].name}-v4:{RETIRED[1]}"

STALE_ENDPOINT = Scenario(
    "21-stale-endpoint",
    "Stale endpoint",
    f"the service no longer serves {RETIRED_TARGET} (its server refuses the port, for every "
    "client: a catalogue entry retired upstream); everything else answers; no censor",
    subject=((RETIRED_TARGET, "tcp_reset"), ("*", "ok")),
    control=((RETIRED_TARGET, "tcp_reset"), ("*", "ok")),
)


def retire_endpoint(lab: Lab) -> None:
    """On the service's side (the internet namespace, where the DC servers live), refuse
    one DC address and port to everyone: the subject (through the censor) and the control."""
    address, port = RETIRED
    ns_run(plan.INTERNET, "iptables", "-I", "INPUT", "-d", address, "-p", "tcp", "--dport", str(port),
           "-j", "REJECT", "--reject-with", "tcp-reset")


def test_stale_endpoint_is_one_ticket_and_no_page(fleet_lab: Lab, tmp_path: Path) -> None:
    """Issue 21: an endpoint removed everywhere (one DC target refused to both vantages) is
    the service's own failure: no MessengerBlocked page at the subject, one
    CatalogueEndpointDown ticket naming the endpoint, fleet status outage at both vantages.
    (Before, the subject's persistent tcp_reset on it paged MessengerBlocked.)"""
    with fleet_stack(fleet_lab, STALE_ENDPOINT, tmp_path / "stale", also=retire_endpoint) as stack:
        log, prom = stack.log, stack.prometheus
        subject, control = VANTAGE[plan.SUBJECT], VANTAGE[plan.CONTROL]
        # the rules see the endpoint fail at the control and the subject (the premise)
        prom.wait_for_series(
            f'messenger_target:reach_control_verdict_ok:max{{target="{RETIRED_TARGET}"}} == 0', timeout=30)
        failing = prom.query(f'reach_verdict{{target="{RETIRED_TARGET}",verdict!="ok"}}')
        assert {r["metric"]["vantage"] for r in failing} == {subject, control}, failing
        # CatalogueEndpointDown's shortened `for` is 30 s (30m); MessengerBlocked, with no
        # `for`, would have fired ~8 s in (its window, 2m, is 8 s here)
        log.watch(
            prom,
            timeout=90,
            until=lambda: bool(log.matching("CatalogueEndpointDown", "firing", messenger=MESSENGER)),
            what="CatalogueEndpointDown firing",
        )
        (alert,) = prom.firing("CatalogueEndpointDown")
        assert alert["labels"]["target"] == RETIRED_TARGET
        assert alert["labels"]["severity"] == "ticket"
        description = alert["annotations"]["description"]
        assert RETIRED_TARGET in description and "docs/messengers.md" in description, description
        ticket = stack.webhook.wait_for_alert("CatalogueEndpointDown", path="/ticket", timeout=30)
        assert ticket["labels"]["target"] == RETIRED_TARGET
        log.watch(prom, timeout=3)  # a few more evaluations
        record = stack.record()
        RESULTS["scenarios"][STALE_ENDPOINT.id] = record
        assert not log.matching("MessengerBlocked"), f"MessengerBlocked seen: {log.summary()}"
        assert not stack.webhook.notifications("/page")
        for name in ("MessengerOutage", "VantageOffline"):
            assert not log.matching(name), f"{name} seen: {log.summary()}"
        # one ticket: one alert instance, the retired endpoint, and no other endpoint
        assert [e["labels"]["target"] for e in log.matching("CatalogueEndpointDown")] == [RETIRED_TARGET]
        # the tickets about the messenger (probe-health tickets such as ProbeRoundsOverrun,
        # which the lab's 2 s interval can raise, say nothing about the service)
        tickets = {(a["labels"].get("alertname"), a["labels"].get("target"))
                   for body in stack.webhook.notifications("/ticket") for a in body.get("alerts", [])
                   if "messenger" in a["labels"]}
        assert tickets == {("CatalogueEndpointDown", RETIRED_TARGET)}, tickets
        assert record["status_code_per_vantage"] == {subject: 4, control: 4}


def test_uplink_cut_is_vantage_offline_only(fleet_lab: Lab, tmp_path: Path) -> None:
    """14: the subject's access link is down -> VantageOffline for it, and nothing else.

    Scraping continues over the management link, so the probe is not absent: it reports
    that its own network is down."""
    with fleet_stack(fleet_lab, scenario_by_id("14-vantage-offline"), tmp_path / "offline") as stack:
        log, prom = stack.log, stack.prometheus
        subject = VANTAGE[plan.SUBJECT]
        log.watch(
            prom,
            timeout=60,
            until=lambda: bool(log.matching("VantageOffline", "firing", vantage=subject)),
            what="VantageOffline firing for the subject",
        )
        (alert,) = [a for a in prom.firing("VantageOffline") if a["labels"]["vantage"] == subject]
        assert alert["labels"]["severity"] == "ticket"
        assert alert["labels"]["country"] == "IR"
        stack.webhook.wait_for_alert("VantageOffline", path="/ticket", timeout=30)
        # cover the 10 s `for` of MessengerBlocked/MessengerOutage since the first evaluation
        log.watch(prom, timeout=max(0.0, 13 - (time.monotonic() - log.started)) + 2)
        RESULTS["scenarios"][stack.scenario.id] = stack.record()
        for name in SERVICE_ALERTS:
            assert not log.matching(name), f"{name} seen: {log.summary()}"
        assert not log.matching("VantageOffline", vantage=VANTAGE[plan.CONTROL])
        assert not log.matching("ProbeAbsent", "firing"), log.summary()
        assert {a["labels"]["alertname"] for a in prom.firing()} == {"VantageOffline"}
        assert not stack.webhook.notifications("/page")
        # the management link carries scrapes only: the probe's checks find no route out
        failures = prom.query(f'sum by (failure) (reach_check_failures_total{{vantage="{subject}"}})')
        assert {r["metric"]["failure"] for r in failures} == {"network_unreachable"}, failures


# ------------------------------------------------------------------------------ dashboards

#: How the panel macros are substituted. Grafana: $__rate_interval = max($__interval +
#: scrape interval, 4 x scrape interval); with 1 s scrapes and the probes' 2 s rounds a
#: 10 s window holds ~10 samples and several rounds.
MACROS = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "5m"}

VARIANTS: dict[str, dict[str, str]] = {
    "all": {"datasource": "reach-prometheus", "country": ".*", "vantage": ".*", "messenger": ".*"},
    "subject": {
        "datasource": "reach-prometheus",
        "country": COUNTRY[plan.SUBJECT],
        "vantage": VANTAGE[plan.SUBJECT],
        "messenger": MESSENGER,
    },
    "control": {
        "datasource": "reach-prometheus",
        "country": COUNTRY[plan.CONTROL],
        "vantage": VANTAGE[plan.CONTROL],
        "messenger": MESSENGER,
    },
}

#: Series a panel is "about" when it must show data in the Iran scenario: verdicts,
#: checks, baseline, fleet status and the vantage itself.
REQUIRED = re.compile(
    r"reach_verdict|reach_check_success|reach_check_duration|reach_baseline_success|"
    r"reach_status|reach_vantage_info|reach_round_|reach_control_verdict|reach_vantages_blocked"
)

#: Panels about non-ok verdicts: for the control vantage (which reaches everything in the
#: Iran replay) they must be empty: data there would mean the control is called blocked.
EMPTY_FOR_CONTROL = {
    "DNS and TLS tampering now",
    "Injection and interception verdicts",
    "Blocked now, by mechanism",
    "Local verdicts now (not ok)",
}


def rate_interval() -> str:
    return MACROS["$__rate_interval"]


_SELECTOR = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\}")


def why_empty(prom: promstack.Prometheus, query: str) -> str:
    """Explain an empty panel: which of its selectors has no series, or that a filter
    (``== 1``, ``== 5``, ``> 0``) legitimately matches nothing in this scenario."""
    missing = [s for s in dict.fromkeys(_SELECTOR.findall(query)) if not prom.query(s)]
    if missing:
        return "no series for " + ", ".join(missing) + " in this scenario"
    return "every selector has series; the expression's filter matches nothing in this scenario"


def run_panel_queries(prom: promstack.Prometheus, values: dict[str, str]) -> list[dict[str, Any]]:
    """Every panel target of every board: instant query (must parse) and a range query."""
    rows = []
    for board, title, expr in all_queries():
        text = expr
        for macro, value in MACROS.items():
            text = text.replace(macro, value)
        query = substitute(text, values)
        result = prom.query(query)  # raises StackError on a parse or execution error
        prom.query_range(query, seconds=60, step=2)  # what a time series panel runs
        row: dict[str, Any] = {
            "board": board,
            "title": title,
            "query": query,
            "series": len(result),
            "data": bool(result),
            "required": bool(REQUIRED.search(expr)),
        }
        if not result:
            row["why_empty"] = why_empty(prom, query)
        rows.append(row)
    return rows
