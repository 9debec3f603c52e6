"""The fleet at scale (issue 15): many vantages, agents remote-writing to one centre.

    .venv/bin/python -m tests.fleet.scale                 # 100 vantages, prints figures (~4 min)
    .venv/bin/python -m tests.fleet.scale --vantages 10 --agents 2 --scrape 2s --seconds 40

Each vantage is a FakeProbe with three messengers' worth of targets (metrics v2, 116
targets), served from one loopback HTTP server. Prometheus agents (agent mode) scrape them
and remote_write to one central Prometheus that runs the shipped rules, exactly as
generated (10 s groups, 2 m window). A real fleet has one agent per vantage; here each agent
scrapes `vantages / agents` probes, so that a 2-core machine can run it: the centre sees
the same series, samples and remote-write traffic either way. Figures are read from the
centre's own /metrics: active series, samples appended per second, rule-group evaluation
time, resident memory and CPU. tests/fleet/test_scale.py runs a small version in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from . import promstack
from .fakeprobe import FakeProbe, three_messengers

BLOCKED = {"dc2-v4:443": "ip_blocking", "dc4-v4:443": "ip_blocking", "web.telegram.org/v4": "dns_injection",
           "e1.whatsapp.net:5222/v4": "tcp_reset", "chat.signal.org/v4": "sni_filtering"}


def fleet(vantages: int) -> list[FakeProbe]:
    """`vantages` probes: one control in ten, a third of the subjects under a block."""
    catalogue = three_messengers()
    probes = []
    for i in range(vantages):
        control = i % 10 == 0
        probe = FakeProbe(vantage=f"v{i:04d}", country="NL" if control else f"C{i % 7}",
                          role="control" if control else "subject", catalogue=catalogue,
                          # rounds a few seconds apart: a block pages only once two rounds
                          # say so, and the short runs must see several
                          round_interval=5.0)
        if not control and i % 3 == 1:
            probe.verdicts = dict(BLOCKED)
        probes.append(probe)
    return probes


class ProbesServer:
    """One loopback server for every fake probe: GET /v/NAME/metrics."""

    def __init__(self, probes: list[FakeProbe]) -> None:
        by_name = {p.vantage: p for p in probes}
        self.scrapes = 0

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                match = re.fullmatch(r"/v/([\w-]+)/metrics", self.path)
                probe = by_name.get(match.group(1)) if match else None
                if probe is None:
                    self.send_error(404)
                    return
                body = probe.render().encode()
                owner.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def agent_job(server: ProbesServer, probes: list[FakeProbe], interval: str) -> dict[str, Any]:
    """The agent's scrape job: one target per vantage, with the vantage label (as the
    shipped agent config's external label gives it) and only reach_*, up, scrape_* kept."""
    job = promstack.scrape_job("reach", [], interval=interval)
    job["scrape_timeout"] = interval
    job["static_configs"] = [
        {"targets": [server.address],
         "labels": {"__metrics_path__": f"/v/{p.vantage}/metrics", "vantage": p.vantage,
                    "instance": p.vantage}}
        for p in probes
    ]
    return job


