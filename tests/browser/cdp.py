"""A headless Chromium driven over the DevTools protocol, with nothing but aiohttp.

Why not Selenium or Playwright: they download browser builds or drivers of their own, which
a CI machine without outside access cannot; Debian's `chromium` package and the DevTools
websocket are all a real-browser test needs: load a page at a given width and colour
scheme, evaluate DOM assertions, list every request the page made, take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Page:
    """One tab: navigate, evaluate, screenshot; every request URL is recorded."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.requests: list[str] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                future = self.pending.pop(data["id"])
                if "error" in data:
                    future.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif "method" in data:
                if data["method"] == "Network.requestWillBeSent":
                    self.requests.append(data["params"]["request"]["url"])
                for waiter in self.events.pop(data["method"], []):
                    if not waiter.done():
                        waiter.set_result(data.get("params", {}))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[number] = future
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        return await asyncio.wait_for(future, 30)

    def event(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.events.setdefault(method, []).append(future)
        return future

    async def open(self, url: str, width: int, height: int = 900, dark: bool = False) -> None:
        """Load `url` as a device `width` CSS pixels wide (a phone below 600), light or dark."""
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=width < 600)
        await self.send("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
        self.requests.clear()
        loaded = self.event("Page.loadEventFired")
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(loaded, 30)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """The whole page as PNG, or only what the first screen shows."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        if not full_page:
            viewport = metrics.get("cssLayoutViewport") or metrics["layoutViewport"]
            size = {"width": viewport["clientWidth"], "height": viewport["clientHeight"]}
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full_page,
                               clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                                     "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Page]:
    """A headless Chromium with one page; closed (and its profile removed) afterwards."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium (scripts/setup installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="reach-chromium-")
    process = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        endpoint = None
        async with asyncio.timeout(60):
            while endpoint is None:
                line = (await process.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("chromium exited before it listened")
                match = re.search(r"DevTools listening on ws://([^/]+)/", line)
                endpoint = match[1] if match else None
        # keep reading chromium's chatter, or a full pipe would stall it
        drain = asyncio.ensure_future(_drain(process.stderr))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{endpoint}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Network.enable")
                try:
                    yield page
                finally:
                    page.reader.cancel()
                    drain.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


# What the tests read from a status page, in one evaluation.
PAGE_FACTS = """(() => {
  const q = (s, root) => [...(root || document).querySelectorAll(s)];
  const rows = q('#targets tbody tr').map(r => ({
    verdict: r.dataset.verdict, target: r.querySelector('.id').textContent,
    evidence: r.querySelector('.ev').innerText,
    chip: getComputedStyle(r.querySelector('.chip')).backgroundColor,
    link: r.querySelector('a').getAttribute('href'),
    since: (r.querySelector('.since') || {dataset: {}}).dataset.since || null,
    strip: q('.strip span', r).map(s => s.className),
    width: r.getBoundingClientRect().width}));
  const cards = q('#summary .card').map(c => ({messenger: c.dataset.messenger,
    status: c.querySelector('[data-status]').dataset.status,
    statusColour: getComputedStyle(c.querySelector('[data-status]')).backgroundColor,
    counts: q('.counts .chip', c).map(x => x.textContent)}));
  const legend = Object.fromEntries(
    q('footer .chip').map(c => [c.dataset.verdict, getComputedStyle(c).backgroundColor]));
  const summary = document.querySelector('#summary');
  const table = document.querySelector('#targets');
  return {rows, cards, legend, banners: q('.banner').map(b => b.innerText),
    summaryAboveTable: !!summary && !!table
      && summary.getBoundingClientRect().top < table.getBoundingClientRect().top,
    scrollWidth: document.documentElement.scrollWidth, viewportWidth: window.innerWidth,
    background: getComputedStyle(document.body).backgroundColor,
    viewport: (document.querySelector('meta[name=viewport]') || {}).content || null,
    refresh: (document.querySelector('meta[http-equiv=refresh]') || {}).content || null};
})()"""


def rgb(hex_colour: str) -> str:
    """#RRGGBB as getComputedStyle writes it."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"
