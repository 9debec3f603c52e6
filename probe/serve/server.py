"""The HTTP side of `probe run`: /metrics, /healthz, /api/status, / and /-/reload.

Middlewares, outermost first (the order is the defence, docs/reliability.md section 5):
1. the connection guard's marker and the security headers (probe/serve/listener.py);
2. the scrubber: no response body carries the vantage's own address (probe/sinks/scrub.py);
3. authentication (web-config basic auth; /healthz is open) -- before pacing, so an
   unauthenticated flood cannot use up the paced slots of real scrapes;
4. pacing, with /healthz in a bucket of its own so health checks are never starved.
`/-/reload` is off unless `probe run --web-enable-lifecycle` (as Prometheus'
--web.enable-lifecycle); then it needs authentication, a same-origin request and is rate
limited, and a reload never starts a round early.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import json
import logging
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from probe.inputs.config import Config
from probe.model.observation import iso
from probe.serve.listener import Listener, connection_cap, guard_middleware, raise_fd_limit
from probe.serve.service import Service
from probe.serve.webconfig import WebConfig
from probe.sinks import statuspage
from probe.sinks.evidence import ignore_file_size_signal
from probe.sinks.metrics import CONTENT_TYPE
from probe.sinks.report import round_json
from probe.sinks.scrub import install_log_filter

log = logging.getLogger("probe")

SERVICE = web.AppKey("service", Service)
LIFECYCLE = web.AppKey("lifecycle", bool)
RELOAD_MIN_INTERVAL = 5.0  # seconds between two accepted POST /-/reload
# A failed login (401, or 429 while bcrypt is busy) is answered after this pause. A client
# that sends its next guess when answered then costs the event loop a few requests a
# second instead of as many as it can parse; the rounds share that loop. Sleeping costs
# nothing, and the connection cap bounds how many sleep at once.
FAILED_LOGIN_DELAY = 0.25
_LAST_RELOAD = web.AppKey("last_reload", list)
SCRUBBED_KEY = "reach_scrubbed"  # set on a response whose body already went through the scrubber


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
        response = web.Response(body=body, headers={**headers, "Content-Encoding": "gzip"})
    else:
        response = web.Response(body=cached.body, headers=headers)
    response[SCRUBBED_KEY] = True  # the cache holds scrubbed bodies only
    return response


async def metrics(request: web.Request) -> web.Response:
    """The exposition, rendered at most once a second (and at once after a round or reload):
    a flood of requests must not take the event loop from the round."""
    service = _service(request)
    caches: dict[str, _Cached] = request.app[_CACHE]
    key = (service.rounds, id(service.config), service.last_reload_error, service.evidence.write_errors)
    now = time.monotonic()
    cached = caches.get("metrics")
    if cached is None or cached.key != key or now - cached.at > METRICS_MAX_AGE:
        cached = caches["metrics"] = _Cached(key, now, service.scrubber.bytes(service.metrics.render()))
    return await _respond(request, cached, CONTENT_TYPE)


async def healthz(request: web.Request) -> web.Response:
    """Healthy while rounds keep coming: stale for three intervals means stuck."""
    ok, text = _service(request).health()
    return web.Response(status=200 if ok else 503, text=text + "\n")


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
        cached = caches["status"] = _Cached(key, time.monotonic(), service.scrubber.bytes(text.encode()))
    return await _respond(request, cached, "application/json; charset=utf-8")


def same_origin(request: web.Request) -> bool:
    """Whether a request may come from a browser page of another site (CSRF): a browser says
    so in Sec-Fetch-Site or Origin; scripts and curl send neither and are let through."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.lower() == f"{request.scheme}://{request.host}".lower()


async def reload(request: web.Request) -> web.Response:
    """POST /-/reload: 403 unless lifecycle is enabled and the request is same-origin; 429
    within RELOAD_MIN_INTERVAL of the last one; the file is parsed in a thread."""
    if not request.app[LIFECYCLE]:
        return web.Response(status=403, text="Lifecycle API is not enabled "
                            "(probe run --web-enable-lifecycle); send SIGHUP to reload.\n")
    if not same_origin(request):
        return web.Response(status=403, text="cross-origin request refused\n")
    last = request.app[_LAST_RELOAD]
    wait = last[0] + RELOAD_MIN_INTERVAL - time.monotonic()
    if wait > 0:
        return web.Response(status=429, text="reloaded a moment ago; try again later\n",
                            headers={"Retry-After": str(int(wait) + 1)})
    last[0] = time.monotonic()
    ok, message = await _service(request).reload_async()
    return web.Response(status=200 if ok else 400, text=message + "\n")


