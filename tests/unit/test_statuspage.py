"""The status page's history and words, without a browser (tests/browser has the page)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from probe.inputs.config import load_config
from probe.serve.server import make_app
from probe.serve.service import Service
from probe.sinks.statuspage import (
    MAX_ROWS,
    SLOTS,
    STATUS_PAGE,
    History,
    key_evidence,
    messenger_status,
    render_page,
    target_link,
)
from tests.unit.conftest import World
from tests.unit.test_cli import write_config

T0 = 1_800_000_000.0


def test_since_is_when_the_current_verdict_began() -> None:
    history = History()
    key = ("telegram", "dc1-v4:443")
    for minute, verdict in [(0, "ok"), (5, "ok"), (10, "ip_blocking"), (15, "ip_blocking")]:
        history.record(T0 + minute * 60, [(*key, verdict)])
    assert history.since(key) == (T0 + 600, True)
    assert [(r.verdict, r.rounds) for r in history.runs[key]] == [("ok", 2), ("ip_blocking", 2)]
    # a verdict that held since the first round known is only "at least since"
    steady = History()
    for minute in (0, 5, 10):
        steady.record(T0 + minute * 60, [("telegram", "t", "ok")])
    assert steady.since(("telegram", "t")) == (T0, False)
    # an older round (the log overlapping the live rounds at start) changes nothing
    history.record(T0 + 60, [(*key, "ok")])
    assert history.since(key) == (T0 + 600, True)


def test_a_missing_round_breaks_a_run() -> None:
    history = History()
    key = ("telegram", "t")
    history.record(T0, [(*key, "tcp_reset")])
    history.record(T0 + 60, [])  # the target was not in this round (config changed)
    history.record(T0 + 120, [(*key, "tcp_reset")])
    assert history.since(key) == (T0 + 120, True)


def test_strip_shows_the_worst_verdict_per_slot_and_gaps() -> None:
    history = History()
    key = ("telegram", "t")
    now = T0 + 86400
    history.record(now - 3 * 1800 + 1, [(*key, "ok")])  # slot 45
    history.record(now - 1800 + 1, [(*key, "ok")])  # slot 47
    history.record(now - 1800 + 2, [(*key, "sni_filtering")])  # slot 47 too: the worse one shows
    strip = history.strip(key, now)
    assert len(strip) == SLOTS
    assert strip[-3:] == ["ok", None, "sni_filtering"]  # slot 46 had no round at all
    assert strip[:-3] == [None] * (SLOTS - 3)


def test_prune_keeps_the_current_run_however_old() -> None:
    history = History(window=3600)
    key = ("telegram", "t")
    history.record(T0, [(*key, "ok")])
    history.record(T0 + 60, [(*key, "ip_blocking")])
    for minute in range(2, 200):
        history.record(T0 + minute * 60, [(*key, "ip_blocking")])
    assert [r.verdict for r in history.runs[key]] == ["ip_blocking"]
    assert history.since(key) == (T0 + 60, True)
    assert len(history.rounds) <= 61


def test_status_words() -> None:
    online = {"online": True, "degraded": False}
    assert messenger_status(["ok", "ip_blocking"], online, "subject") == "blocked"
    assert messenger_status(["ok", "ip_blocking"], online, "control") == "outage"
    assert messenger_status(["vantage_offline"] * 3, {}, "subject") == "offline"
    assert messenger_status(["ok"], {"online": False}, "subject") == "offline"
    assert messenger_status(["ok"], {"online": True, "degraded": True}, "subject") == "degraded"
    assert messenger_status(["ok", "vantage_offline"], online, "subject") == "ok"
    assert messenger_status(["ok", "inconclusive"], online, "subject") == "unknown"


def test_a_control_vantage_calls_failures_an_outage_not_a_block() -> None:
    verdicts = [{"messenger": "telegram", "target": f"t{i}", "rule": "r", "evidence": [],
                 "verdict": "ip_blocking" if i < 2 else "ok"} for i in range(5)]
    round_ = {"started": "2026-11-25T04:00:00+00:00", "verdicts": verdicts, "observations": [],
              "network": {"online": True}}
    card = re.search(r"<section class='card'.*?</section>", render_page(
        round_, History(), vantage={"name": "c", "role": "control"}, now=T0)).group(0)
    assert "outage" in card and "2 of 5 targets failing" in card and "blocked" not in card
    card = re.search(r"<section class='card'.*?</section>", render_page(
        round_, History(), vantage={"name": "s", "role": "subject"}, now=T0)).group(0)
    assert "2 of 5 targets blocked" in card


def test_key_evidence_names_forged_answers_certificates_and_attempts() -> None:
    observations = {
        1: {"id": 1, "check": "dns", "failure": "dns_bogon_error", "address": "198.18.1.53", "port": 53,
            "details": {"resolver": "system", "answers": ["10.10.34.34"], "fingerprints": ["ooni.ir_4"]}},
        2: {"id": 2, "check": "tls", "operation": "tls_handshake", "failure": "ssl_unknown_authority",
            "address": "149.154.167.99", "port": 443, "role": "primary",
            "details": {"sni": "web.telegram.org", "peer_certificate_sha256": "ab" * 32}},
        3: {"id": 3, "check": "tls", "operation": "tls_handshake", "failure": "connection_reset",
            "address": "149.154.167.99", "port": 443, "details": {"sni": "web.telegram.org"},
            "attempts": [{"failure": "connection_reset"}, {"failure": None},
                         {"failure": "connection_reset"}]},
    }
    verdict = {"verdict": "dns_injection", "evidence": [{"observation": 1}, {"observation": 2},
                                                        {"observation": 3}]}
    assert key_evidence(verdict, observations) == [
        "DNS system answered 10.10.34.34 (fingerprint ooni.ir_4)",
        "TLS 149.154.167.99:443 SNI web.telegram.org: ssl_unknown_authority at tls handshake; "
        f"certificate SHA-256 {'ab' * 32}",
        "TLS 149.154.167.99:443 SNI web.telegram.org: reset during tls handshake (connection_reset); "
        "2 of 3 attempts failed",
    ]
    assert key_evidence({"verdict": "vantage_offline", "evidence": [{"observation": 1}]}, observations) == []


async def test_history_survives_a_restart_through_the_evidence_log(world: World, tmp_path: Path) -> None:
    """Rounds of one `probe run`, then a new one on the same evidence directory: the page's
    history (since, runs) is rebuilt from the log at start."""
    path = write_config(world, tmp_path / "probe.yaml", evidence={"directory": str(tmp_path / "ev")})
    first = Service(path, load_config(path))
    await first.run_one()
    await world.dcs[0].stop()
    blocked = await first.run_one()
    target = f"dc1-v4:{world.dc_port}"

    second = Service(path, load_config(path))
    client = TestClient(TestServer(make_app(second)))
    await client.start_server()  # starts reading the log in the background
    try:
        response = await client.get(target_link("telegram", target))
        assert response.status == 404  # no round yet in this process: no verdict to show
        await second.run_one()  # DC 1 still down: the run goes on across the restart
        await client.app[STATUS_PAGE].loaded()  # whichever finished first, the log or the round
        response = await client.get(target_link("telegram", target))
        assert response.status == 200
        data = json.loads(await response.text())
        assert [(run["verdict"], run["rounds"]) for run in data["history"]] == [("ok", 1), ("tcp_reset", 2)]
        assert data["since_exact"] is True
        assert data["since"] == datetime.fromtimestamp(blocked.started, UTC).isoformat(timespec="seconds")
    finally:
        await client.close()



def test_a_big_probe_draws_the_worst_rows_and_says_how_many_are_left_out() -> None:
    count = MAX_ROWS + 10
    verdicts = [{"messenger": "telegram", "target": f"t{i}", "rule": "r", "evidence": [],
                 "verdict": "ip_blocking" if i >= count - 3 else "ok"} for i in range(count)]
    page = render_page({"started": "2026-11-25T04:00:00+00:00", "verdicts": verdicts, "observations": []},
                       History(), vantage={"name": "big"}, now=T0)
    assert page.count("<tr class='r-") == MAX_ROWS
    drawn = re.findall(r"<span class='id'>(t\d+)</span>", page)
    assert drawn[:3] == [f"t{count - 3}", f"t{count - 2}", f"t{count - 1}"]  # blocked first
    assert "10 more targets, the least severe, are not drawn" in page


async def test_a_blocked_baseline_is_said_once_and_the_targets_are_still_judged(
    world: World, tmp_path: Path
) -> None:
    """Only the baseline fails while the service's own verified handshakes prove the vantage
    online: one banner says so, and no target is vantage_offline."""
    await world.baseline.stop()
    path = write_config(world, tmp_path / "probe.yaml")
    service = Service(path, load_config(path))
    result = await service.run_one()
    assert result.network.online and result.network.baseline_blocked
    client = TestClient(TestServer(make_app(service)))
    await client.start_server()
    try:
        page = await (await client.get("/")).text()
    finally:
        await client.close()
    banners = re.findall(r"<div class='banner' role='alert'>(.*?)</div>", page)
    (blocked,) = [b for b in banners if "baseline sites fail" in b]
    assert blocked.startswith("<strong>The baseline sites fail although the vantage is online</strong>")
    assert "site: connection_refused" in blocked
    rows = re.findall(r"<tr class='r-(\w+)'.*?<span class='id'>([^<]+)</span>", page)
    assert any(verdict != "vantage_offline" for verdict, _ in rows)  # the targets are judged
    offline = {target for verdict, target in rows if verdict == "vantage_offline"}
    assert all(target.endswith("/v6") for target in offline)  # the world has no IPv6 baseline


def test_names_from_the_evidence_log_cannot_inject_markup() -> None:
    """The history is rebuilt from a file on disk: whatever it holds is text on the page."""
    evil = "x'><script>alert(1)</script>"
    history = History()
    history.record(T0, [(evil, evil, evil)])
    round_ = {"started": "2026-11-25T04:00:00+00:00", "observations": [],
              "verdicts": [{"messenger": evil, "target": evil, "verdict": evil, "rule": evil,
                            "reason": evil, "evidence": []}]}
    page = render_page(round_, history, vantage={"name": evil, "network": evil}, now=T0 + 60,
                       reload_error=evil)
    assert "<script>" not in page and "x'>" not in page
    assert page.count("x&#x27;&gt;&lt;script&gt;") >= 5  # shown, as text
