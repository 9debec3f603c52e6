"""The Grafana boards: valid JSON model, fixed uids, variables, and queries that work.

The last tests run every panel query against a real Prometheus that loaded the reach
rules and scraped probes, as Grafana would (variables substituted), and require an
answer with data: a typo in a metric or label is a blank panel that nobody notices.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.model.verdicts import (
    FLEET_STATUS,
    STATUS_COLOURS,
    VANTAGE_STATE_COLOURS,
    VERDICT_COLOURS,
    VERDICTS,
)

from .promstack import REPO, RULES_DIR, Prometheus, StackError, wait_until

GRAFANA = REPO / "grafana"
BOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
GREY = "#808080"

CONTRACT_METRICS = {
    "reach_check_success",
    "reach_check_duration_seconds",
    "reach_check_latency_seconds_bucket",
    "reach_check_latency_seconds_sum",
    "reach_check_latency_seconds_count",
    "reach_check_failures_total",
    "reach_verdict",
    "reach_vantage_info",
    "reach_baseline_success",
    "reach_round_duration_seconds",
    "reach_round_last_timestamp_seconds",
    "reach_config_last_reload_successful",
    "reach_vantage_online",
    "reach_baseline_blocked",
    "reach_vantage_degraded",
    "reach_vantage_international_cut",
    "reach_vantage_state",
    "reach_round_event_loop_lag_seconds",
    "reach_build_info",
    "reach_circumvention",
    "reach_messenger_answer",
    "reach_messenger_path",
}
# Exported when measured (a round with baseline attempts, configured baseline sites).
MEASURED_METRICS = {"reach_vantage_loss_ratio", "reach_vantage_rtt_seconds", "reach_baseline_site_success"}


def recorded_metrics() -> set[str]:
    names = set()
    for path in RULES_DIR.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


KNOWN_METRICS = CONTRACT_METRICS | MEASURED_METRICS | recorded_metrics()


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def all_queries() -> list[tuple[str, str, str]]:
    """(board file, panel title, expr) for every target of every panel."""
    out = []
    for path in BOARD_FILES:
        for panel in panels(load(path)):
            for t in panel.get("targets", []):
                out.append((path.name, panel["title"], t["expr"]))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values in quotes are dropped first)."""
    unquoted = re.sub(r'"[^"]*"', '""', expr)
    return {m for m in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", unquoted) if "reach_" in m}


def substitute(expr: str, values: dict[str, str]) -> str:
    """What Grafana sends: template variables and interval macros replaced."""
    macros = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
    for key, value in {**macros, **{f"${k}": v for k, v in values.items()}}.items():
        expr = expr.replace(key, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_boards_exist() -> None:
    assert [p.name for p in BOARD_FILES] == [
        "dns-tls-evidence.json",
        "fleet-overview.json",
        "vantage-drilldown.json",
    ]


def test_boards_match_their_builder() -> None:
    """grafana/dashboards/*.json is exactly what grafana/build_dashboards.py writes."""
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for path in BOARD_FILES:
        assert path.read_text() == builder.render(path.name), (
            f"{path.name} is out of date: run python grafana/build_dashboards.py"
        )


def test_json_model_uids_and_schema() -> None:
    uids = []
    for path in BOARD_FILES:
        board = load(path)
        assert board["schemaVersion"] == 39
        assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]), board["uid"]
        assert board["title"].startswith("reach / ")
        uids.append(board["uid"])
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels(board):
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24 and g["h"] > 0, f"{path.name}: {panel['title']} off grid"
    assert sorted(uids) == ["reach-dns-tls", "reach-fleet-overview", "reach-vantage"]


def test_template_variables() -> None:
    for path in BOARD_FILES:
        variables = {v["name"]: v for v in load(path)["templating"]["list"]}
        assert list(variables) == ["datasource", "country", "vantage", "messenger", "probe"], path.name
        assert variables["probe"]["type"] == "textbox"
        assert variables["probe"]["query"].startswith("http")
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        for name in ("country", "vantage", "messenger"):
            var = variables[name]
            assert var["type"] == "query"
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert var["definition"].startswith("label_values(")
            assert var["definition"].endswith(f", {name})")
            assert metric_names(var["definition"]) <= KNOWN_METRICS
            assert var["includeAll"] and var["allValue"] == ".*"


