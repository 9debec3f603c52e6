"""The per-messenger answer on the status page, in a real browser (headless Chromium): "can a
user here use Telegram?" in one sentence on its card, the paths in their colours, at a
phone's width and a desktop's.

The page is served by the real `probe run` app after real rounds against the unit tests'
loopback servers (Telegram's two DCs are its chat path, the web front its web path): all ok;
then the web front stopped (web blocked, chat still works: partly blocked); then the front
back and the DCs stopped (the chat path blocked: blocked); then nothing answering (the
vantage offline: unknown, never blocked). Screenshots go to build/screenshots/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probe.inputs.catalog import builtin
from probe.inputs.config import load_config
from probe.judge.answer import ANSWER_COLOURS, PATH_COLOURS
from probe.serve.server import make_app
from probe.serve.service import Service
from tests.browser.cdp import browser, chromium_binary, rgb
from tests.unit.conftest import World
from tests.unit.test_cli import free_port, write_config

pytestmark = pytest.mark.skipif(chromium_binary() is None,
                                reason="no chromium (scripts/setup installs it)")
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"

ANSWER_FACTS = """(() => {
  const q = (s, root) => [...(root || document).querySelectorAll(s)];
  return {cards: q('#summary .card').map(c => {
      const a = c.querySelector('.answer');
      const box = a ? a.getBoundingClientRect() : null;
      return {messenger: c.dataset.messenger,
        status: c.querySelector('[data-status]').dataset.status,
        answer: a ? a.dataset.answer : null, sentence: a ? a.innerText : null,
        blockedPaths: a ? a.dataset.blockedPaths : null,
        border: a ? getComputedStyle(a).borderLeftColor : null,
        visible: !!box && box.width > 0 && box.height > 0 && box.bottom <= window.innerHeight,
        paths: q('.paths .chip', c).map(p => ({path: p.dataset.path, state: p.dataset.state,
          text: p.innerText, colour: getComputedStyle(p).backgroundColor}))};
    }),
    scrollWidth: document.documentElement.scrollWidth};
})()"""


def telegram_on_loopback(world: World) -> dict[str, Any]:
    """The world's Telegram: its DCs (chat) and web front (web) only; the catalogue's other
    groups hold Telegram's real addresses and names, and tests never leave this machine."""
    messengers: dict[str, Any] = world.config_data()["messengers"]
    messengers["telegram"]["groups"] = {name: {"endpoints": []} for name in builtin("telegram").groups
                                        if name not in ("datacenters", "domains")}
    return messengers


@pytest.fixture
async def served(world: World, tmp_path: Path) -> AsyncIterator[tuple[Service, str]]:
    path = write_config(world, tmp_path / "probe.yaml", messengers=telegram_on_loopback(world),
                        evidence={"directory": str(tmp_path / "evidence")},
                        # every round measures every target: this test is about the card,
                        # not the scheduler's pacing (tests/unit/test_schedule.py)
                        budget={"bytes_per_day": "unlimited"},
                        schedule={**world.config_data()["schedule"], "sweep": 1})
    service = Service(path, load_config(path))
    runner = web.AppRunner(make_app(service))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield service, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def card_at(url: str, width: int, shot: str) -> dict[str, Any]:
    async with browser() as page:
        await page.open(url + "/", width)
        facts: dict[str, Any] = await page.evaluate(ANSWER_FACTS)
        await page.screenshot(SHOTS / shot, full_page=False)
    assert facts["scrollWidth"] <= width  # the sentence wraps on a phone, nothing overflows
    (card,) = facts["cards"]
    assert card["messenger"] == "telegram" and card["visible"], card  # on the first screen
    assert card["border"] == rgb(ANSWER_COLOURS[card["answer"]])
    for chip in card["paths"]:
        assert chip["colour"] == rgb(PATH_COLOURS[chip["state"]]) and chip["text"] == chip["path"]
    return card


@pytest.mark.parametrize("width", [412, 1280])
async def test_the_card_says_whether_a_user_can_use_telegram(
    served: tuple[Service, str], world: World, width: int
) -> None:
    service, url = served
    await service.run_one()
    card = await card_at(url, width, f"answer-usable-{width}.png")
    assert card["answer"] == "usable" and card["status"] == "ok"
    assert card["sentence"].startswith("Telegram: usable")
    assert {c["path"]: c["state"] for c in card["paths"]}["chat"] == "ok"

    # the web front stops answering: the web path is lost, chat still works
    await world.web.stop()
    await service.run_one()
    card = await card_at(url, width, f"answer-partly-blocked-{width}.png")
    assert card["sentence"] == "Telegram: partly blocked — web", card
    assert card["answer"] == "partly_blocked" and card["blockedPaths"] == "web"
    assert card["status"] == "blocked"
    assert {c["path"]: c["state"] for c in card["paths"]} == {"chat": "ok", "web": "blocked"}

    # the web front back, the DCs stopped: the chat path is blocked, so the app does not
    # work at all, whatever else does
    await world.restart_web("good")
    for dc in world.dcs:
        await dc.stop()
    await service.run_one()
    card = await card_at(url, width, f"answer-blocked-{width}.png")
    assert card["sentence"] == "Telegram: blocked — chat", card
    assert card["answer"] == "blocked" and card["blockedPaths"] == "chat"
    assert {c["path"]: c["state"] for c in card["paths"]} == {"chat": "blocked", "web": "ok"}

    # nothing answers at all: no proof the vantage is online, so no answer but "unknown"
    await world.cut_off()
    await service.run_one()
    card = await card_at(url, width, f"answer-offline-{width}.png")
    assert card["sentence"] == "Telegram: unknown — this vantage is offline", card
    assert card["answer"] == "unknown" and card["status"] == "offline"
    assert {c["state"] for c in card["paths"]} == {"unknown"}
