"""Attacks on an exporter's HTTP port, and what they did: issue 12's figures.

Each attack runs against a real `probe run` and, beside it, against blackbox_exporter on
the same loopback machine, while a sampler asks `/healthz` (blackbox: `/-/healthy`) every
0.2 s and reads check success from the exporter's metrics (reach: `reach_check_success`
of a loopback TCP target; blackbox: `probe_success` of a tcp_connect probe to the same
target). The tests in this directory run them small; `python -m tests.hardening.attack`
runs them at the issue's sizes and prints the table for docs/reliability.md.

Everything is on loopback; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from tests.hardening.util import free_port, loopback_config, metric, wait_listening

BLACKBOX = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
PASSWORD = "right-password"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
            timeout: float = 5) -> tuple[int, str, float]:
    """(status, body, seconds); status 0 when the request failed."""
    started = time.monotonic()
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), time.monotonic() - started
    except (OSError, ValueError):
        return 0, "", time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Exporter:
    """A running exporter: where its health and metrics are, and how to read check success."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    health_path: str
    log: Path
    auth: dict[str, str] = field(default_factory=dict)
    success: Callable[[], float | None] = lambda: None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_bytes(self) -> int:
        return self.log.stat().st_size


@contextlib.contextmanager
def tcp_target() -> Iterator[int]:
    """A loopback TCP listener that accepts and closes: what both exporters check."""
    server = socket.create_server(("127.0.0.1", 0), backlog=1024)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def web_config(directory: Path, cost: int = 10, user: str = "prometheus") -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()
    path = directory / "web.yml"
    path.write_text(f"basic_auth_users:\n  {user}: '{hashed}'\n")
    return path


@contextlib.contextmanager
def reach(directory: Path, target_port: int, *args: str, auth: bool = False, cost: int = 10,
          nofile: tuple[int, int] | None = None, interval: float = 1,
          config_extra: dict[str, Any] | None = None) -> Iterator[Exporter]:
    """`probe run` checking `target_port` every `interval` seconds."""
    port = free_port()
    config = loopback_config(directory / "probe.yaml", dc_port=target_port, timeout=1,
                             interval=interval, **(config_extra or {}))
    argv = [*(["--web-config-file", str(web_config(directory, cost))] if auth else []), *args]
    log = directory / "reach.log"

    def limits() -> None:
        if nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "probe", "run",
             "--config", str(config), "--listen", f"127.0.0.1:{port}", *argv],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=limits,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    headers = {"Authorization": basic("prometheus", PASSWORD)} if auth else {}
    exporter = Exporter("reach", process, port, "/healthz", log, headers)

    def success() -> float | None:
        status, text, _ = request(exporter.base + "/metrics", headers=headers, timeout=5)
        if status != 200:
            return None
        for line in text.splitlines():
            if line.startswith("reach_check_success{") and 'check="tcp"' in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    exporter.success = success
    try:
        wait_listening(process, port, "exporter")
        yield exporter
    finally:
        _stop(process)


@contextlib.contextmanager
def blackbox(directory: Path, target_port: int, auth: bool = False, cost: int = 10,
             nofile: tuple[int, int] | None = None) -> Iterator[Exporter]:
    """blackbox_exporter with a tcp_connect module; check success = probe_success."""
    if BLACKBOX is None:
        raise RuntimeError("blackbox_exporter is not installed")
    port = free_port()
    config = directory / "blackbox.yml"
    config.write_text("modules:\n  tcp:\n    prober: tcp\n    timeout: 2s\n")
    argv = [BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    if auth:
        argv.append(f"--web.config.file={web_config(directory, cost)}")
    log = directory / "blackbox.log"

    def limits() -> None:
        if nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limits)
    headers = {"Authorization": basic("prometheus", PASSWORD)} if auth else {}
    exporter = Exporter("blackbox", process, port, "/-/healthy", log, headers)

    def success() -> float | None:
        status, text, _ = request(
            f"{exporter.base}/probe?module=tcp&target=127.0.0.1:{target_port}", headers=headers)
        return metric(text, "probe_success") if status == 200 else None

    exporter.success = success
    try:
        wait_listening(process, port, "exporter")
        yield exporter
    finally:
        _stop(process)


