"""Real Prometheus / Alertmanager processes on loopback, for fleet and end-to-end tests.

Everything here binds to 127.0.0.1 on a free port, keeps its state in a caller-given
directory, waits with a deadline, and is stopped by ``stop()`` (also on ``with`` exit), so
a failing test never leaves a server behind. The lab end-to-end tests reuse these helpers
with real probes as scrape targets; the fleet tests use :class:`MetricsServer` with a
synthetic exposition instead (see ``fake_probe_metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "configs" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = REPO / "configs" / "alertmanager" / "alertmanager.yml"

PROMETHEUS_BIN = "prometheus"
ALERTMANAGER_BINS = ("prometheus-alertmanager", "alertmanager")


class StackError(RuntimeError):
    """A server did not start, or a condition was not met before its deadline."""


def free_port() -> int:
    """A loopback port that is free now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alertmanager_binary() -> str | None:
    """Debian names the binary prometheus-alertmanager; upstream names it alertmanager."""
    for name in ALERTMANAGER_BINS:
        path = shutil.which(name)
        if path:
            return path
    return None


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise with ``what`` on timeout.

    Exceptions from the predicate count as "not yet" (a server still starting refuses
    connections); the last one is reported if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, StackError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


# Loopback only: never let a proxy from the environment see (or break) test traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET from loopback without any proxy; returns (status, body)."""
    with _OPENER.open(url, timeout=timeout) as resp:
        return int(resp.status), bytes(resp.read())


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document (Prometheus / Alertmanager APIs) from loopback."""
    with _OPENER.open(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


class ManagedProcess:
    """A subprocess with its output in a log file, stopped with TERM then KILL.

    The log is kept so that a failing test can show why a server refused to start.
    """

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env_without_proxy(),
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        if not self._log.closed:
            self._log.close()


class _Server:
    """Common part of Prometheus and Alertmanager: a process behind a loopback URL."""

    name = "server"

    def __init__(self, process: ManagedProcess, port: int, workdir: Path) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for /-/ready; fail fast (with the log) if the process died."""

        def ready() -> bool:
            if not self.process.running():
                raise StackError(
                    f"{self.name} exited with {self.process.proc.returncode}:\n{self.process.log_tail()}"
                )
            try:
                return http_get(f"{self.url}/-/ready", timeout=2)[0] == 200
            except urllib.error.HTTPError:
                return False

        try:
            wait_until(ready, timeout, f"{self.name} on {self.url} to be ready")
        except StackError as exc:
            if "exited" in str(exc):
                raise
            raise StackError(f"{exc}\n{self.process.log_tail()}") from None

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(_Server):
    """A running Prometheus (server or agent) with helpers for its HTTP API."""

    name = "prometheus"

    def api(self, path: str, **params: str) -> Any:
        """Call /api/v1/<path>; return ``data`` or raise with Prometheus's error text."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            body = http_get_json(url)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read().decode() or "{}")
        if body.get("status") != "success":
            raise StackError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result list (a vector or a scalar as one element)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, seconds: float, step: float = 5.0) -> list[dict[str, Any]]:
        """Range query over the last ``seconds`` (what a Grafana time series panel runs)."""
        end = time.time()
        data = self.api(
            "query_range",
            query=expr,
            start=f"{end - seconds:.3f}",
            end=f"{end:.3f}",
            step=f"{step}",
        )
        return list(data["result"])

    def wait_for_series(self, expr: str, timeout: float = 30.0, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns at least ``count`` series."""
        return list(
            wait_until(
                lambda: (r := self.query(expr)) and len(r) >= count and r,
                timeout,
                f"{count} series of {expr!r}",
            )
        )

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) as Prometheus sees them."""
        return list(self.api("alerts")["alerts"])

    def wait_for_alert(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        state: str = "firing",
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until alert ``name`` with (a superset of) ``labels`` is in ``state``."""

        def find() -> dict[str, Any] | None:
            return _find_alert(self.alerts(), name, labels, lambda a: a["state"] == state)

        return dict(wait_until(find, timeout, f"alert {name} {dict(labels or {})} {state}"))

    def firing(self, name: str | None = None) -> list[dict[str, Any]]:
        """Firing alerts, optionally only those named ``name``."""
        return [
            a
            for a in self.alerts()
            if a["state"] == "firing" and (name is None or a["labels"].get("alertname") == name)
        ]

    def wait_rules_evaluated(self, timeout: float = 30.0) -> None:
        """Wait until every rule group has been evaluated at least once.

        Before that, recording-rule series simply do not exist yet, which a test would
        misread as "the rule returns nothing".
        """

        def evaluated() -> bool:
            groups = self.api("rules")["groups"]
            return bool(groups) and all(
                not g.get("lastEvaluation", "0001").startswith("0001") for g in groups
            )

        wait_until(evaluated, timeout, "every rule group to be evaluated")