def test_datasource_provisioning_matches_boards() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "reach.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == "reach-prometheus"
    for path in BOARD_FILES:
        variables = {v["name"]: v for v in load(path)["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == ds["uid"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "reach.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_panel_queries_known_metrics_through_the_variable_datasource() -> None:
    for path in BOARD_FILES:
        for panel in panels(load(path)):
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], f"{where} has no query"
            for t in panel["targets"]:
                assert t["expr"].strip(), where
                names = metric_names(t["expr"])
                assert names, f"{where}: no reach metric in {t['expr']}"
                assert names <= KNOWN_METRICS, f"{where}: unknown {names - KNOWN_METRICS}"
                if re.search(r"\b(rate|increase|irate)\(", t["expr"]):
                    assert "[$__rate_interval]" in t["expr"], where


def test_no_data_is_grey_never_green_or_red() -> None:
    for path in BOARD_FILES:
        for panel in panels(load(path)):
            where = f"{path.name}: {panel['title']}"
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults["noValue"] == "no data", where
            specials = [m for m in defaults["mappings"] if m["type"] == "special"]
            assert any(
                m["options"]["match"] == "null+nan" and m["options"]["result"]["color"] == GREY
                for m in specials
            ), f"{where}: null/NaN is not mapped to grey"
            if panel["type"] in ("status-history", "state-timeline"):
                assert defaults["thresholds"]["steps"][0]["color"] == GREY, where
                mapped = {
                    v["color"]
                    for m in defaults["mappings"]
                    if m["type"] == "value"
                    for v in m["options"].values()
                }
                # a vantage's own network is never "blocked": its panel maps the network states
                network_states = mapped == set(VANTAGE_STATE_COLOURS.values())
                assert STATUS_COLOURS["ok"] in mapped and (
                    STATUS_COLOURS["blocked"] in mapped or network_states), where


def test_status_and_verdict_colours_come_from_probe_verdicts() -> None:
    """Fixed colours, the status page's: a status or verdict never takes a palette colour."""
    seen_status = seen_verdict_series = seen_verdict_cells = 0
    for path in BOARD_FILES:
        for panel in panels(load(path)):
            where = f"{path.name}: {panel['title']}"
            exprs = " ".join(t["expr"] for t in panel["targets"])
            if "reach_status:code" in exprs and panel["type"] in ("status-history", "state-timeline"):
                (values,) = [m for m in panel["fieldConfig"]["defaults"]["mappings"] if m["type"] == "value"]
                got = {int(code): (v["text"], v["color"]) for code, v in values["options"].items()}
                assert {c: colour for c, (_t, colour) in got.items()} == {
                    code: STATUS_COLOURS[word] for code, word in FLEET_STATUS.items()}, where
                seen_status += 1
            for override in panel["fieldConfig"]["overrides"]:
                props = {p["id"]: p["value"] for p in override["properties"]}
                name = override["matcher"]["options"]
                if override["matcher"]["id"] == "byRegexp" and name.startswith("^.*: "):
                    name = name.removeprefix("^.*: ").removesuffix("$")
                if name in VERDICT_COLOURS and "color" in props:
                    assert props["color"] == {"mode": "fixed", "fixedColor": VERDICT_COLOURS[name]}, where
                    seen_verdict_series += 1
                if name == "verdict" and "mappings" in props:
                    (mapping,) = props["mappings"]
                    assert {k: v["color"] for k, v in mapping["options"].items()} == VERDICT_COLOURS, where
                    seen_verdict_cells += 1
            if "count by (verdict)" in exprs or "count by (vantage, verdict)" in exprs:
                names = {o["matcher"]["options"].removeprefix("^.*: ").removesuffix("$")
                         for o in panel["fieldConfig"]["overrides"]}
                assert set(VERDICTS) <= names, f"{where}: verdict series without a fixed colour"
    assert seen_status >= 2 and seen_verdict_series >= len(VERDICTS) and seen_verdict_cells >= 3


def test_data_links_to_the_probe_status_page_and_evidence() -> None:
    evidence = status_page = 0
    for path in BOARD_FILES:
        for panel in panels(load(path)):
            for link in panel.get("links", []):
                assert link["url"].startswith("${probe}/"), link
                status_page += link["url"] == "${probe}/"
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    if prop["id"] == "links":
                        (link,) = prop["value"]
                        assert link["url"] == (
                            "${probe}/api/target/${__data.fields.messenger}/${__data.fields.target}")
                        evidence += 1
    assert evidence >= 3 and status_page >= 10


def test_loop_lag_degraded_and_blocked_baseline_are_on_a_board() -> None:
    exprs = " ".join(e for _b, _t, e in all_queries())
    for metric in ("reach_round_event_loop_lag_seconds", "vantage:reach_vantage_degraded:avg",
                   "vantage:reach_baseline_blocked:max", "reach_vantage_loss_ratio",
                   "reach_baseline_site_success", "vantage:reach_vantage_online:bool"):
        assert metric in exprs, metric


def test_boards_load_into_grafana_foundation_sdk_models() -> None:
    """Every board decodes into grafana-foundation-sdk's typed models for the Grafana of
    compose.yaml (enumerated values are checked on decode) and nothing is dropped on the way
    back out, except the variables' `definition` (Grafana's editor field, not in the model)."""
    sdk = pytest.importorskip("grafana_foundation_sdk")
    from importlib.metadata import version

    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    grafana = re.search(r"grafana/grafana-oss:(\d+\.\d+)", (REPO / "compose.yaml").read_text())
    assert grafana, "compose.yaml names no Grafana image"
    assert version(sdk.__name__.replace("_", "-")).split("!")[-1].startswith(grafana.group(1)), (
        f"grafana-foundation-sdk is not pinned to Grafana {grafana.group(1)}")
    register_default_plugins()

    def paths(node: Any, at: str = "") -> set[str]:
        if isinstance(node, dict):
            return set().union(*(({f"{at}/{k}"} | paths(v, f"{at}/{k}")) for k, v in node.items()), set())
        if isinstance(node, list):
            return set().union(*(paths(v, f"{at}[{i}]") for i, v in enumerate(node)), set())
        return set()

    for path in BOARD_FILES:
        board = load(path)
        model = Dashboard.from_json(board)
        back = json.loads(json.dumps(model, cls=JSONEncoder))
        editor_only = re.compile(r"/templating/list\[\d+\]/definition")
        lost = {p for p in paths(board) - paths(back) if not editor_only.fullmatch(p)}
        assert not lost, f"{path.name}: not in Grafana's model: {sorted(lost)[:10]}"


ALL = {"country": ".*", "vantage": ".*", "messenger": ".*"}
ONE = {"country": "IR", "vantage": "ir-lab", "messenger": "telegram"}


@pytest.mark.parametrize("values", [ALL, ONE], ids=["all", "one-vantage"])
def test_every_panel_query_parses_and_returns_data(
    fleet_prometheus: Prometheus, values: dict[str, str]
) -> None:
    empty = []
    for board, title, expr in all_queries():
        query = substitute(expr, values)
        result = fleet_prometheus.query(query)  # raises with Prometheus's parse error
        if not result:
            # a scrape missed under load leaves rate() one sample short: give it a few rounds
            try:
                wait_until(lambda q=query: fleet_prometheus.query(q), 15, query)  # type: ignore[misc]
            except StackError:
                empty.append(f"{board}: {title}: {query}")
        fleet_prometheus.query_range(query, seconds=60, step=5)
    if values is ONE:
        # ir-lab has no TLS tampering of its own (that is ir-lab-2)
        empty = [e for e in empty if "TLS" not in e.split(": ")[1]]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_verdict_and_check_panels_show_the_block(fleet_prometheus: Prometheus) -> None:
    """What an analyst reads off the boards for the Iran scenario."""
    fleet = {
        r["metric"]["country"]: float(r["value"][1])
        for r in fleet_prometheus.query(
            substitute('country_messenger:reach_status:code{country=~"$country"}', ALL)
        )
    }
    assert fleet == {"IR": 5.0, "NL": 3.0}
    blocked = fleet_prometheus.query(
        substitute(next(e for _, t, e in all_queries() if t == "Blocked now, by mechanism"), ALL)
    )
    rows = {(r["metric"]["vantage"], r["metric"]["target"], r["metric"]["verdict"]) for r in blocked}
    assert ("ir-lab", "web.telegram.org/v4", "dns_injection") in rows
    assert ("ir-lab", "dc1-v4:443", "ip_blocking") in rows
    assert ("ir-lab-2", "web.telegram.org/v4", "tls_interception") in rows
    assert not any(v == "nl-lab" for v, _, _ in rows)


def test_the_answer_panels_say_whether_a_user_can_use_it(fleet_prometheus: Prometheus) -> None:
    """The per-messenger answer (probe.judge.answer) on the fleet board: its code per vantage
    x messenger, and the paths a user loses."""
    from probe.judge.answer import ANSWER_CODES

    timeline = next(e for _, t, e in all_queries() if t == "Can a user use it? vantage x messenger")
    codes = {r["metric"]["vantage"]: float(r["value"][1])
             for r in fleet_prometheus.query(substitute(timeline, ALL))}
    assert codes["nl-lab"] == ANSWER_CODES["usable"]
    # ir-lab-2: both web.telegram.org targets tampered with, one DC of several filtered
    assert codes["ir-lab-2"] == ANSWER_CODES["partly_blocked"]
    paths = next(e for _, t, e in all_queries() if t == "Paths blocked now")
    rows = {(r["metric"]["vantage"], r["metric"]["path"], r["metric"]["state"])
            for r in fleet_prometheus.query(substitute(paths, ALL))}
    assert ("ir-lab-2", "web", "blocked") in rows and ("ir-lab-2", "chat", "partly_blocked") in rows
    assert not any(v == "nl-lab" for v, _, _ in rows)


def test_a_shutdown_shows_as_its_own_state(fleet_prometheus: Prometheus) -> None:
    """Issue 19: ir-lab-3 is cut off from abroad (only its domestic site answers): the boards
    show it as an international cut, in its status row, the network-state timeline and the
    stat, in the words the panels' mappings give, and none of its targets as blocked."""

    def panel(title: str) -> dict[str, Any]:
        return next(p for path in BOARD_FILES for p in panels(load(path)) if p["title"] == title)

    def shown(title: str) -> dict[str, str]:
        """vantage -> the text the panel shows for its value now."""
        found = panel(title)
        (values,) = [m for m in found["fieldConfig"]["defaults"]["mappings"] if m["type"] == "value"]
        words = {float(code): v["text"] for code, v in values["options"].items()}
        result = fleet_prometheus.query(substitute(found["targets"][0]["expr"], ALL))
        return {r["metric"]["vantage"]: words[float(r["value"][1])] for r in result}

    assert shown("Network state per vantage") == {
        "ir-lab": "online", "ir-lab-2": "online", "nl-lab": "online",
        "ir-lab-3": "international cut (shutdown)"}
    status = shown("Status per vantage")
    assert status["ir-lab-3"] == "international cut (shutdown)" and status["ir-lab"] == "blocked"
    stat = panel("Vantages cut off from abroad")["targets"][0]["expr"]
    assert [float(r["value"][1]) for r in fleet_prometheus.query(substitute(stat, ALL))] == [1.0]
    blocked = panel("Blocked now, by mechanism")["targets"][0]["expr"]
    assert not any(r["metric"]["vantage"] == "ir-lab-3"
                   for r in fleet_prometheus.query(substitute(blocked, ALL)))
