"""Load: many HTTP clients on /metrics and /api/status while a large round runs.

    python -m tests.hardening.load                       # 2,000 targets, 200 clients, 30 s
    python -m tests.hardening.load --targets 200 --clients 50 --seconds 5   # the quick one

A real `probe run` process probes N loopback data centres (a real MTProto responder in
its own process), with evidence on. First it runs unloaded, then 200 keep-alive clients
hammer /metrics and /api/status for 30 s. The figures: request latencies (p50/p99), and
the rounds' durations and check latencies without and with the load, read back from the
evidence log (so they are what the probe itself measured).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from probe.sinks.evidence import read_rounds
from tests.hardening.util import PROBE, ROOT, free_port, loopback_config


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def hammer(base: str, clients: int, seconds: float, gzip: bool = True) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {"/metrics": [], "/api/status": []}
    errors: list[str] = []
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    # like Prometheus: ask for gzip; keep it compressed (we time the server, not our inflate)
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers,
                                     auto_decompress=False) as session:
        async def client(index: int) -> None:
            path = "/metrics" if index % 2 == 0 else "/api/status"
            for _ in range(1_000_000):  # bounded; ends at `stop`
                if time.monotonic() >= stop:
                    return
                started = time.monotonic()
                try:
                    async with session.get(base + path) as response:
                        await response.read()
                        if response.status != 200:
                            errors.append(f"{path}: HTTP {response.status}")
                            continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{path}: {exc!r}")
                    continue
                latencies[path].append(time.monotonic() - started)

        await asyncio.gather(*(client(i) for i in range(clients)))
    summary: dict[str, Any] = {"clients": clients, "seconds": seconds, "gzip": gzip,
                               "errors": len(errors),
                               "first_errors": errors[:3]}
    for path, values in latencies.items():
        summary[path] = {"requests": len(values), "per_second": round(len(values) / seconds, 1),
                         "p50_ms": round(percentile(values, 0.5) * 1000, 1),
                         "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                         "max_ms": round(max(values, default=0) * 1000, 1)}
    return summary


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    import os
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    durations = [r["duration_seconds"] for r in rounds]
    checks = [o["duration_seconds"] for r in rounds for o in r["observations"]
              if o["check"] == "mtproto"]
    ok = sum(1 for r in rounds for o in r["observations"] if o["failure"] is None)
    total = sum(len(r["observations"]) for r in rounds)
    return {"rounds": len(rounds),
            "round_seconds_median": round(statistics.median(durations), 3) if durations else None,
            "round_seconds_max": round(max(durations), 3) if durations else None,
            "mtproto_p50_ms": round(percentile(checks, 0.5) * 1000, 2),
            "mtproto_p99_ms": round(percentile(checks, 0.99) * 1000, 2),
            "observations_ok": f"{ok}/{total}"}


async def run_load(targets: int, clients: int, seconds: float, interval: float,
                   baseline_seconds: float | None = None, gzip: bool = True) -> dict[str, Any]:
    baseline_seconds = baseline_seconds if baseline_seconds is not None else seconds
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        mtproto_port, port = free_port(), free_port()
        server = subprocess.Popen([sys.executable, "-m", "tests.support.mtproto", "--listen",
                                   f"127.0.0.1:{mtproto_port}"], stdout=subprocess.PIPE, cwd=ROOT)
        config = loopback_config(directory / "probe.yaml", dc_port=mtproto_port, datacenters=targets,
                                 timeout=5, interval=interval, evidence=directory / "ev")
        probe = subprocess.Popen([*PROBE, "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            assert server.stdout is not None and b"ready" in server.stdout.readline()
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                for _ in range(600):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(base + "/api/status") as response:
                            if (await response.json())["rounds"] >= 1:
                                break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("no round finished in 60 s")
            import os
            pids = {"probe": probe.pid, "mtproto_server": server.pid, "load_clients": os.getpid()}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            quiet_from = time.time()
            await asyncio.sleep(baseline_seconds)
            loaded_from = time.time()
            cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            load = await hammer(base, clients, seconds, gzip)
            loaded_to = time.time()
            load["wall_seconds"] = loaded_to - loaded_from
            cpu2 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            load["cpu_percent_quiet"] = {n: round(100 * (cpu1[n] - cpu0[n]) / (loaded_from - quiet_from))
                                         for n in pids}
            load["cpu_percent_loaded"] = {n: round(100 * (cpu2[n] - cpu1[n]) / (loaded_to - loaded_from))
                                          for n in pids}
            await asyncio.sleep(0.5)
        finally:
            for process in (probe, server):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        rounds = list(read_rounds(directory / "ev" / "evidence.jsonl"))

    def started(r: dict[str, Any]) -> float:
        from datetime import datetime
        return datetime.fromisoformat(r["started"]).timestamp()

    def within(r: dict[str, Any], begin: float, end: float) -> bool:
        return begin <= started(r) and started(r) + r["duration_seconds"] <= end

    quiet = [r for r in rounds if within(r, quiet_from, loaded_from)]
    loaded = [r for r in rounds if within(r, loaded_from, loaded_to)]
    return {"targets": targets, "checks_per_round": len(rounds[-1]["observations"]) if rounds else 0,
            "interval": interval, "load": load,
            "rounds_without_load": round_figures(quiet), "rounds_under_load": round_figures(loaded)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hardening.load",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--interval", type=float, default=6)
    parser.add_argument("--identity", action="store_true", help="ask for uncompressed bodies")
    args = parser.parse_args(argv)
    figures = asyncio.run(run_load(args.targets, args.clients, args.seconds, args.interval,
                                   gzip=not args.identity))
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