@dataclass
class Sample:
    """What a sampler saw while an attack ran."""

    health: list[float] = field(default_factory=list)  # seconds of each OK answer
    health_failed: int = 0
    checks_ok: int = 0
    checks: int = 0
    cpu_seconds: float = 0.0
    wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def health_p50_ms(self) -> float:
        return 1000 * statistics.median(self.health) if self.health else float("nan")

    @property
    def health_max_ms(self) -> float:
        return 1000 * max(self.health) if self.health else float("nan")

    @property
    def cpu_cores(self) -> float:
        return self.cpu_seconds / self.wall if self.wall else 0.0

    def row(self) -> str:
        return (f"healthz p50 {self.health_p50_ms:.1f} ms, max {self.health_max_ms:.1f} ms, "
                f"failed {self.health_failed}/{self.health_failed + len(self.health)}; "
                f"checks ok {self.checks_ok}/{self.checks}; CPU {self.cpu_cores:.2f} cores")


def sampled(exporter: Exporter, attack: Callable[[threading.Event], None], seconds: float,
            health: Callable[[], tuple[int, str, float]] | None = None) -> Sample:
    """Run `attack` for `seconds` while sampling health and check success."""
    sample = Sample()
    stop = threading.Event()
    ask = health or (lambda: request(exporter.base + exporter.health_path, timeout=3))

    def sampler() -> None:
        next_check = 0.0
        while not stop.is_set():
            status, _, took = ask()
            if status == 200:
                sample.health.append(took)
            else:
                sample.health_failed += 1
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                sample.checks += 1
                sample.checks_ok += exporter.success() == 1
            time.sleep(0.2)

    attacker = threading.Thread(target=attack, args=(stop,), daemon=True)
    watcher = threading.Thread(target=sampler, daemon=True)
    cpu0, t0 = cpu_seconds(exporter.process.pid), time.monotonic()
    attacker.start()
    watcher.start()
    time.sleep(seconds)
    stop.set()
    sample.cpu_seconds = cpu_seconds(exporter.process.pid) - cpu0
    sample.wall = time.monotonic() - t0
    attacker.join(10)
    watcher.join(10)
    return sample


# -- the attacks -----------------------------------------------------------------------


def idle_connections(port: int, count: int) -> Callable[[threading.Event], None]:
    """Open `count` connections and keep them open, sending nothing (reopening any the
    server closes, as a determined attacker would)."""

    def attack(stop: threading.Event) -> None:
        held: list[socket.socket] = []
        try:
            while not stop.is_set():
                while len(held) < count and not stop.is_set():
                    sock = socket.socket()
                    sock.settimeout(1)
                    try:
                        sock.connect(("127.0.0.1", port))
                    except OSError:
                        sock.close()
                        break
                    held.append(sock)
                alive = []
                for sock in held:  # a closed connection reads b"" at once
                    sock.setblocking(False)
                    try:
                        if sock.recv(1) == b"":
                            sock.close()
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        sock.close()
                        continue
                    alive.append(sock)
                held = alive
                stop.wait(0.5)
        finally:
            for sock in held:
                sock.close()

    return attack


def slowloris(port: int, count: int, lifetimes: list[float]) -> Callable[[threading.Event], None]:
    """`count` connections each sending a request head one byte a second; records how long
    each stayed open (until the server closed it or the attack ended)."""

    def attack(stop: threading.Event) -> None:
        socks: dict[socket.socket, float] = {}
        for _ in range(count):
            sock = socket.socket()
            with contextlib.suppress(OSError):
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                sock.setblocking(False)
                socks[sock] = time.monotonic()
        while socks and not stop.is_set():
            for sock, opened in list(socks.items()):
                try:
                    sock.send(b"X")
                    if sock.recv(1) == b"":
                        raise ConnectionError
                except BlockingIOError:
                    continue
                except OSError:
                    lifetimes.append(time.monotonic() - opened)
                    sock.close()
                    del socks[sock]
            stop.wait(1.0)
        for sock, opened in socks.items():
            lifetimes.append(time.monotonic() - opened)
            sock.close()

    return attack