class Pacer:
    """Admission control for the HTTP side: at most `rate` requests a second (after a burst),
    shared fairly between sources.

    The round and the HTTP server share one event loop, and check timings are evidence (a
    slow loop would look like throttling). A flood of requests is therefore paced, not
    served as fast as the CPU allows: a request beyond the rate waits its turn (costing
    nothing while it sleeps), and one that waited `max_wait` gets 503. Waiting requests are
    queued per source (the client's address) and served round-robin between sources, so a
    flood from one source queues behind itself: Prometheus' scrape or a health check from
    another source waits for about one slot per active source, not for the flood.
    Prometheus scrapes a probe a few times a minute, far below the rate.
    """

    MAX_WAITING = 4096  # requests queued at most (the connection cap bounds them anyway)

    def __init__(self, rate: float = 100.0, burst: float = 50.0, max_wait: float = 5.0) -> None:
        self.rate, self.burst, self.max_wait = rate, burst, max_wait
        self.tokens = burst
        self.updated = time.monotonic()
        self.refused = 0
        self.waiting = 0
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._dispatcher: asyncio.Task[None] | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, source: str) -> bool:
        """Wait for a slot for a request from `source`: True when admitted, False (counted
        in `refused`) after `max_wait` or when too many wait already."""
        self._refill()
        if not self._queues and self.tokens >= 1:
            self.tokens -= 1
            return True
        if self.waiting >= self.MAX_WAITING:
            self.refused += 1
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(source, deque()).append(future)
        self.waiting += 1
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())
        try:
            await asyncio.wait_for(future, self.max_wait)
            return True
        except TimeoutError:
            self.refused += 1
            return False

    async def _dispatch(self) -> None:
        """Hand out slots as tokens come, one source after the other."""
        while self._queues:
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.rate)
                continue
            source, queue = next(iter(self._queues.items()))
            future = queue.popleft()
            self.waiting -= 1
            if queue:
                self._queues.move_to_end(source)
            else:
                del self._queues[source]
            if not future.done():  # done: it gave up (timed out) while queued
                self.tokens -= 1
                future.set_result(None)

    def middleware(self, health: Pacer | None = None) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Pace requests; /healthz draws on `health` (its own bucket) when given."""

        @web.middleware
        async def pace(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            bucket = health if health is not None and request.path == "/healthz" else self
            if not await bucket.acquire(request.remote or ""):
                return web.Response(status=503, text="busy: too many requests\n",
                                    headers={"Retry-After": "1"})
            return await handler(request)

        return pace


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a Host header may be answered: none (not a browser), an IP literal (a
    rebinding attack needs a name), localhost, or a configured name."""
    if not host:
        return True
    name = host.strip().lower()
    if name.startswith("["):  # [v6]:port
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name == "localhost" or name.endswith(".localhost") or name in allowed


HOST_CHECKED_EXEMPT = ("/healthz", "/metrics")  # orchestrators and Prometheus use names


