"""Build the reach Grafana dashboards (grafana/dashboards/*.json) from this one file.

Run `python grafana/build_dashboards.py` after editing; tests/fleet/test_dashboards.py
fails when the committed JSON differs from what this script writes, so the two never
drift. Plain dicts, no Grafana SDK: the JSON model (schemaVersion 39) is small and stable.

Conventions every panel follows:
- datasource `${datasource}` (a datasource variable), so one board serves every Prometheus;
- template variables country -> vantage -> messenger, used as regex matchers;
- no data is grey and says "no data": a silent vantage must never look green or red.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probe.judge.answer import ANSWER_CODES, ANSWER_COLOURS, PATH_COLOURS
from probe.model.verdicts import (
    FLEET_STATUS,
    STATUS_COLOURS,
    VANTAGE_STATE_COLOURS,
    VANTAGE_STATES,
    VERDICT_COLOURS,
    blocking_regex,
)

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}

GREY = "#808080"
GREEN = STATUS_COLOURS["ok"]
RED = STATUS_COLOURS["blocked"]
ORANGE = STATUS_COLOURS["outage"]
PURPLE = STATUS_COLOURS["offline"]  # historic name: offline is grey-ish, not purple
DEGRADED = STATUS_COLOURS["degraded"]

BLOCKING = blocking_regex()
SEL = 'vantage=~"$vantage",messenger=~"$messenger"'
LATENCY = "rate(reach_check_latency_seconds_bucket{"

NO_DATA = {
    "type": "special",
    "options": {"match": "null+nan", "result": {"text": "no data", "color": GREY, "index": 99}},
}

# vantage_messenger:reach_status:code / country_messenger:reach_status:code: the words and
# colours of probe/model/verdicts.py (the status page uses the same).
STATUS_TEXT = {"offline": "vantage offline", "international_cut": "international cut (shutdown)"}
STATUS_MAPPINGS = [
    {
        "type": "value",
        "options": {
            str(code): {"text": STATUS_TEXT.get(word, word), "color": STATUS_COLOURS[word], "index": i}
            for i, (code, word) in enumerate(sorted(FLEET_STATUS.items()))
        },
    },
    NO_DATA,
]
# The per-messenger answer (probe.judge.answer): its code in a state timeline, its words and
# colours the status page's; a path's state in a table cell, coloured alike.
ANSWER_MAPPINGS = [
    {
        "type": "value",
        "options": {
            str(code): {"text": word.replace("_", " "), "color": ANSWER_COLOURS[word], "index": i}
            for i, (word, code) in enumerate(sorted(ANSWER_CODES.items(), key=lambda kv: kv[1]))
        },
    },
    NO_DATA,
]
PATH_STATE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            state: {"text": state.replace("_", " "), "color": colour, "index": i}
            for i, (state, colour) in enumerate(PATH_COLOURS.items())
        },
    }
]


# The vantage's network state (reach_vantage_state, probe/model/verdicts.py VANTAGE_STATES)
# by number in a state timeline: its order there, 1 offline .. 5 online.
VANTAGE_STATE_CODES = {state: i for i, state in enumerate(VANTAGE_STATES, 1)}
VANTAGE_STATE_TEXT = {"international_cut": "international cut (shutdown)"}
VANTAGE_STATE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            str(code): {"text": VANTAGE_STATE_TEXT.get(state, state.replace("_", " ")),
                        "color": VANTAGE_STATE_COLOURS[state], "index": code - 1}
            for state, code in VANTAGE_STATE_CODES.items()
        },
    },
    NO_DATA,
]


def vantage_state_expr() -> str:
    """reach_vantage_state (one series per vantage, its label the state) as the state's code."""
    return (
        "max by (vantage) ("
        + " or ".join(
            f'(reach_vantage_state{{vantage=~"$vantage",state="{state}"}} * {code})'
            for state, code in VANTAGE_STATE_CODES.items()
        )
        + ")"
    )


