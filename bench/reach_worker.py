"""One reach pass in its own process, so that its CPU time and peak RSS are its own.

Reads a probe config, runs one Round through the real engine (for the DC workload also the
classifier, Metrics.record_round and render), and prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from typing import Any


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reach_worker")
    parser.add_argument("config")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--metrics", action="store_true", help="classify, record and render")
    parser.add_argument("--lag", action="store_true", help="sample event-loop lag")
    args = parser.parse_args(argv)

    from probe.inputs.config import load_config
    from probe.measure.round import Round

    config = load_config(args.config)
    if args.loop == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    rss_start_kb = _hwm_kb()
    lags: list[float] = []
    window = [0.0, 0.0]

    async def sample_lag(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - t - 0.01)

    done: list[Any] = []

    async def one() -> None:
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(sample_lag(stop)) if args.lag else None
        cpu0, t0 = _cpu(), time.perf_counter()
        window[0] = time.time()
        result = await Round(config).run()
        window[1] = time.time()
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        stop.set()
        if sampler is not None:
            await sampler
        # Handed over here, not as the task's result: asyncio.run formats the main task's
        # repr (result included) when it restores the SIGINT handler, which for 10,000
        # observations was 6 MB of text and a peak of its own.
        done.extend((result, wall, cpu))

    runner(one())
    result, wall, cpu = done
    out: dict[str, Any] = {
        "wall": wall, "cpu": cpu, "window": window, "rss_start_kb": rss_start_kb,
        "observations": len(result.observations),
        "ok": sum(1 for o in result.observations if o.failure is None),
        "failures": sorted({f"{o.check}:{o.failure}" for o in result.observations if o.failure}),
    }
    if lags:
        lags.sort()
        out["lag_p50"] = lags[len(lags) // 2]
        out["lag_p99"] = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    timings = [
        {"check": o.check, "address": o.address, "port": o.port, "duration": o.duration_seconds,
         "connect": o.details.get("connect_seconds")}
        for o in result.observations if o.failure is None and o.check in ("tcp", "tls")
    ]
    out["timings"] = timings
    if args.metrics:
        from probe.judge.classify import classify_round
        from probe.sinks.metrics import Metrics

        cpu0, t0 = _cpu(), time.perf_counter()
        result.verdicts = classify_round(result)
        out["classify_seconds"] = time.perf_counter() - t0
        metrics = Metrics()
        renders = []
        for _ in range(3):
            t0 = time.perf_counter()
            metrics.record_round(result)
            size = len(metrics.render())  # not kept: a scrape holds one body at a time
            renders.append(time.perf_counter() - t0)
        out["render_seconds"] = statistics.median(renders)
        out["render_bytes"] = size
        out["post_round_cpu"] = _cpu() - cpu0
    out["rss_peak_kb"] = _hwm_kb()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
