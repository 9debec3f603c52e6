"""The status page's HTTP side in `probe run`: `/`, `/api/target/MESSENGER/TARGET`, and the
history kept from live rounds and rebuilt from the evidence log at start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from probe.inputs import freshness
from probe.inputs.config import Config
from probe.inputs.schema import ConfigError
from probe.model.observation import RoundResult
from probe.sinks.report import round_json
from probe.sinks.statuspage.history import History, iso
from probe.sinks.statuspage.render import CSP, render_page, target_json

log = logging.getLogger(__name__)


class RoundSource(Protocol):
    """What the page reads of the running service (serve/service.py's Service)."""

    @property
    def config(self) -> Config: ...
    @property
    def latest(self) -> RoundResult | None: ...
    @property
    def round_listeners(self) -> list[Callable[[RoundResult], None]]: ...
    @property
    def last_reload_error(self) -> str | None: ...
    @property
    def next_round_at(self) -> float | None: ...


class StatusPage:
    """The page's state in `probe run`: the history, and the rendered page per round."""

    def __init__(self, service: RoundSource) -> None:
        self.service = service
        self.history = History()
        self._cache: tuple[object, str] | None = None
        self._stale: tuple[object, list[str]] = (None, [])
        self._round_json: tuple[object, dict[str, Any]] | None = None
        self._targets_key: object = None
        self._targets: dict[tuple[str, str], str] = {}  # /api/target bodies of this round
        self._loader: asyncio.Task[None] | None = None
        self._pending: list[RoundResult] | None = None  # live rounds while the log loads
        service.round_listeners.append(self.record)

    def record(self, result: RoundResult) -> None:
        self.history.record_result(result)
        if self._pending is not None:
            self._pending.append(result)

    async def latest_json(self) -> dict[str, Any] | None:
        """The latest round as JSON, made once per round in a thread (a finished round is
        not changed any more; a big one's JSON must not hold up the event loop)."""
        latest = self.service.latest
        if latest is None:
            return None
        if self._round_json is None or self._round_json[0] is not latest:
            self._round_json = (latest, await asyncio.to_thread(round_json, latest))
        return self._round_json[1]

    async def start_loading(self, app: web.Application) -> None:
        """Rebuild the history from the evidence log in the background: a big log takes a
        while to read, and neither the HTTP side nor the first round waits for it."""
        self._pending = []
        self._loader = asyncio.create_task(self._load())

    async def stop_loading(self, app: web.Application) -> None:
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader

    async def loaded(self) -> None:
        """Wait until the history from the evidence log is in (tests, and nothing else)."""
        if self._loader is not None:
            await asyncio.shield(self._loader)

    async def _load(self) -> None:
        directory = self.service.config.evidence.directory
        loaded = History(self.history.window)
        try:
            count = await asyncio.to_thread(loaded.load, directory)
        except Exception:  # the page works without its past: log, never fail the service
            log.exception("status page: cannot load history from %s", directory)
            self._pending = None
            return
        for result in self._pending or []:  # rounds finished while the log was read
            loaded.record_result(result)
        self.history, self._pending = loaded, None
        if count:
            log.info("status page: %d rounds of history from %s", count, directory)

    async def page(self, request: web.Request) -> web.Response:
        service = self.service
        now = time.time()
        key = (id(service.latest), self.history.version, service.last_reload_error, int(now // 60),
               id(service.config))
        if self._cache is None or self._cache[0] != key:
            v = service.config.vantage
            next_round = service.next_round_at
            refresh = int(min(120, max(15, (next_round - now + 3) if next_round else 30)))
            body = render_page(
                await self.latest_json(), self.history, now=now, refresh=refresh,
                vantage={"name": v.name, "country": v.country, "asn": v.asn, "network": v.network,
                         "role": v.role},
                reload_error=service.last_reload_error,
                next_round=iso(next_round) if next_round else None,
                stale=self.stale(service.config, now))
            self._cache = (key, body)
        return web.Response(text=self._cache[1], content_type="text/html",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    def stale(self, config: Config, now: float) -> list[str]:
        """What the probe's knowledge is past (probe.inputs.freshness), worked out once per
        config and day: warnings for the page, never errors."""
        key = (id(config), int(now // 86400))
        if self._stale[0] != key:
            try:
                lines = freshness.warnings(config)
            except ConfigError as exc:  # an unreadable anchor file: the TLS checks say so too
                lines = [str(exc)]
            self._stale = (key, lines)
        return self._stale[1]

    async def target(self, request: web.Request) -> web.Response:
        """One target's evidence, rendered once per round (and history change) per target:
        clients polling a large record must not take the event loop from the round."""
        messenger, target = request.match_info["messenger"], request.match_info["target"]
        key = (id(self.service.latest), self.history.version)
        if self._targets_key != key:
            self._targets_key, self._targets = key, {}
        body = self._targets.get((messenger, target))
        if body is None:
            data = target_json(await self.latest_json(), self.history, messenger, target)
            if data is None:
                return web.json_response({"error": "no such target in the latest round"}, status=404)
            body = json.dumps(data, indent=1)
            if len(self._targets) < MAX_CACHED_TARGETS:
                self._targets[(messenger, target)] = body
        return web.Response(text=body, content_type="application/json")


STATUS_PAGE = web.AppKey("status_page", StatusPage)
MAX_CACHED_TARGETS = 4096


def install(app: web.Application, service: RoundSource) -> None:
    """The page at `/`, the evidence per target at /api/target/MESSENGER/TARGET (a target
    name may hold '/' and ':'), and the history loaded from the evidence log at start (in
    the background)."""
    page = app[STATUS_PAGE] = StatusPage(service)
    app.router.add_get("/", page.page)
    app.router.add_get("/api/target/{messenger}/{target:.+}", page.target)
    app.on_startup.append(page.start_loading)
    app.on_cleanup.append(page.stop_loading)