def _metrics(prom: promstack.Prometheus) -> dict[str, float]:
    """The centre's own metrics, summed per name and selected labels."""
    text = promstack.http_get(f"{prom.url}/metrics", timeout=10)[1].decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{")[0]
        if name == "prometheus_rule_group_last_duration_seconds":
            group = re.search(r'rule_group="[^"]*;([^"]+)"', name_labels)
            name = f"{name}:{group.group(1) if group else '?'}"
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


@dataclass
class Figures:
    vantages: int
    agents: int
    scrape_interval: str
    seconds: float
    active_series: float
    series_per_vantage: float
    samples_per_second: float
    rule_eval_seconds: dict[str, float]  # each group's last evaluation
    rule_eval_mean_seconds: float  # mean group evaluation over the measured interval
    slowest_rules: dict[str, float]
    rss_mb: float
    cpu_cores: float
    statuses: int
    blocked_vantages: int

    def to_json(self) -> dict[str, Any]:
        return self.__dict__


@contextmanager
def running_fleet(workdir: Path, vantages: int, agents: int, scrape: str) -> Iterator[
        tuple[promstack.Prometheus, list[FakeProbe]]]:
    probes = fleet(vantages)
    server = ProbesServer(probes)
    started: list[Any] = [server]
    try:
        central = promstack.start_prometheus(
            workdir / "central", rule_files=sorted(promstack.RULES_DIR.glob("*.yml")),
            remote_write_receiver=True, evaluation_interval="10s")
        started.append(central)
        for a in range(agents):
            mine = probes[a::agents]
            started.append(promstack.start_prometheus(
                workdir / f"agent{a}", scrape_configs=[agent_job(server, mine, scrape)],
                remote_write_url=f"{central.url}/api/v1/write", agent=True, timeout=60))
        yield central, probes
    finally:
        for item in reversed(started):
            item.stop()


def measure(vantages: int = 100, agents: int = 10, scrape: str = "15s", seconds: float = 180.0,
            workdir: Path | None = None) -> Figures:
    """Run the fleet for `seconds`, then read the centre's figures over the last part."""
    with TemporaryDirectory(prefix="reach-scale-") as tmp, \
            running_fleet(workdir or Path(tmp), vantages, agents, scrape) as (central, _probes):
        central.wait_for_series("count(count by (vantage) (reach_vantage_info))", timeout=120)
        promstack.wait_until(
            lambda: float(central.query("count(count by (vantage) (reach_vantage_info))")[0]["value"][1])
            >= vantages, 180, f"{vantages} vantages at the centre")
        half = max(seconds / 2, 10.0)
        time.sleep(half)
        first, t0 = _metrics(central), time.monotonic()
        time.sleep(seconds - half)
        last, t1 = _metrics(central), time.monotonic()
        elapsed = t1 - t0
        series = last.get("prometheus_tsdb_head_series", 0.0)
        appended = last["prometheus_tsdb_head_samples_appended_total"] - first[
            "prometheus_tsdb_head_samples_appended_total"]
        cpu = last["process_cpu_seconds_total"] - first["process_cpu_seconds_total"]
        runs = last["prometheus_rule_group_duration_seconds_count"] - first[
            "prometheus_rule_group_duration_seconds_count"]
        mean = (last["prometheus_rule_group_duration_seconds_sum"] - first[
            "prometheus_rule_group_duration_seconds_sum"]) / max(runs, 1)
        rules = {k.split(":", 1)[1]: round(v, 4) for k, v in last.items()
                 if k.startswith("prometheus_rule_group_last_duration_seconds:")}
        timings = {(r.get("name") or r.get("alert") or "?"): float(r.get("evaluationTime", 0))
                   for g in central.api("rules")["groups"] for r in g["rules"]}
        slowest = dict(sorted(timings.items(), key=lambda kv: -kv[1])[:4])
        statuses = len(central.query("vantage_messenger:reach_status:code"))
        blocked = len(central.query("count by (vantage) (vantage_messenger:reach_status:code == 5)"))
        rss = last["process_resident_memory_bytes"] / 2**20
        return Figures(vantages, agents, scrape, seconds, series, round(series / vantages, 1),
                       round(appended / elapsed, 1), rules, round(mean, 4),
                       {k: round(v, 4) for k, v in slowest.items()},
                       round(rss, 1), round(cpu / elapsed, 3),
                       statuses, blocked)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fleet.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vantages", type=int, default=100)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--scrape", default="15s", help="agents' scrape interval (shipped: 15s)")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to run before measuring")
    args = parser.parse_args(argv)
    if args.vantages < 1 or not 1 <= args.agents <= args.vantages or not re.fullmatch(r"\d+s", args.scrape):
        print("scale: need --vantages >= 1, 1 <= --agents <= --vantages, --scrape like 15s", file=sys.stderr)
        return 2
    if not promstack.have_prometheus():
        print("scale: the prometheus binary is not installed", file=sys.stderr)
        return 2
    figures = measure(args.vantages, args.agents, args.scrape, args.seconds)
    print(json.dumps(figures.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