class Alertmanager(_Server):
    """A running Alertmanager with helpers for its v2 API."""

    name = "alertmanager"

    def alerts(self, active: bool = True, inhibited: bool = True) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds; each has status.state active|suppressed."""
        query = urllib.parse.urlencode(
            {
                "active": str(active).lower(),
                "inhibited": str(inhibited).lower(),
                "silenced": "true",
                "unprocessed": "true",
            }
        )
        return list(http_get_json(f"{self.url}/api/v2/alerts?{query}"))

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts as Prometheus would (v2 API): each {"labels": ..., "annotations": ...}."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with _OPENER.open(request, timeout=5) as resp:
            if resp.status != 200:
                raise StackError(f"Alertmanager refused alerts: {resp.status}")

    def wait_for_alert(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        state: str = "active",
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until Alertmanager has alert ``name`` in ``state`` (active or suppressed)."""

        def find() -> dict[str, Any] | None:
            return _find_alert(self.alerts(), name, labels, lambda a: a["status"]["state"] == state)

        return dict(wait_until(find, timeout, f"Alertmanager alert {name} {state}"))


def _labels_match(have: Mapping[str, str], want: Mapping[str, str] | None) -> bool:
    return all(have.get(k) == v for k, v in (want or {}).items())


def _find_alert(
    alerts: Iterable[dict[str, Any]], name: str, labels: Mapping[str, str] | None,
    in_state: Callable[[dict[str, Any]], bool],
) -> dict[str, Any] | None:
    """The first alert named `name` with (a superset of) `labels` for which `in_state` holds."""
    for alert in alerts:
        if alert["labels"].get("alertname") == name and in_state(alert) \
                and _labels_match(alert["labels"], labels):
            return alert
    return None


# --------------------------------------------------------------------------------------
# Starting servers


def scrape_job(
    name: str,
    targets: Iterable[str],
    interval: str = "1s",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A scrape_config for ``targets`` (host:port), honouring the probe's own labels."""
    static: dict[str, Any] = {"targets": list(targets)}
    if labels:
        static["labels"] = dict(labels)
    return {
        "job_name": name,
        "honor_labels": True,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [static],
    }


def start_prometheus(
    workdir: Path,
    scrape_configs: Sequence[Mapping[str, Any]] = (),
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    evaluation_interval: str = "1s",
    external_labels: Mapping[str, str] | None = None,
    remote_write_url: str | None = None,
    agent: bool = False,
    remote_write_receiver: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> Prometheus:
    """Start a Prometheus on 127.0.0.1 and wait until it is ready.

    ``agent=True`` runs agent mode (no rules, no queries; remote_write only).
    ``remote_write_receiver=True`` accepts remote_write at /api/v1/write (a central server).
    The caller must ``stop()`` it (or use it as a context manager).
    """
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": evaluation_interval,
        },
        "scrape_configs": [dict(c) for c in scrape_configs],
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if rule_files and not agent:
        config["rule_files"] = [str(p) for p in rule_files]
    if alertmanager_url and not agent:
        host = urllib.parse.urlparse(alertmanager_url).netloc
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    if remote_write_url:
        config["remote_write"] = [
            {
                "url": remote_write_url,
                "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"},
            }
        ]
    return launch_prometheus(
        workdir,
        config,
        agent=agent,
        remote_write_receiver=remote_write_receiver,
        extra_args=extra_args,
        timeout=timeout,
    )


