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


class Phases:
    """tracemalloc snapshots between the phases of one round: what each phase allocated and
    still holds (by source line), its own peak, and the process's RSS after it."""

    def __init__(self) -> None:
        import tracemalloc

        self.tm = tracemalloc
        tracemalloc.start(1)
        self.rows: list[dict[str, Any]] = []
        self.last = tracemalloc.take_snapshot()

    def mark(self, phase: str) -> None:
        tm = self.tm
        current, peak = tm.get_traced_memory()
        snap = tm.take_snapshot().filter_traces([tm.Filter(False, tm.__file__)])
        top = snap.compare_to(self.last, "lineno")[:8]
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f)
        self.rows.append({
            "phase": phase, "traced_mb": current / 2**20, "phase_peak_mb": peak / 2**20,
            "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
            "hwm_mb": int(status["VmHWM"].split()[0]) / 1024,
            "top": [{"where": f"{s.traceback[0].filename.split('/site-packages/')[-1].split('/wt/perf/')[-1]}"
                              f":{s.traceback[0].lineno}",
                     "kb": s.size_diff / 1024, "count": s.count_diff} for s in top if s.size_diff > 0],
        })
        self.last = snap
        tm.reset_peak()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reach_worker")
    parser.add_argument("config")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--metrics", action="store_true", help="classify, record and render")
    parser.add_argument("--lag", action="store_true", help="sample event-loop lag")
    parser.add_argument("--phases", action="store_true",
                        help="tracemalloc per phase (imports, config+plan, round, judge, sinks)")
    parser.add_argument("--profile", help="write a cProfile of the round (pstats) to this file")
    args = parser.parse_args(argv)
    phases = Phases() if args.phases else None

    from probe.inputs.config import load_config
    from probe.measure.round import Round

    if phases is not None:  # what the service loads for its rounds: the judge and sinks too
        import importlib

        for module in ("probe.judge.classify", "probe.sinks.evidence", "probe.sinks.metrics",
                       "probe.sinks.report"):
            importlib.import_module(module)

        phases.mark("imports")
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
        round_ = Round(config)
        if phases is not None:
            phases.mark("config+plan")
        result = await round_.run()
        del round_
        if phases is not None:
            phases.mark("round")
        window[1] = time.time()
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        stop.set()
        if sampler is not None:
            await sampler
        # Handed over here, not as the task's result: asyncio.run formats the main task's
        # repr (result included) when it restores the SIGINT handler, which for 10,000
        # observations was 6 MB of text and a peak of its own.
        done.extend((result, wall, cpu))

    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not wall: the machine may be busy
        profiler.runcall(runner, one())
        profiler.dump_stats(args.profile)
    else:
        runner(one())
    result, wall, cpu = done
    out: dict[str, Any] = {
        "wall": wall, "cpu": cpu, "window": window, "rss_start_kb": rss_start_kb,
        "observations": len(result.observations),
        "ok": sum(1 for o in result.observations if o.failure is None),
        "failures": sorted({f"{o.check}:{o.failure}" for o in result.observations if o.failure}),
        # where the checks went (the bench's self-check: the farm's addresses only)
        "destinations": sorted({str(o.address) for o in result.observations}),
    }
    if lags:
        lags.sort()
        out["lag_p50"] = lags[len(lags) // 2]
        out["lag_p99"] = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    if args.metrics:
        from probe.judge.classify import classify_round
        from probe.sinks.metrics import Metrics

        cpu0, t0 = _cpu(), time.perf_counter()
        judged = result.judged(classify_round(result))
        out["classify_seconds"] = time.perf_counter() - t0
        if phases is not None:
            phases.mark("judge")
        metrics = Metrics()
        renders = []
        for _ in range(3):
            t0 = time.perf_counter()
            metrics.record_round(judged)
            size = len(metrics.render())  # not kept: a scrape holds one body at a time
            renders.append(time.perf_counter() - t0)
        out["render_seconds"] = statistics.median(renders)
        out["render_bytes"] = size
        if phases is not None:
            # the evidence line's JSON, as the service writes it after every round
            from probe.sinks.report import round_json

            out["evidence_bytes"] = len(json.dumps(round_json(judged), separators=(",", ":"),
                                                   default=str))
            phases.mark("sinks")
        out["post_round_cpu"] = _cpu() - cpu0
    # The peak of the round (and of judging and rendering it), read before the per-check
    # timings below are listed for the fidelity table: those are the bench's, not the probe's.
    out["rss_peak_kb"] = _hwm_kb()
    timings = [
        {"check": o.check, "address": o.address, "port": o.port, "duration": o.duration_seconds,
         "connect": o.details.get("connect_seconds")}
        for o in result.observations if o.failure is None and o.check in ("tcp", "tls")
    ]
    out["timings"] = timings
    if phases is not None:
        out["phases"] = phases.rows
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
