"""The HTTP side of `probe run`: /metrics, /healthz, /api/status, / and /-/reload."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from probe import statuspage
from probe.config import Config
from probe.evidence import ignore_file_size_signal
from probe.metrics import CONTENT_TYPE
from probe.observation import iso
from probe.report import round_json
from probe.service import Service
from probe.webconfig import WebConfig

log = logging.getLogger("probe")

SERVICE = web.AppKey("service", Service)


def _service(request: web.Request) -> Service:
    return request.app[SERVICE]


@dataclass
class _Cached:
    """A rendered body for one state of the service, and its gzip form once asked for."""

    key: object = None
    at: float = 0.0
    body: bytes = b""
    gzipped: asyncio.Future[bytes] | None = None


_CACHE = web.AppKey("cache", dict)
METRICS_MAX_AGE = 1.0  # seconds: far below any scrape interval, so scrapers see no difference


async def _respond(request: web.Request, cached: _Cached, content_type: str) -> web.Response:
    """Serve a cached body, gzipped (compressed once, in a thread) when the client accepts it,
    as Prometheus does: a big exposition is then a tenth of the bytes to write."""
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(cached.body) > 4096:
        if cached.gzipped is None:
            cached.gzipped = asyncio.ensure_future(asyncio.to_thread(gzip.compress, cached.body, 1))
        body = await asyncio.shield(cached.gzipped)
        return web.Response(body=body, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=cached.body, headers=headers)


async def metrics(request: web.Request) -> web.Response:
    """The exposition, rendered at most once a second (and at once after a round or reload):
    a flood of requests must not take the event loop from the round."""
    service = _service(request)
    caches: dict[str, _Cached] = request.app[_CACHE]
    key = (service.rounds, id(service.config), service.last_reload_error, service.evidence.write_errors)
    now = time.monotonic()
    cached = caches.get("metrics")
    if cached is None or cached.key != key or now - cached.at > METRICS_MAX_AGE:
        cached = caches["metrics"] = _Cached(key, now, service.metrics.render())
    return await _respond(request, cached, CONTENT_TYPE)


async def healthz(request: web.Request) -> web.Response:
    """Healthy while rounds keep coming: stale for three intervals means stuck."""
    service = _service(request)
    if service.latest is None:
        return web.Response(text="starting\n")
    age = time.time() - service.latest.finished
    limit = 3 * service.config.schedule.interval + 60
    if age > limit:
        return web.Response(status=503, text=f"stale: last round {age:.0f}s ago\n")
    return web.Response(text="ok\n")


async def status(request: web.Request) -> web.Response:
    """The latest round as JSON, serialised once per state: a big round's JSON is costly,
    and many clients polling it must not take the event loop from the round."""
    service = _service(request)
    caches: dict[str, _Cached] = request.app[_CACHE]
    key = (id(service.latest), service.rounds, service.last_reload_error, service.next_round_at)
    cached = caches.get("status")
    if cached is None or cached.key != key:
        text = json.dumps({
            "config": {"path": str(service.path), "last_reload_error": service.last_reload_error},
            "rounds": service.rounds,
            "next_round": iso(service.next_round_at),
            "round": round_json(service.latest) if service.latest else None,
        })
        cached = caches["status"] = _Cached(key, time.monotonic(), text.encode())
    return await _respond(request, cached, "application/json; charset=utf-8")


async def reload(request: web.Request) -> web.Response:
    ok, message = _service(request).reload()
    return web.Response(status=200 if ok else 400, text=message + "\n")


class Pacer:
    """Admission control for the HTTP side: at most `rate` requests a second (after a burst).

    The round and the HTTP server share one event loop, and check timings are evidence (a
    slow loop would look like throttling). A flood of requests is therefore paced, not
    served as fast as the CPU allows: a request beyond the rate waits its turn (costing
    nothing while it sleeps), and one that would wait longer than `max_wait` gets 503 at once.
    Prometheus scrapes a probe a few times a minute, far below the rate.
    """

    def __init__(self, rate: float = 100.0, burst: float = 50.0, max_wait: float = 5.0) -> None:
        self.rate, self.burst, self.max_wait = rate, burst, max_wait
        self.tokens = burst
        self.updated = time.monotonic()
        self.refused = 0

    def delay(self) -> float | None:
        """Reserve a slot: seconds to wait for it, or None to refuse."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        wait = (1 - self.tokens) / self.rate if self.tokens < 1 else 0.0
        if wait > self.max_wait:
            self.refused += 1
            return None
        self.tokens -= 1
        return wait

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def pace(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            wait = self.delay()
            if wait is None:
                return web.Response(status=503, text="busy: too many requests\n",
                                    headers={"Retry-After": "1"})
            if wait:
                await asyncio.sleep(wait)
            return await handler(request)

        return pace


def make_app(service: Service, web_config: WebConfig | None = None,
             pacer: Pacer | None = None) -> web.Application:
    middlewares = [(pacer or Pacer()).middleware()]
    if web_config is not None:
        middlewares.append(web_config.middleware())
    app = web.Application(middlewares=middlewares)
    app[SERVICE] = service
    app[_CACHE] = {}
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    statuspage.install(app, service)  # / and /api/target/..., probe/statuspage.py
    app.router.add_post("/-/reload", reload)
    return app


async def serve(
    path: Path, config: Config, host: str, port: int, web_config: WebConfig | None = None
) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ignore_file_size_signal()  # a file-size limit on the evidence log is an error, not death
    service = Service(path, config)
    runner = web.AppRunner(make_app(service, web_config), access_log=None)
    await runner.setup()
    try:
        ssl_context = web_config.ssl_context if web_config is not None else None
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        await runner.cleanup()
        return 2
    log.info("listening on %s://%s:%d%s, vantage %s", web_config.scheme if web_config else "http",
             host, port, " with basic auth" if web_config and web_config.users else "",
             config.vantage.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheduler = asyncio.create_task(service.loop())
    await stop.wait()
    log.info("shutting down")
    scheduler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await scheduler
    await runner.cleanup()
    return 0