def launch_prometheus(
    workdir: Path,
    config: Mapping[str, Any],
    agent: bool = False,
    remote_write_receiver: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> Prometheus:
    """Start Prometheus with a complete ``config`` (e.g. a shipped file, adapted) on loopback."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    argv = [
        PROMETHEUS_BIN,
        f"--config.file={config_path}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    if agent:
        argv += ["--enable-feature=agent", f"--storage.agent.path={workdir / 'wal'}"]
    else:
        argv += [f"--storage.tsdb.path={workdir / 'data'}", "--rules.alert.resend-delay=1s"]
    if remote_write_receiver:
        argv.append("--web.enable-remote-write-receiver")
    argv += list(extra_args)
    server = Prometheus(ManagedProcess(argv, workdir / "prometheus.log"), port, workdir)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def load_rules_once_scraping(prom: Prometheus, rule_files: list[Path], targets: int) -> None:
    """Load the rules (SIGHUP) only once every probe has been scraped.

    Why: Prometheus's discovery manager hands the first targets to the scrape loop ~5 s
    after start, while rules are evaluated from the first second. With ``for`` scaled
    1/60, ProbeAbsent's ``absent(up{job="reach"})`` (for 5m -> 5 s) would fire at every
    test start; a long-running Prometheus (for: 5m) never sees that. Loading the rules
    after the first scrapes models the long-running server.
    """
    prom.wait_for_series('up{job="reach"} == 1', timeout=30, count=targets)
    config_path = prom.workdir / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    config["rule_files"] = [str(p) for p in rule_files]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    prom.process.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: prom.api("rules")["groups"], 30, "the rules to be loaded")
    prom.wait_rules_evaluated()


def start_alerting(
    workdir: Path, targets: Sequence[str], started: list[Any], scrape_interval: str = "1s"
) -> tuple[WebhookReceiver, Alertmanager, Prometheus]:
    """The paging path around probes at `targets`: a webhook collector, Alertmanager with
    the shipped config, and Prometheus scraping the probes with the shipped rules (``for``
    shortened) loaded once they are scraped. Each is appended to `started` as it starts,
    so the caller stops them all, also when a later one fails to start."""
    webhook = WebhookReceiver().start()
    started.append(webhook)
    am = start_alertmanager(workdir / "alertmanager", webhook_url=webhook.url)
    started.append(am)
    prom = start_prometheus(
        workdir / "prometheus",
        scrape_configs=[scrape_job("reach", targets, interval=scrape_interval)],
        alertmanager_url=am.url,
    )
    started.append(prom)
    load_rules_once_scraping(prom, shorten_rules(workdir / "rules"), len(targets))
    return webhook, am, prom

def start_alertmanager(
    workdir: Path,
    config: Path | str = ALERTMANAGER_CONFIG,
    webhook_url: str | None = None,
    group_wait: str | None = "1s",
    timeout: float = 30.0,
) -> Alertmanager:
    """Start Alertmanager on 127.0.0.1 with clustering off, and wait until it is ready.

    ``config`` is the repo's alertmanager.yml by default. ``webhook_url`` replaces every
    receiver's webhook URL (e.g. a :class:`WebhookReceiver`), and ``group_wait`` shortens
    the route timers so a test sees notifications within seconds.
    """
    binary = alertmanager_binary()
    if binary is None:
        raise StackError("no alertmanager binary (install prometheus-alertmanager)")
    workdir.mkdir(parents=True, exist_ok=True)
    text = Path(config).read_text() if isinstance(config, Path) else config
    doc = yaml.safe_load(text)
    if webhook_url:
        for receiver in doc.get("receivers", []):
            for hook in receiver.get("webhook_configs", []):
                suffix = urllib.parse.urlparse(hook["url"]).path
                hook["url"] = webhook_url.rstrip("/") + suffix
    if group_wait:
        _shorten_route(doc["route"], group_wait)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # An empty address turns clustering (gossip on 0.0.0.0:9094) off.
        "--cluster.listen-address=",
    ]
    server = Alertmanager(ManagedProcess(argv, workdir / "alertmanager.log"), port, workdir)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _shorten_route(route: dict[str, Any], wait: str) -> None:
    route["group_wait"] = wait
    route["group_interval"] = wait
    for child in route.get("routes", []):
        _shorten_route(child, wait)


_DURATION = re.compile(r"^(\d+)([smh])$")
#: The persistence window of the shipped rules (configs/prometheus/build_rules.py Params).
SHIPPED_WINDOW = "2m"


def shorten_rules(
    workdir: Path,
    rule_files: Iterable[Path] | None = None,
    scale: float = 1 / 60,
    interval: str = "1s",
    window: str = "8s",
) -> list[Path]:
    """Copy rule files with every ``for``/``keep_firing_for`` scaled (10m -> 10s at 1/60)
    and the persistent-block window (shipped: 2m, four 30 s rounds) set to ``window``.

    The shipped timings (minutes) are right for a fleet but would make an end-to-end test
    wait a quarter of an hour; the expressions stay the same otherwise. ``window`` must hold
    at least four rounds of the probes under test and min_samples (4) scrapes. Groups are
    evaluated every ``interval``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out = []
    for src in rule_files if rule_files is not None else sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            group["interval"] = interval
            for rule in group["rules"]:
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        rule[key] = _scale_duration(rule[key], scale)
                rule["expr"] = rule["expr"].replace(f"[{SHIPPED_WINDOW}]", f"[{window}]")
                for key, text in rule.get("annotations", {}).items():
                    rule["annotations"][key] = text.replace(f"last {SHIPPED_WINDOW})", f"last {window})")
        dst = workdir / src.name
        dst.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(dst)
    return out


def _scale_duration(value: str, scale: float) -> str:
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"unsupported duration {value!r}")
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    return f"{max(1, round(seconds * scale))}s"