def host_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse the status page and the API to a Host that is not allowed (DNS rebinding: a
    web page whose name was re-pointed at the probe would read them through the operator's
    browser). /healthz and /metrics keep answering any name: Prometheus and container
    health checks address the probe by service names."""

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path not in HOST_CHECKED_EXEMPT:
            allowed = frozenset(_service(request).config.web.allowed_hosts)
            if not host_allowed(request.headers.get("Host"), allowed):
                return web.Response(status=421, text="misdirected request: this Host is not "
                                    "allowed (web.allowed_hosts in the probe's config)\n")
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return check


def auth_middleware(web_config: WebConfig) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Basic auth from the web-config file; /healthz (says only ok or stale) stays open so a
    container health check and a load balancer need no credentials."""

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/healthz":
            ok = await web_config.authorized(request.headers.get("Authorization"),
                                             request.remote or "")
            if not ok:
                await asyncio.sleep(FAILED_LOGIN_DELAY)
            if ok is None:
                return web.Response(status=429, text="too many login attempts\n",
                                    headers={"Retry-After": "1"})
            if not ok:
                return web.Response(
                    status=401, text="Unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="reach probe", charset="UTF-8"'})
        return await handler(request)

    return guard


def scrub_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every response body through the service's scrubber (cached bodies were scrubbed once,
    when rendered)."""

    @web.middleware
    async def scrub(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if (isinstance(response, web.Response) and not response.get(SCRUBBED_KEY)
                and isinstance(response.body, bytes) and "Content-Encoding" not in response.headers):
            response.body = _service(request).scrubber.bytes(response.body)
        return response

    return scrub


def headers_middleware(headers: dict[str, str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The web-config file's http_server_config.headers, on every response."""

    @web.middleware
    async def add(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        for name, value in headers.items():
            response.headers[name] = value
        return response

    return add


def make_app(service: Service, web_config: WebConfig | None = None,
             pacer: Pacer | None = None, lifecycle: bool = False,
             health_pacer: Pacer | None = None) -> web.Application:
    middlewares = [guard_middleware()]
    if web_config is not None and web_config.headers:
        middlewares.append(headers_middleware(web_config.headers))
    middlewares.append(scrub_middleware())
    middlewares.append(host_middleware())
    if web_config is not None and web_config.users:
        middlewares.append(auth_middleware(web_config))
    middlewares.append((pacer or Pacer()).middleware(
        health_pacer or Pacer(rate=20.0, burst=20.0, max_wait=0.5)))
    app = web.Application(middlewares=middlewares, client_max_size=4096)
    app[SERVICE] = service
    app[LIFECYCLE] = lifecycle
    app[_LAST_RELOAD] = [-RELOAD_MIN_INTERVAL]
    app[_CACHE] = {}
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    statuspage.install(app, service)  # / and /api/target/..., probe/sinks/statuspage/
    app.router.add_post("/-/reload", reload)
    return app


async def serve(
    path: Path, config: Config, host: str, port: int, web_config: WebConfig | None = None,
    lifecycle: bool = False, health_socket: Path | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ignore_file_size_signal()  # a file-size limit on the evidence log is an error, not death
    soft, hard = raise_fd_limit()
    service = Service(path, config)
    install_log_filter(service.scrubber)  # every log line through the scrubber too
    runner = web.AppRunner(make_app(service, web_config, lifecycle=lifecycle), access_log=None)
    await runner.setup()
    cap = connection_cap(soft, config.schedule.concurrency)
    listener = Listener(runner, web_config.ssl_context if web_config else None, cap)
    health_runner = health = None
    # The handlers before the port opens: a SIGHUP sent as soon as the port answers (a
    # deploy's reload right after start) would otherwise meet the default action and end
    # the process.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, service.reload_soon)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await listener.start_tcp(host, port)
        if health_socket is not None:
            health_runner = web.AppRunner(make_health_app(service), access_log=None)
            await health_runner.setup()
            health = Listener(health_runner, None, 16)
            with contextlib.suppress(FileNotFoundError):
                health_socket.unlink()
            await health.start_unix(str(health_socket))
    except OSError as exc:
        where = f"{host}:{port}" if listener.sock is None else str(health_socket)
        log.error("cannot listen on %s: %s", where, exc.strerror or exc)
        await listener.close()
        await runner.cleanup()
        if health_runner is not None:
            await health_runner.cleanup()
        return 2
    log.info("listening on %s://%s:%d%s, vantage %s; file descriptors %d (hard %d), "
             "at most %d HTTP connections%s%s", web_config.scheme if web_config else "http",
             host, port, " with basic auth" if web_config and web_config.users else "",
             config.vantage.name, soft, hard, cap,
             ", lifecycle API on" if lifecycle else "",
             f", health socket {health_socket}" if health_socket else "")
    scheduler = asyncio.create_task(service.loop())
    await stop.wait()
    log.info("shutting down")
    scheduler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await scheduler
    await listener.close()
    await runner.cleanup()
    if health is not None and health_runner is not None:
        await health.close()
        await health_runner.cleanup()
        with contextlib.suppress(OSError):
            assert health_socket is not None
            health_socket.unlink()
    return 0


def make_health_app(service: Service) -> web.Application:
    """/healthz alone, for the health socket (a Unix socket in the evidence volume): the
    image's HEALTHCHECK reaches it whatever TLS, client certificates or load the network
    port has."""
    app = web.Application(middlewares=[guard_middleware()], client_max_size=1024)
    app[SERVICE] = service
    app.router.add_get("/healthz", healthz)
    return app
