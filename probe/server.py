"""The HTTP side of `probe run`: /metrics, /healthz, /api/status, / and /-/reload."""

from __future__ import annotations

import html
import json
import time

from aiohttp import web

from probe.metrics import CONTENT_TYPE
from probe.observation import BLOCKING_VERDICTS, iso
from probe.report import round_json
from probe.service import Service
from probe.webconfig import WebConfig

SERVICE = web.AppKey("service", Service)


def _service(request: web.Request) -> Service:
    return request.app[SERVICE]


_METRICS_CACHE = web.AppKey("metrics_cache", dict)
METRICS_MAX_AGE = 1.0  # seconds: far below any scrape interval, so scrapers see no difference


async def metrics(request: web.Request) -> web.Response:
    """The exposition, rendered at most once a second (and at once after a round or reload):
    a flood of requests must not take the event loop from the round."""
    service = _service(request)
    cache: dict[str, object] = request.app[_METRICS_CACHE]
    key = (service.rounds, id(service.config), service.last_reload_error, service.evidence.write_errors)
    now = time.monotonic()
    body = cache.get("body")
    stale = now - float(str(cache.get("at", 0))) > METRICS_MAX_AGE
    if cache.get("key") != key or not isinstance(body, bytes) or stale:
        body = service.metrics.render()
        cache.update(key=key, body=body, at=now)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


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


_STATUS_CACHE = web.AppKey("status_cache", dict)


async def status(request: web.Request) -> web.Response:
    """The latest round as JSON, serialised once per state: a big round's JSON is costly,
    and many clients polling it must not take the event loop from the round."""
    service = _service(request)
    cache: dict[str, object] = request.app[_STATUS_CACHE]
    key = (id(service.latest), service.rounds, service.last_reload_error, service.next_round_at)
    if cache.get("key") != key:
        text = json.dumps({
            "config": {"path": str(service.path), "last_reload_error": service.last_reload_error},
            "rounds": service.rounds,
            "next_round": iso(service.next_round_at),
            "round": round_json(service.latest) if service.latest else None,
        })
        cache["key"], cache["body"] = key, text.encode()
    body = cache["body"]
    assert isinstance(body, bytes)
    return web.Response(body=body, content_type="application/json")


async def reload(request: web.Request) -> web.Response:
    ok, message = _service(request).reload()
    return web.Response(status=200 if ok else 400, text=message + "\n")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>reach: {vantage}</title>
<meta http-equiv="refresh" content="30"><style>
body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}}
.ok{{color:#1a7f37}} .blocked{{color:#cf222e;font-weight:bold}} .other{{color:#9a6700}}
</style></head><body><h1>reach probe: {vantage}</h1><p>{summary}</p>
<table><tr><th>messenger</th><th>target</th><th>verdict</th><th>rule</th><th>why</th></tr>
{rows}</table><p><a href="/metrics">metrics</a> · <a href="/api/status">status JSON</a></p>
</body></html>"""


async def page(request: web.Request) -> web.Response:
    service = _service(request)
    v = service.config.vantage
    latest = service.latest
    if latest is None:
        summary, rows = "The first round is running.", ""
    else:
        summary = (f"{v.role} vantage in {v.country} (AS{v.asn}); last round {iso(latest.finished)}, "
                   f"{latest.duration:.1f}s; baseline {'up' if latest.baseline.ok else 'DOWN'}")
        rows = "\n".join(
            "<tr><td>{}</td><td>{}</td><td class='{}'>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(x.messenger), html.escape(x.target),
                "ok" if x.verdict == "ok" else "blocked" if x.verdict in BLOCKING_VERDICTS else "other",
                html.escape(x.verdict), html.escape(x.rule), html.escape(x.reason))
            for x in latest.verdicts)
    body = PAGE.format(vantage=html.escape(v.name), summary=html.escape(summary), rows=rows)
    return web.Response(text=body, content_type="text/html")


def make_app(service: Service, web_config: WebConfig | None = None) -> web.Application:
    middlewares = [web_config.middleware()] if web_config is not None else []
    app = web.Application(middlewares=middlewares)
    app[SERVICE] = service
    app[_STATUS_CACHE] = {}
    app[_METRICS_CACHE] = {}
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/", page)
    app.router.add_post("/-/reload", reload)
    return app