# --------------------------------------------------------------------------------------
# Scrape targets and notification sinks


class MetricsServer:
    """A tiny aiohttp server on loopback serving ``render()`` at /metrics.

    It stands in for a probe before the engine exists (or when a test wants exact
    control of the exposition). It runs in its own thread with its own event loop so that
    synchronous tests, and Prometheus scraping it, never wait on the test's loop.
    """

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render
        self.port = 0
        self.scrapes = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(
            body=self.render().encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def start(self) -> MetricsServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


@dataclass
class WebhookReceiver:
    """Collects Alertmanager webhook notifications (JSON bodies) on loopback.

    The path of each POST is kept with its body, so a test can tell the "page" receiver
    from the "ticket" one (configs/alertmanager/alertmanager.yml).
    """

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebhookReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.received.append((self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def notifications(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for p, b in self.received if path is None or p == path]

    def wait_for_alert(
        self, name: str, path: str | None = None, status: str = "firing", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait for a notification carrying alert ``name`` in ``status`` (firing/resolved)."""

        def find() -> dict[str, Any] | None:
            for body in self.notifications(path):
                for alert in body.get("alerts", []):
                    if alert["labels"].get("alertname") == name and alert["status"] == status:
                        return dict(alert)
            return None

        return dict(wait_until(find, timeout, f"webhook notification {name} {status}"))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextlib.contextmanager
def stopping(*servers: Any) -> Iterator[None]:
    """Stop every server on exit, in reverse order, even if one stop fails."""
    try:
        yield
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()


def have_prometheus() -> bool:
    """Whether the prometheus binary is installed (Debian package prometheus)."""
    return shutil.which(PROMETHEUS_BIN) is not None


def env_without_proxy() -> dict[str, str]:
    """The environment minus proxy variables: loopback traffic must never go via a proxy."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class Probe(_Server):
    """A real `probe run` process (the engine), serving /metrics on loopback."""

    name = "probe"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Ready when /metrics already carries a finished round (not just a listening port)."""

        def ready() -> bool:
            if not self.process.running():
                raise StackError(
                    f"probe exited with {self.process.proc.returncode}:\n{self.process.log_tail()}"
                )
            status, body = http_get(f"{self.url}/metrics", timeout=2)
            return status == 200 and b"reach_round_last_timestamp_seconds{" in body

        wait_until(ready, timeout, f"probe on {self.url} to finish a round")

    def metrics(self) -> str:
        return http_get(f"{self.url}/metrics")[1].decode()


def start_probe(
    workdir: Path,
    config: Mapping[str, Any],
    prefix: Sequence[str] = (),
    host: str = "127.0.0.1",
    timeout: float = 60.0,
) -> Probe:
    """Run `probe run` with ``config`` and wait for its first round.

    ``prefix`` wraps the command (e.g. ``["ip", "netns", "exec", "subject"]`` in the lab,
    where ``host`` is then the namespace's address that Prometheus scrapes).
    """
    probe_bin = shutil.which("probe") or str(REPO / ".venv" / "bin" / "probe")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "probe.yaml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    port = free_port()
    argv = [*prefix, probe_bin, "run", "--config", str(config_path), "--listen", f"{host}:{port}"]
    server = Probe(ManagedProcess(argv, workdir / "probe.log"), port, workdir)
    server.url = f"http://{host}:{port}"
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def loopback_probe_config(
    vantage: str, country: str = "ZZ", role: str = "subject", interval: float = 2.0
) -> dict[str, Any]:
    """A probe config whose every address is loopback on a closed port.

    Nothing leaves the machine, every check fails fast, and the baseline fails too, so the
    probe's honest answer is vantage_offline for every target.
    """
    closed = free_port()
    return {
        "vantage": {"name": vantage, "country": country, "role": role, "network": "loopback"},
        "messengers": {
            "telegram": {
                "datacenters": [{"name": "dc1", "addresses": ["127.0.0.1"]}],
                "domains": [{"name": "web.reach.test", "port": closed}],
                "ports": [closed],
                "address_space": ["127.0.0.0/8"],
            }
        },
        "resolvers": {
            "system": False,
            "servers": [{"name": "lo", "address": "127.0.0.1", "port": closed}],
            "control": [{"name": "lo-control", "address": "127.0.0.1", "port": closed}],
        },
        "baseline": {"targets": [{"name": "lo", "address": "127.0.0.1", "port": closed}]},
        "schedule": {
            "interval": interval,
            "jitter": 0,
            "timeouts": {"dns": 1, "connect": 1, "tls": 1, "mtproto": 1, "http": 1},
        },
        "evidence": {"directory": None},
    }