def answer_code_expr() -> str:
    """reach_messenger_answer (one series per vantage x messenger, its label the answer) as
    the answer's code, for a state timeline."""
    return (
        "max by (vantage, messenger) ("
        + " or ".join(
            f'(reach_messenger_answer{{{SEL},answer="{word}"}} * {code})'
            for word, code in sorted(ANSWER_CODES.items(), key=lambda kv: kv[1])
        )
        + ")"
    )


# A verdict word -> its fixed colour (tables colour the verdict cell with it).
VERDICT_MAPPINGS = [
    {
        "type": "value",
        "options": {
            v: {"text": v, "color": c, "index": i} for i, (v, c) in enumerate(VERDICT_COLOURS.items())
        },
    }
]


def verdict_colours(after: str | None = None) -> list[dict[str, Any]]:
    """Overrides giving each verdict series its fixed colour: the legend is the verdict, or
    (with `after`) ends in `after` + the verdict, e.g. "ir-1: ip_blocking" with after=": "."""
    return [
        {
            "matcher": {"id": "byName", "options": verdict}
            if after is None
            else {"id": "byRegexp", "options": f"^.*{after}{verdict}$"},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
        }
        for verdict, colour in VERDICT_COLOURS.items()
    ]


# The probe's own pages: its status page, and the evidence of one target
# (/api/target/MESSENGER/TARGET). ${probe} is a dashboard variable: where the selected
# vantage's probe is reachable from the analyst's browser (an SSH forward, a VPN address).
EVIDENCE_LINK = {
    "title": "Evidence of ${__data.fields.messenger} ${__data.fields.target} (probe)",
    "url": "${probe}/api/target/${__data.fields.messenger}/${__data.fields.target}",
    "targetBlank": True,
}
STATUS_PAGE_LINK = {"title": "The probe's status page", "url": "${probe}/", "targetBlank": True}


def column_overrides(columns: list[str]) -> list[dict[str, Any]]:
    """Verdict cells in their colour; target cells link to that target's evidence."""
    out: list[dict[str, Any]] = []
    if "verdict" in columns:
        out.append({
            "matcher": {"id": "byName", "options": "verdict"},
            "properties": [
                {"id": "mappings", "value": VERDICT_MAPPINGS},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ],
        })
    if "state" in columns:
        out.append({
            "matcher": {"id": "byName", "options": "state"},
            "properties": [
                {"id": "mappings", "value": PATH_STATE_MAPPINGS},
                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
            ],
        })
    if {"messenger", "target"} <= set(columns):
        out.append({
            "matcher": {"id": "byName", "options": "target"},
            "properties": [{"id": "links", "value": [EVIDENCE_LINK]}],
        })
    return out


BOOL_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "fail", "color": RED, "index": 0},
            "1": {"text": "ok", "color": GREEN, "index": 1},
        },
    },
    NO_DATA,
]


def grey_thresholds(*steps: tuple[float, str]) -> dict[str, Any]:
    """Thresholds whose base is grey: an unmapped or missing value is never green/red."""
    return {
        "mode": "absolute",
        "steps": [{"color": GREY, "value": None}, *({"color": c, "value": v} for v, c in steps)],
    }


def field_defaults(
    unit: str | None = None,
    mappings: list[dict[str, Any]] | None = None,
    thresholds: dict[str, Any] | None = None,
    color_mode: str = "thresholds",
    custom: dict[str, Any] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "color": {"mode": color_mode},
        "mappings": mappings if mappings is not None else [NO_DATA],
        "noValue": "no data",
        "thresholds": thresholds or grey_thresholds(),
    }
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    return defaults


def target(expr: str, legend: str = "", instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
        "format": fmt,
        "refId": "A",
    }


