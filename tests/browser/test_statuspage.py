"""The status page in a real browser (Debian's headless Chromium): what an analyst sees at
a phone's width and a desktop's, in light and dark mode.

The page is served by the real `probe run` app (Service + make_app) after real rounds
against the unit tests' loopback servers: a blocked DC (its server stopped: tcp_reset), the
rest ok; then an offline vantage (nothing answers: World.cut_off). Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probe.inputs.config import load_config
from probe.model.verdicts import BLOCKING_VERDICTS, STATUS_COLOURS, VERDICT_COLOURS, VERDICTS
from probe.serve.server import make_app
from probe.serve.service import Service
from probe.sinks.statuspage import ORDER
from tests.browser.cdp import PAGE_FACTS, browser, chromium_binary, rgb
from tests.unit.conftest import DC_ADDRESSES, World
from tests.unit.test_cli import free_port, write_config

pytestmark = pytest.mark.skipif(chromium_binary() is None,
                                reason="no chromium (scripts/setup installs it)")
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


async def serve(world: World, tmp_path: Path) -> AsyncIterator[tuple[Service, str]]:
    evidence = {"directory": str(tmp_path / "evidence")}
    path = write_config(world, tmp_path / "probe.yaml", evidence=evidence)
    service = Service(path, load_config(path))
    runner = web.AppRunner(make_app(service))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield service, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def blocked_dc(world: World, tmp_path: Path) -> AsyncIterator[tuple[Service, str, float]]:
    """Two rounds: all ok, then DC 1 stopped (tcp_reset). Returns the second round's start."""
    async for service, url in serve(world, tmp_path):
        await service.run_one()
        await world.dcs[0].stop()
        second = await service.run_one()
        yield service, url, second.started


async def facts_at(url: str, width: int, dark: bool = False, shot: str | None = None) -> dict[str, Any]:
    async with browser() as page:
        await page.open(url, width, dark=dark)
        facts: dict[str, Any] = await page.evaluate(PAGE_FACTS)
        facts["requests"] = list(page.requests)
        if shot:
            await page.screenshot(SHOTS / shot)
    return facts


@pytest.mark.parametrize("width", [412, 1280])
async def test_summary_order_colours_and_evidence(
    blocked_dc: tuple[Service, str, float], world: World, width: int
) -> None:
    _, url, second_round = blocked_dc
    facts = await facts_at(url + "/", width, shot=f"unit-blocked-dc-{width}.png")
    rows = facts["rows"]
    # what: the summary, above the table, in the fleet's words with counts per mechanism
    assert facts["summaryAboveTable"]
    (card,) = facts["cards"]
    assert card["messenger"] == "telegram" and card["status"] == "blocked"
    assert card["statusColour"] == rgb(STATUS_COLOURS["blocked"])
    verdicts = [r["verdict"] for r in rows]
    assert card["counts"] == [f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts), key=ORDER.index)]
    # blocked rows first
    assert verdicts[0] == "tcp_reset" and rows[0]["target"] == f"dc1-v4:{world.dc_port}"
    blocked = [v in BLOCKING_VERDICTS for v in verdicts]
    assert blocked == sorted(blocked, reverse=True)
    # a colour per verdict: every row's chip, and the legend has the whole palette
    for row in rows:
        assert row["chip"] == rgb(VERDICT_COLOURS[row["verdict"]]), row
    assert facts["legend"] == {v: rgb(VERDICT_COLOURS[v]) for v in VERDICTS}
    # how: the step that was refused, inline
    refused = f"TCP {DC_ADDRESSES[0]}:{world.dc_port}: refused during connect (connection_refused)"
    assert refused in rows[0]["evidence"]
    # since when: the second round began the block; the DC was ok before (the strip's last
    # cell shows the worse verdict of that half hour)
    assert rows[0]["since"] == _iso_seconds(second_round)
    assert rows[0]["strip"] == ["none", "v-tcp_reset"]  # 47 half hours without a round, then this one
    ok_row = next(r for r in rows if r["verdict"] == "ok")
    assert ok_row["evidence"] == "" and ok_row["strip"][-1] == "v-ok"
    # works on a phone: a viewport, nothing wider than the screen
    assert facts["viewport"] == "width=device-width,initial-scale=1"
    assert facts["scrollWidth"] <= width
    # nothing loaded from anywhere but the probe itself
    assert facts["requests"] and all(r.startswith(url) for r in facts["requests"]), facts["requests"]
    assert facts["refresh"] is not None and 15 <= int(facts["refresh"]) <= 120
    # each row links to its evidence
    async with aiohttp.ClientSession() as session, session.get(url + rows[0]["link"]) as response:
        assert response.status == 200
        evidence = json.loads(await response.text())
    assert evidence["verdict"]["verdict"] == "tcp_reset"
    assert {o["failure"] for o in evidence["observations"]} >= {"connection_refused"}
    assert [run["verdict"] for run in evidence["history"]] == ["ok", "tcp_reset"]


async def test_dark_mode(blocked_dc: tuple[Service, str, float]) -> None:
    _, url, _ = blocked_dc
    light = await facts_at(url + "/", 1280)
    dark = await facts_at(url + "/", 1280, dark=True, shot="unit-blocked-dc-1280-dark.png")
    assert light["background"] == "rgb(255, 255, 255)" and dark["background"] == "rgb(17, 17, 17)"
    assert dark["rows"][0]["chip"] == rgb(VERDICT_COLOURS["tcp_reset"])  # the palette stays


async def test_an_offline_vantage_is_said_once(world: World, tmp_path: Path) -> None:
    await world.cut_off()
    async for service, url in serve(world, tmp_path):
        await service.run_one()
        facts = await facts_at(url + "/", 412, shot="unit-offline-412.png")
    (banner,) = facts["banners"]
    assert banner.startswith("This vantage is offline")
    assert "site: connection_refused" in banner
    assert [c["status"] for c in facts["cards"]] == ["offline"]
    assert facts["rows"] and all(r["verdict"] == "vantage_offline" for r in facts["rows"])
    assert all(r["evidence"] == "" for r in facts["rows"])  # not repeated on every row


def _iso_seconds(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