def request_from(url: str, source: str, headers: dict[str, str] | None = None,
                 timeout: float = 5) -> int:
    """GET `url` from the loopback address `source` (another client than the sampler's);
    the status, 0 when the request failed."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout,
                                            source_address=(source, 0))
    try:
        connection.request("GET", parts.path or "/", headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def _flood_client(url: str, method: str, auth: str | None, start: int, stop: Any, out: Any,
                  source: str | None = None) -> None:
    """One flooding client (a process of its own, so the sampler's thread in the parent is
    never starved of the GIL by the flood): distinct wrong passwords when `auth` is a user;
    from the loopback address `source` when given."""
    codes: dict[int, int] = {}
    n = start
    while not stop.is_set():
        n += 1
        if source is not None:
            status = request_from(url, source)
        else:
            headers = {"Authorization": basic(auth, f"wrong-{n}")} if auth else {}
            status, _, _ = request(url, method, headers, timeout=5)
        codes[status] = codes.get(status, 0) + 1
    out.put(codes)


def http_flood(url: str, auth_user: str | None, clients: int, codes: dict[int, int],
               method: str = "GET", source: str | None = None) -> Callable[[threading.Event], None]:
    """`clients` processes sending requests as fast as answered (wrong passwords for
    `auth_user`, no credentials without); counts status codes into `codes`."""
    import multiprocessing

    def attack(stop: threading.Event) -> None:
        context = multiprocessing.get_context("fork")
        done, out = context.Event(), context.Queue()
        workers = [context.Process(target=_flood_client,
                                   args=(url, method, auth_user, k << 32, done, out, source),
                                   daemon=True)
                   for k in range(clients)]
        for worker in workers:
            worker.start()
        stop.wait()
        done.set()
        for _ in workers:
            for status, count in out.get(timeout=15).items():
                codes[status] = codes.get(status, 0) + count
        for worker in workers:
            worker.join(5)

    return attack


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
]


def malformed_flood(port: int, count: int, sent: list[int]) -> Callable[[threading.Event], None]:
    """An attack: `count` malformed requests from 4 threads (or until stopped); the number
    answered with an HTTP status line goes into `sent`."""

    def attack(stop: threading.Event) -> None:
        lock = threading.Lock()
        left = [count]

        def client() -> None:
            while not stop.is_set():
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                    n = left[0]
                with socket.socket() as sock:
                    sock.settimeout(2)
                    with contextlib.suppress(OSError):
                        sock.connect(("127.0.0.1", port))
                        sock.sendall(MALFORMED[n % len(MALFORMED)])
                        if sock.recv(16).startswith(b"HTTP/"):
                            with lock:
                                sent[0] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return attack


# -- the figures ------------------------------------------------------------------------


def figures(seconds: float, malformed_count: int, only: str = "") -> list[tuple[str, str, str]]:
    """Every attack against both exporters: (attack, reach, blackbox)."""
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, tcp_target() as target:
        root = Path(tmp)

        def both(name: str, run: Callable[[Exporter], str], **kwargs: Any) -> None:
            if only not in name:
                return
            results = []
            for make in (reach, blackbox):
                directory = root / f"{name}-{make.__name__}".replace(" ", "_")
                directory.mkdir()
                try:
                    with make(directory, target, **kwargs) as exporter:
                        time.sleep(2.5)  # the first round / a warm exporter
                        results.append(run(exporter))
                except RuntimeError as exc:
                    results.append(f"not run: {exc}")
            rows.append((name, results[0], results[1]))
            print(f"{name}\n  reach:    {results[0]}\n  blackbox: {results[1]}", flush=True)

        def idle(exporter: Exporter) -> str:
            return sampled(exporter, idle_connections(exporter.port, 1010), seconds).row()

        both("1,010 idle connections, fd limit 1024", idle, nofile=(1024, 1024))

        def loris(exporter: Exporter) -> str:
            lifetimes: list[float] = []
            sample = sampled(exporter, slowloris(exporter.port, 500, lifetimes), max(seconds, 15))
            closed = sum(1 for t in lifetimes if t < max(seconds, 15) - 1)
            return (f"{sample.row()}; slowloris connections closed by the server: "
                    f"{closed}/{len(lifetimes)}, longest open {max(lifetimes, default=0):.0f} s")

        both("500 slowloris connections", loris)

        def login(exporter: Exporter) -> str:
            codes: dict[int, int] = {}
            flood = http_flood(exporter.base + "/metrics", "prometheus", 16, codes)
            scrape = lambda: request(exporter.base + "/metrics", headers=exporter.auth)  # noqa: E731
            sample = sampled(exporter, flood, seconds, health=scrape)
            return (f"{sample.row()} (health = authenticated /metrics); flood answers {codes}")

        both("wrong-password flood (bcrypt cost 10, 16 clients)", login, auth=True)

        def unauth(exporter: Exporter) -> str:
            codes: dict[int, int] = {}
            flood = http_flood(exporter.base + "/metrics", None, 32, codes)
            scrape = lambda: request(exporter.base + "/metrics", headers=exporter.auth)  # noqa: E731
            sample = sampled(exporter, flood, seconds, health=scrape)
            return f"{sample.row()} (health = authenticated /metrics); flood answers {codes}"

        both("unauthenticated flood (32 clients)", unauth, auth=True)

        def health_flood(exporter: Exporter) -> str:
            codes: dict[int, int] = {}
            flood = http_flood(exporter.base + exporter.health_path, None, 64, codes, source="127.0.0.2")
            sample = sampled(exporter, flood, seconds)
            return f"{sample.row()} (health from 127.0.0.1); flood answers {codes}"

        both("health flood (64 clients from 127.0.0.2)", health_flood)

        def status_flood(exporter: Exporter) -> str:
            codes: dict[int, int] = {}
            path = "/api/status" if exporter.name == "reach" else "/metrics"
            flood = http_flood(exporter.base + path, None, 64, codes, source="127.0.0.2")
            scrape = lambda: request(exporter.base + "/metrics")  # noqa: E731
            sample = sampled(exporter, flood, seconds, health=scrape)
            return f"{sample.row()} (health = /metrics from 127.0.0.1); flood on {path} answers {codes}"

        both("status flood, no web config (64 clients from 127.0.0.2)", status_flood)

        def bad(exporter: Exporter) -> str:
            before = exporter.log_bytes()
            answered = [0]
            started = time.monotonic()
            sample = sampled(exporter, malformed_flood(exporter.port, malformed_count, answered),
                             max(seconds, 60))
            took = time.monotonic() - started
            time.sleep(0.5)
            grown = exporter.log_bytes() - before
            return (f"{sample.row()}; {grown * 10000 / max(1, answered[0]):,.0f} log bytes per "
                    f"10,000 malformed requests ({answered[0]:,} answered 400 in {took:.0f} s)")

        both(f"{malformed_count:,} malformed requests", bad)
    return rows


def reload_figures(seconds: float) -> str:
    """30 reload requests in `seconds` with interval 300: extra rounds (must be 0)."""
    with tempfile.TemporaryDirectory() as tmp, tcp_target() as target:
        directory = Path(tmp)
        with reach(directory, target, "--web-enable-lifecycle", auth=True, interval=300) as probe:
            time.sleep(2)
            codes: dict[int, int] = {}
            for _ in range(30):
                status, _, _ = request(probe.base + "/-/reload", "POST", probe.auth)
                codes[status] = codes.get(status, 0) + 1
                probe.process.send_signal(signal.SIGHUP)
                time.sleep(seconds / 30)
            _, text, _ = request(probe.base + "/api/status", headers=probe.auth)
            import json
            rounds = json.loads(text)["rounds"]
            return (f"30 POST /-/reload + 30 SIGHUP in {seconds:.0f} s, interval 300 s: "
                    f"answers {codes}, rounds {rounds} (extra rounds: {rounds - 1})")


def big_reload_figures(seconds: float, datacenters: int = 10_000) -> tuple[str, str]:
    """Reloads of a 10,000-target config every 2 s while sampling health: reach (SIGHUP,
    parsed in a thread) and blackbox (POST /-/reload of its own config)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp, tcp_target() as target:
        directory = Path(tmp)
        extra = {"messengers": {"telegram": {
            "datacenters": [{"name": f"dc{i}", "addresses": [f"127.0.{i // 250}.{i % 250 + 1}"]}
                            for i in range(datacenters)],
            "domains": [], "ports": [target], "address_space": ["127.0.0.0/8"]}}}
        with reach(directory, target, interval=300, config_extra=extra) as probe:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not _rounds(probe):
                time.sleep(1)

            def reload_reach(stop: threading.Event) -> None:
                while not stop.wait(2):
                    probe.process.send_signal(signal.SIGHUP)

            sample = sampled(probe, reload_reach, seconds)
            results.append(f"{sample.row()}; rounds {_rounds(probe)} (extra: {_rounds(probe) - 1})")
        bdir = directory / "bb"
        bdir.mkdir()
        with blackbox(bdir, target) as bb:
            time.sleep(1)

            def reload_bb(stop: threading.Event) -> None:
                while not stop.wait(2):
                    request(bb.base + "/-/reload", "POST")

            results.append(sampled(bb, reload_bb, seconds).row())
    return results[0], results[1]


def _rounds(probe: Exporter) -> int:
    import json
    status, text, _ = request(probe.base + "/api/status", headers=probe.auth)
    return int(json.loads(text)["rounds"]) if status == 200 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--malformed", type=int, default=10000)
    parser.add_argument("--only", default="", help="run the attacks whose name has this text")
    args = parser.parse_args()
    if not args.only or "reload" in args.only:
        print(reload_figures(30), flush=True)
        ours, theirs = big_reload_figures(args.seconds)
        print(f"reload every 2 s, 10,000 targets\n  reach:    {ours}\n  blackbox: {theirs}", flush=True)
    rows = figures(args.seconds, args.malformed, args.only)
    print("\n| attack | reach | blackbox_exporter |\n| --- | --- | --- |")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours} | {theirs} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