class Board:
    """Lays panels out left to right, 24 columns wide, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def add(
        self,
        kind: str,
        title: str,
        description: str,
        targets: list[dict[str, Any]],
        w: int,
        h: int,
        defaults: dict[str, Any],
        options: dict[str, Any] | None = None,
        transformations: list[dict[str, Any]] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        links: list[dict[str, Any]] | None = None,
    ) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        for i, t in enumerate(targets):
            t["refId"] = chr(ord("A") + i)
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
        }
        if links:
            panel["links"] = links
        if transformations:
            panel["transformations"] = transformations
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def status_history(
    board: Board,
    title: str,
    description: str,
    expr: str,
    legend: str,
    mappings: list[dict[str, Any]],
    w: int = 24,
    h: int = 8,
    kind: str = "status-history",
) -> None:
    options: dict[str, Any] = {
        "showValue": "never",
        "rowHeight": 0.9,
        "colWidth": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    if kind == "state-timeline":
        options = {**options, "mergeValues": True, "alignValue": "left"}
        del options["colWidth"]
    board.add(
        kind,
        title,
        description,
        [target(expr, legend)],
        w,
        h,
        field_defaults(mappings=mappings, color_mode="fixed", custom={"fillOpacity": 80, "lineWidth": 0}),
        options,
    )


def table(
    board: Board, title: str, description: str, expr: str, columns: list[str], w: int = 24, h: int = 8
) -> None:
    """An instant table showing only ``columns`` (labels), in that order."""
    keep = {c: i for i, c in enumerate(columns)}
    board.add(
        "table",
        title,
        description,
        [target(expr, instant=True, fmt="table")],
        w,
        h,
        field_defaults(color_mode="fixed"),
        {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        transformations=[
            {"id": "labelsToFields", "options": {"mode": "columns"}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time": True,
                        "Value": True,
                        "__name__": True,
                        "job": True,
                        "instance": True,
                    },
                    "indexByName": keep,
                    "renameByName": {},
                },
            },
        ],
        overrides=column_overrides(columns),
        links=[STATUS_PAGE_LINK],
    )


def timeseries(
    board: Board,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    w: int = 12,
    h: int = 8,
    bars: bool = False,
    stack: bool = False,
    overrides: list[dict[str, Any]] | None = None,
) -> None:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    board.add(
        "timeseries",
        title,
        description,
        targets,
        w,
        h,
        field_defaults(unit=unit, color_mode="palette-classic", custom=custom),
        {
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "showLegend": True,
                "calcs": ["lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        overrides=overrides,
    )


def stat(
    board: Board,
    title: str,
    description: str,
    expr: str,
    unit: str,
    thresholds: dict[str, Any],
    mappings: list[dict[str, Any]] | None = None,
    w: int = 6,
    h: int = 4,
    legend: str = "",
) -> None:
    board.add(
        "stat",
        title,
        description,
        [target(expr, legend, instant=True)],
        w,
        h,
        field_defaults(unit=unit, mappings=mappings, thresholds=thresholds),
        {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
    )


def variables() -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-query", "qryType": 1},
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "sort": 1,
            "regex": "",
            "hide": 0,
        }

    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": True, "text": "reach-prometheus", "value": "reach-prometheus"},
            "options": [],
            "refresh": 1,
            "regex": "",
            "hide": 0,
        },
        query_var("country", "Country", "label_values(reach_vantage_info, country)"),
        query_var("vantage", "Vantage", 'label_values(reach_vantage_info{country=~"$country"}, vantage)'),
        query_var("messenger", "Messenger", 'label_values(reach_verdict{vantage=~"$vantage"}, messenger)'),
        {
            "name": "probe",
            "label": "Probe URL",
            "description": "Where the selected vantage's probe answers from your browser (an SSH "
            "forward or VPN address): data links open its status page and per-target evidence.",
            "type": "textbox",
            "query": "http://127.0.0.1:9650",
            "current": {"selected": False, "text": "http://127.0.0.1:9650", "value": "http://127.0.0.1:9650"},
            "options": [{"selected": True, "text": "http://127.0.0.1:9650", "value": "http://127.0.0.1:9650"}],
            "hide": 0,
        },
    ]


def dashboard(uid: str, title: str, description: str, board: Board) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["reach"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "timezone": "utc",
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": []},
        "links": [
            {
                "title": "reach boards",
                "type": "dashboards",
                "tags": ["reach"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables()},
        "panels": board.panels,
    }


def fleet_overview() -> dict[str, Any]:
    b = Board()
    stat(
        b,
        "Vantages reporting",
        "Vantages with fresh series (silent ones are not counted).",
        'count(vantage:reach_vantage_info:max{country=~"$country"})',
        "none",
        grey_thresholds((1, "blue")),
        w=3,
    )
    stat(
        b,
        "Subject vantages blocked",
        "Subject vantages whose status is blocked now.",
        'sum(messenger:reach_vantages_blocked:count{messenger=~"$messenger"}) or vector(0)',
        "none",
        grey_thresholds((1, RED)),
        w=4,
    )
    stat(
        b,
        "Vantages offline",
        "Vantages with no proof of reaching the outside world (reach_vantage_online = 0).",
        'count(vantage:reach_vantage_online:bool{vantage=~"$vantage"} == 0) or vector(0)',
        "none",
        grey_thresholds((1, PURPLE)),
        w=3,
    )
    stat(
        b,
        "Vantages cut off from abroad",
        "Vantages in a shutdown with a domestic whitelist: only domestic sites answer, every "
        "international site, control resolver and messenger fails (InternationalCut pages). "
        "Their verdicts are vantage_offline: no messenger is called blocked from there.",
        'count(vantage:reach_vantage_international_cut:max{vantage=~"$vantage"} == 1) or vector(0)',
        "none",
        grey_thresholds((1, STATUS_COLOURS["international_cut"])),
        w=4,
    )
    stat(
        b,
        "Vantages degraded",
        "Vantages whose own network was lossy or slow in at least half of the last rounds: "
        "their transient failures are not called blocks.",
        'count(vantage:reach_vantage_degraded:avg{vantage=~"$vantage"} >= 0.5) or vector(0)',
        "none",
        grey_thresholds((1, DEGRADED)),
        w=3,
    )
    stat(
        b,
        "Baselines blocked",
        "Vantages that are online but whose baseline sites fail: a censor blocks the baseline "
        "(BaselineBlocked names the sites). Their verdicts still count.",
        'count(vantage:reach_baseline_blocked:max{vantage=~"$vantage"} == 1) or vector(0)',
        "none",
        grey_thresholds((1, ORANGE)),
        w=3,
    )
    stat(
        b,
        "Best control ok ratio",
        "Share of targets the best online control vantage reaches.",
        'min(messenger:reach_control_verdict_ok:max_ratio{messenger=~"$messenger"})',
        "percentunit",
        grey_thresholds((0, ORANGE), (0.5, GREEN)),
        w=4,
    )
    status_history(
        b,
        "Fleet status: country x messenger",
        "Most telling status of the vantages in each country: blocked (a target blocked in most "
        "recent rounds while a control reaches the messenger), outage (controls fail too), "
        "international cut (a vantage cut off from abroad: a shutdown, never a block), ok, "
        "degraded (the vantage's own network is lossy), unknown, vantage offline. Grey: no data.",
        'country_messenger:reach_status:code{country=~"$country",messenger=~"$messenger"}',
        "{{country}} / {{messenger}}",
        STATUS_MAPPINGS,
        h=7,
    )
    status_history(
        b,
        "Status per vantage",
        "Status of each vantage x messenger. A silent vantage has no data (grey), never blocked.",
        'vantage_messenger:reach_status:code{country=~"$country",' + SEL + "}",
        "{{vantage}} ({{country}}, {{role}}) / {{messenger}}",
        STATUS_MAPPINGS,
        h=8,
        kind="state-timeline",
    )
    status_history(
        b,
        "Can a user use it? vantage x messenger",
        "The per-messenger answer of each vantage (probe.judge.answer, from its verdicts per "
        "path): usable (chat works, no path blocked), partly blocked (some path blocked: the "
        "table beside names which), blocked (the chat path, or every path), unknown (the chat "
        "path not judged, or the vantage offline). Grey: no data.",
        answer_code_expr(),
        "{{vantage}} / {{messenger}}",
        ANSWER_MAPPINGS,
        w=12,
        h=8,
        kind="state-timeline",
    )
    table(
        b,
        "Paths blocked now",
        "Which paths a user loses, per vantage and messenger (chat, media, registration, web, "
        "calls): blocked (every judged target of the path), partly blocked (some). The verdicts "
        "of their targets are the evidence: the probe's status page and /api/status.",
        "reach_messenger_path{" + SEL + ',state=~"blocked|partly_blocked"} == 1',
        ["vantage", "messenger", "path", "state"],
        w=12,
        h=8,
    )
    table(
        b,
        "Blocked now, by mechanism",
        "Targets with a blocking verdict at vantages whose status is blocked (confirmed by a control).",
        "(reach_verdict{" + SEL + ',verdict=~"' + BLOCKING + '"} == 1)'
        ' and on (vantage, messenger) (vantage_messenger:reach_status:code{country=~"$country"} == 5)',
        ["vantage", "messenger", "target", "verdict"],
        w=12,
        h=9,
    )
    table(
        b,
        "Local verdicts now (not ok)",
        "Every target whose verdict is not ok, at every vantage, whatever the fleet status.",
        "reach_verdict{" + SEL + ',verdict!="ok"} == 1',
        ["vantage", "messenger", "target", "verdict"],
        w=12,
        h=9,
    )
    table(
        b,
        "Circumvention works",
        "Per vantage and messenger: whether the apps' own way around a block (Signal's domain "
        "fronting, a configured WhatsApp proxy) reaches the service: yes, no, or untested. "
        "A working detour never turns a block into ok: the verdicts above are the service's own.",
        "reach_circumvention{" + SEL + "} == 1",
        ["vantage", "messenger", "answer"],
        w=24,
        h=6,
    )
    status_history(
        b,
        "Connectivity per vantage",
        "Whether each vantage proved it reaches the outside world (a verified handshake or an "
        "authenticated answer from outside), whatever its baseline.",
        'vantage:reach_vantage_online:bool{vantage=~"$vantage"}',
        "{{vantage}}",
        BOOL_MAPPINGS,
        w=12,
        h=6,
    )
    status_history(
        b,
        "Baseline per vantage",
        "Whether some baseline site answered. Failing while the vantage is online means the "
        "baseline itself is blocked.",
        'reach_baseline_success{vantage=~"$vantage"}',
        "{{vantage}}",
        BOOL_MAPPINGS,
        w=12,
        h=6,
    )
    status_history(
        b,
        "Network state per vantage",
        "Each vantage's own network (reach_vantage_state): online; degraded (lossy); baseline "
        "blocked (its baseline sites fail although it is online); international cut (a shutdown "
        "with a domestic whitelist: only domestic sites answer, everything abroad fails, so no "
        "messenger is judged there); offline (nothing outside answers). Grey: no data.",
        vantage_state_expr(),
        "{{vantage}}",
        VANTAGE_STATE_MAPPINGS,
        h=6,
        kind="state-timeline",
    )
    return dashboard(
        "reach-fleet-overview", "reach / fleet overview", "Where is which messenger blocked, and how.", b
    )


def vantage_drilldown() -> dict[str, Any]:
    b = Board()
    table(
        b,
        "Vantage",
        "Labels of the selected vantages.",
        'reach_vantage_info{vantage=~"$vantage"}',
        ["vantage", "country", "asn", "network", "role"],
        w=12,
        h=5,
    )
    stat(
        b,
        "Last round age",
        "Seconds since the last finished round; large means the probe is stuck.",
        'time() - max by (vantage) (reach_round_last_timestamp_seconds{vantage=~"$vantage"})',
        "s",
        {
            "mode": "absolute",
            "steps": [
                {"color": GREEN, "value": None},
                {"color": ORANGE, "value": 300},
                {"color": RED, "value": 900},
            ],
        },
        w=4,
        h=5,
        legend="{{vantage}}",
    )
    stat(
        b,
        "Baseline",
        "The vantage's own network (baseline targets).",
        'reach_baseline_success{vantage=~"$vantage"}',
        "none",
        grey_thresholds(),
        BOOL_MAPPINGS,
        w=4,
        h=5,
        legend="{{vantage}}",
    )
    stat(
        b,
        "Config reload",
        "Whether the last configuration reload was accepted.",
        'reach_config_last_reload_successful{vantage=~"$vantage"}',
        "none",
        grey_thresholds(),
        BOOL_MAPPINGS,
        w=4,
        h=5,
        legend="{{vantage}}",
    )
    status_history(
        b,
        "Check success per target and check",
        "Each DC / front and each step (dns, tcp, tls, mtproto, http) in each round.",
        "reach_check_success{" + SEL + "}",
        "{{vantage}} {{target}} {{check}}",
        BOOL_MAPPINGS,
        h=10,
    )
    timeseries(
        b,
        "Verdicts over time",
        "How many targets have each verdict.",
        [target("count by (verdict) (reach_verdict{" + SEL + "} == 1)", "{{verdict}}")],
        "none",
        bars=True,
        stack=True,
        overrides=verdict_colours(),
    )
    timeseries(
        b,
        "Failure strings over time",
        "Failed checks per round interval, by check and failure string.",
        [
            target(
                "sum by (check, failure) (increase(reach_check_failures_total{"
                + SEL
                + "}[$__rate_interval]))",
                "{{check}}: {{failure}}",
            )
        ],
        "none",
        bars=True,
        stack=True,
    )
    timeseries(
        b,
        "Latency by check (p50, p95)",
        "From the latency histogram per vantage, messenger and check.",
        [
            target(
                "histogram_quantile(0.5, sum by (le, check) (rate(reach_check_latency_seconds_bucket{"
                + SEL
                + "}[$__rate_interval])))",
                "p50 {{check}}",
            ),
            target(
                "histogram_quantile(0.95, sum by (le, check) (rate(reach_check_latency_seconds_bucket{"
                + SEL
                + "}[$__rate_interval])))",
                "p95 {{check}}",
            ),
        ],
        "s",
    )
    timeseries(
        b,
        "Connect time per DC and front",
        "TCP connect time per target in each round (reach_check_duration_seconds).",
        [target("reach_check_duration_seconds{" + SEL + ',check="tcp"}', "{{target}}")],
        "s",
    )
    timeseries(
        b,
        "Round duration",
        "How long each round of checks takes.",
        [target('reach_round_duration_seconds{vantage=~"$vantage"}', "{{vantage}}")],
        "s",
    )
    timeseries(
        b,
        "Event-loop lag",
        "The longest event-loop lag in each round: user-space latencies of that round may be "
        "inflated by up to this much (a busy or starved probe).",
        [target('reach_round_event_loop_lag_seconds{vantage=~"$vantage"}', "{{vantage}}")],
        "s",
    )
    status_history(
        b,
        "Vantage network",
        "Online: connectivity proven this round. Baseline blocked: the baseline fails although "
        "online. Degraded: the vantage's own network is lossy or slow. Cut off from abroad: only "
        "domestic sites answer (a shutdown; no messenger is judged).",
        'label_replace(reach_vantage_online{vantage=~"$vantage"}, "state", "online", "", "")'
        ' or label_replace(1 - reach_baseline_blocked{vantage=~"$vantage"},'
        ' "state", "baseline not blocked", "", "")'
        ' or label_replace(1 - reach_vantage_degraded{vantage=~"$vantage"}, "state", "not degraded", "", "")'
        ' or label_replace(1 - reach_vantage_international_cut{vantage=~"$vantage"},'
        ' "state", "not cut off from abroad", "", "")',
        "{{vantage}} {{state}}",
        BOOL_MAPPINGS,
        w=12,
        h=8,
    )
    timeseries(
        b,
        "Baseline loss and RTT",
        "Share of the baseline's attempts that failed, and the median kernel RTT of its connects: "
        "what the classifier compares the service's targets with.",
        [
            target('reach_vantage_loss_ratio{vantage=~"$vantage"}', "loss {{vantage}}"),
            target('reach_vantage_rtt_seconds{vantage=~"$vantage"}', "RTT {{vantage}}"),
        ],
        "percentunit",
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": "RTT .*"},
                "properties": [
                    {"id": "unit", "value": "s"},
                    {"id": "custom.axisPlacement", "value": "right"},
                ],
            }
        ],
    )
    status_history(
        b,
        "Baseline sites",
        "Each baseline site in each round. Sites failing while the vantage is online are blocked: "
        "replace them in the probe's config.",
        'reach_baseline_site_success{vantage=~"$vantage"}',
        "{{vantage}} {{site}}",
        BOOL_MAPPINGS,
        w=12,
        h=8,
    )
    for panel in b.panels:
        panel.setdefault("links", [STATUS_PAGE_LINK])
    return dashboard(
        "reach-vantage",
        "reach / vantage drill-down",
        "One vantage: each DC and check, latency, failure strings, health.",
        b,
    )


def dns_tls_evidence() -> dict[str, Any]:
    b = Board()
    table(
        b,
        "DNS and TLS tampering now",
        "Targets whose current verdict is DNS injection/blocking, TLS interception or SNI filtering.",
        "reach_verdict{"
        + SEL
        + ',verdict=~"dns_injection|dns_blocking|tls_interception|sni_filtering"} == 1',
        ["vantage", "messenger", "target", "verdict"],
        w=24,
        h=7,
    )
    timeseries(
        b,
        "DNS failures by failure string",
        "dns_bogon_error / nxdomain / servfail / no answer per interval.",
        [
            target(
                "sum by (vantage, failure) (increase(reach_check_failures_total{"
                + SEL
                + ',check="dns"}[$__rate_interval]))',
                "{{vantage}}: {{failure}}",
            )
        ],
        "none",
        bars=True,
        stack=True,
    )
    timeseries(
        b,
        "TLS failures by failure string",
        "ssl_unknown_authority / invalid_hostname / reset during the handshake per interval.",
        [
            target(
                "sum by (vantage, failure) (increase(reach_check_failures_total{"
                + SEL
                + ',check="tls"}[$__rate_interval]))',
                "{{vantage}}: {{failure}}",
            )
        ],
        "none",
        bars=True,
        stack=True,
    )
    timeseries(
        b,
        "Injection and interception verdicts",
        "Targets with each DNS/TLS tampering verdict.",
        [
            target(
                "count by (vantage, verdict) (reach_verdict{"
                + SEL
                + ',verdict=~"dns_injection|dns_blocking|tls_interception|sni_filtering"} == 1)',
                "{{vantage}}: {{verdict}}",
            )
        ],
        "none",
        bars=True,
        stack=True,
        overrides=verdict_colours(after=": "),
    )
    status_history(
        b,
        "DNS and TLS check success",
        "Each dns and tls step per round.",
        "reach_check_success{" + SEL + ',check=~"dns|tls"}',
        "{{vantage}} {{target}} {{check}}",
        BOOL_MAPPINGS,
        w=12,
        h=8,
    )
    timeseries(
        b,
        "DNS and TLS latency (p95)",
        "Slow answers can mean an injector racing the resolver.",
        [
            target(
                "histogram_quantile(0.95, sum by (le, vantage, check) ("
                + LATENCY
                + SEL
                + ',check=~"dns|tls"}[$__rate_interval])))',
                "{{vantage}} {{check}}",
            )
        ],
        "s",
        w=24,
    )
    return dashboard(
        "reach-dns-tls",
        "reach / DNS and TLS evidence",
        "Which DNS answers and TLS handshakes are tampered with, where and how.",
        b,
    )


BOARDS = {
    "fleet-overview.json": fleet_overview,
    "vantage-drilldown.json": vantage_drilldown,
    "dns-tls-evidence.json": dns_tls_evidence,
}


def render(name: str) -> str:
    return json.dumps(BOARDS[name](), indent=2, sort_keys=False) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name in BOARDS:
        (OUT / name).write_text(render(name))
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
