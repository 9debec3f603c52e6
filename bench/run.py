"""`python -m bench`: start the loopback target farm, run reach and blackbox_exporter on the
same targets side by side, print the table (and optionally write the raw figures as JSON).

Every pass is bounded: per-check timeouts, a per-pass deadline and --max-minutes overall.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.blackbox import Exporter
from bench.farm import LOOPBACK, SNI, Endpoint, Farm
from probe.inputs.catalog import builtin

WORKLOADS = ("tcp", "dc", "tls")
BLACKBOX_MODULE = {"tcp": "tcp_connect", "tls": "tls"}
COLUMNS = ("workload", "N", "tool", "checks", "ok", "wall_s", "checks_per_s", "cpu_s_per_1k",
           "rss_peak_mb", "rss_start_mb")
RATIO_COLUMNS = ("workload", "N", "ratio", "wall", "checks_per_s", "cpu_per_check", "rss_peak")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def cycle(items: list[Endpoint], n: int) -> list[Endpoint]:
    return [items[i % len(items)] for i in range(n)]


def reach_config(workload: str, n: int, farm: Farm, concurrency: int, timeout: float) -> dict[str, Any]:
    """The probe config of one pass. The TCP and TLS workloads' targets are baseline sites
    (plain TCP and TLS handshakes, nothing else), so the baseline's samples are set to 1:
    one handshake per check, as blackbox_exporter makes one per probe. The farm's count of
    accepted connections proves it on every pass (self_check)."""
    baseline_site = {"name": "base", "address": farm.tcp[0].address, "port": farm.tcp[0].port}
    # Only the farm's targets: the catalogue's other groups (media DCs, the web client's
    # hosts, ...) are Telegram's real addresses, emptied whatever the catalogue grows.
    telegram: dict[str, Any] = {
        "datacenters": [], "domains": [], "address_space": ["127.0.0.0/8"],
        "groups": {name: {"endpoints": []} for name in builtin("telegram").groups
                   if name not in ("datacenters", "domains")}}
    if workload == "tcp":
        baseline = [{"name": f"t{i:05d}", "address": e.address, "port": e.port}
                    for i, e in enumerate(cycle(farm.tcp, n))]
    elif workload == "tls":
        baseline = [{"name": f"t{i:05d}", "address": e.address, "port": e.port, "sni": SNI}
                    for i, e in enumerate(cycle(farm.tls, n))]
    else:  # dc: n DC endpoints (tcp + mtproto each), like a real catalogue
        ports = farm.mtproto_ports
        addrs = farm.mtproto_addrs
        n_dcs = -(-n // len(ports))
        telegram["datacenters"] = [{"name": f"dc{i}", "addresses": [addrs[i % len(addrs)]]}
                                   for i in range(n_dcs)]
        telegram["ports"] = ports
        baseline = [baseline_site]
    return {
        "vantage": {"name": "bench", "country": "ZZ", "network": "loopback benchmark"},
        "messengers": {"telegram": telegram},
        "resolvers": {"system": False},
        "baseline": {"targets": baseline, "samples": 1},
        "schedule": {"concurrency": concurrency, "timeouts": {
            "dns": timeout, "connect": timeout, "tls": timeout, "mtproto": timeout, "http": timeout}},
        "tls": {"ca_file": str(farm.ca_file)},
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def sampler(kind: str, targets: list[Endpoint], farm: Farm, workdir: Path,
            cpus: set[int] | None, out: dict[str, Any]) -> Iterator[None]:
    """Blocking-socket ground truth running beside the tool under test."""
    path = workdir / f"sampler-{kind}.txt"
    path.write_text("\n".join(str(e) for e in targets[:1000]) + "\n")
    cmd = [sys.executable, "-m", "bench.sampler", "--kind", kind, "--ca", str(farm.ca_file),
           "--sni", SNI, "--max-seconds", "300", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    try:
        yield
    finally:
        proc.stdin.close()
        line = proc.stdout.readline()
        proc.wait(timeout=30)
        proc.stdout.close()
        with contextlib.suppress(ValueError):
            out.update(json.loads(line))


def run_reach(config_path: Path, loop: str, metrics: bool, cpus: set[int] | None,
              deadline: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.reach_worker", str(config_path), "--loop", loop, "--lag"]
    if metrics:
        cmd.append("--metrics")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"reach worker did not finish within {deadline:.0f} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"reach worker failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [[fmt(r.get(c, "-")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"
              for row in cells]
    return "\n".join(lines)


def summarise(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats of one (workload, N, tool)."""
    med = statistics.median
    checks = passes[0]["checks"]
    return {
        "checks": checks,
        "ok": min(p["ok"] for p in passes),
        "wall_s": med(p["wall"] for p in passes),
        "checks_per_s": med(p["checks"] / p["wall"] for p in passes),
        "cpu_s_per_1k": med(1000 * p["cpu"] / p["checks"] for p in passes),
        "rss_peak_mb": med(p["rss_peak_kb"] / 1024 for p in passes),
        # reach only: the peak before the round (interpreter, imports, the parsed config)
        "rss_start_mb": (med(p["rss_start_kb"] / 1024 for p in passes)
                         if all("rss_start_kb" in p for p in passes) else float("nan")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-check timeout, seconds")
    default_loops = "asyncio,uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser.add_argument("--loops", default=default_loops, help="reach event loops to measure")
    parser.add_argument("--no-blackbox", action="store_true")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the tool to CPU 0 and the farm to CPU 1")
    parser.add_argument("--max-minutes", type=float, default=45.0, help="stop starting passes after this")
    parser.add_argument("--json", type=Path, help="write every pass's raw figures here")
    parser.add_argument("--port-offset", type=int, default=0,
                        help="shift the farm's ports (20000-22003) to run beside another bench")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    workloads = [w for w in args.workloads.split(",") if w]
    loops = [x for x in args.loops.split(",") if x]
    if not set(workloads) <= set(WORKLOADS) or not set(loops) <= {"asyncio", "uvloop"}:
        parser.error("unknown workload or loop")
    raise_nofile()
    tool_cpus: set[int] | None = None
    farm_cpus: set[int] | None = None
    available = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(available) >= 2:
        tool_cpus, farm_cpus = {available[0]}, {available[1]}
        os.sched_setaffinity(0, farm_cpus)  # this driver runs beside the farm, not the tool
    stop_at = time.monotonic() + 60 * args.max_minutes
    raw: list[dict[str, Any]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="reach-bench-") as tmp:
        workdir = Path(tmp)
        off = args.port_offset
        farm = Farm(workdir, cpus=farm_cpus,
                    tcp_ports=[p + off for p in range(20000, 20010)],
                    tls_ports=[p + off for p in range(21000, 21010)],
                    mtproto_ports=[p + off for p in range(22000, 22004)], status_port=20999 + off)
        farm.start()
        exporter = Exporter(workdir, farm.ca_file, SNI, args.timeout, cpus=tool_cpus)
        try:
            for workload in workloads:
                for n in sizes:
                    config = reach_config(workload, n, farm, args.concurrency, args.timeout)
                    config_path = workdir / f"reach-{workload}-{n}.yaml"
                    config_path.write_text(yaml.safe_dump(config))
                    tools = [f"reach/{loop}" for loop in loops]
                    if workload in BLACKBOX_MODULE and not args.no_blackbox:
                        tools.append("blackbox")
                    endpoints = cycle(farm.tcp if workload == "tcp" else farm.tls, n)
                    for rep in range(args.repeats):
                        order = tools if rep % 2 == 0 else tools[::-1]
                        for tool in order:
                            if time.monotonic() > stop_at:
                                print(f"# time budget spent: skipped {workload} N={n} {tool} #{rep}",
                                      file=sys.stderr)
                                continue
                            record: dict[str, Any] = {"workload": workload, "N": n, "tool": tool,
                                                      "repeat": rep}
                            truth: dict[str, Any] = {}
                            kind = "tls" if workload == "tls" else "tcp"
                            ctx = (sampler(kind, endpoints if workload != "dc" else farm.tcp, farm,
                                           workdir, farm_cpus, truth)
                                   if workload != "dc" else contextlib.nullcontext())
                            accepted0 = farm.accepted()
                            with ctx:
                                if tool == "blackbox":
                                    record.update(exporter.run_pass(
                                        [str(e) for e in endpoints], BLACKBOX_MODULE[workload],
                                        args.concurrency))
                                else:
                                    result = run_reach(config_path, tool.split("/")[1],
                                                       workload == "dc", tool_cpus,
                                                       deadline=max(120.0, 10 * args.timeout + n / 20))
                                    timings = result.pop("timings")
                                    result["checks"] = result["observations"]
                                    want = "tls" if workload == "tls" else "tcp"
                                    record["reported"] = [t["duration"] for t in timings
                                                          if t["check"] == want]
                                    record.update(result)
                            if truth.get("samples") and record.get("reported"):
                                start, end = record["window"]
                                record["truth"] = [d for d, t in zip(truth["samples"], truth["stamps"],
                                                                     strict=True) if start <= t <= end]
                            record["farm_accepted"] = farm.accepted() - accepted0 - 1
                            record["sampler_attempts"] = truth.get("attempts", 0)
                            problem = self_check(record)
                            if problem:
                                failures.append(problem)
                                print(f"# SELF-CHECK FAILED: {problem}", file=sys.stderr, flush=True)
                            raw.append(record)
                            print(f"# {workload} N={n} {tool} #{rep}: wall {record['wall']:.2f}s "
                                  f"cpu {record['cpu']:.2f}s ok {record['ok']}/{record['checks']}",
                                  file=sys.stderr, flush=True)
        finally:
            exporter.stop()
            farm.stop()
    print(report(raw, sizes, workloads, loops, tool_cpus is not None))
    if args.json:
        slim = [{k: v for k, v in r.items() if k not in ("reported", "truth")} for r in raw]
        args.json.write_text(json.dumps(slim, indent=1))
    incomplete = [r for r in raw if r["ok"] != r["checks"]]
    for problem in failures:
        print(f"SELF-CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if incomplete or failures else 0


def handshakes_expected(record: dict[str, Any]) -> int:
    """Connections the farm's nginx must have accepted during a pass: one per check in the
    TCP and TLS workloads (plus the timing sampler's); in the DC workload the checks go to
    the MTProto responder and nginx sees the baseline site's one sample."""
    own = 1 if record["workload"] == "dc" else record["checks"]
    return int(own + record.get("sampler_attempts", 0))


def off_farm(record: dict[str, Any]) -> list[str]:
    """The destinations of a reach pass's checks that are not the farm's (all of which are
    on loopback): a check there is neither a connection nginx can count nor allowed."""
    out = []
    for address in record.get("destinations", []):
        try:
            if ipaddress.ip_address(address) in LOOPBACK:
                continue
        except ValueError:
            pass
        out.append(address)
    return out


def self_check(record: dict[str, Any]) -> str | None:
    """None when every check went to the farm and the farm accepted exactly the connections
    the pass's checks account for."""
    where = (f"{record['workload']} N={record['N']} {record['tool']} #{record['repeat']}: "
             f"{record['checks']} checks")
    outside = off_farm(record)
    if outside:
        return f"{where} include checks of destinations outside the farm: {', '.join(outside[:5])}"
    want, got = handshakes_expected(record), record["farm_accepted"]
    if want == got:
        return None
    return (f"{where} (+{record.get('sampler_attempts', 0)} sampler) should be "
            f"{want} accepted connections at the farm, nginx accepted {got}")


def report(raw: list[dict[str, Any]], sizes: list[int], workloads: list[str], loops: list[str],
           pinned: bool) -> str:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in raw:
        groups.setdefault((r["workload"], r["N"], r["tool"]), []).append(r)
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for (workload, n, tool), passes in groups.items():
        rows.append({"workload": workload, "N": n, "tool": tool, **summarise(passes)})
    med = statistics.median
    for (workload, n, tool), passes in groups.items():
        if tool == "blackbox":
            continue
        bb = {r["repeat"]: r for r in groups.get((workload, n, "blackbox"), [])}
        pairs = [(p, bb[p["repeat"]]) for p in passes if p["repeat"] in bb]
        if not pairs:
            continue
        ratios.append({
            "workload": workload, "N": n, "ratio": f"{tool} / blackbox",
            "wall": med(a["wall"] / b["wall"] for a, b in pairs),
            "checks_per_s": med((a["checks"] / a["wall"]) / (b["checks"] / b["wall"]) for a, b in pairs),
            "cpu_per_check": med((a["cpu"] / a["checks"]) / max(b["cpu"] / b["checks"], 1e-9)
                                 for a, b in pairs),
            "rss_peak": med(a["rss_peak_kb"] / b["rss_peak_kb"] for a, b in pairs),
        })
    out = [f"## Throughput and cost (medians of {max(len(p) for p in groups.values())} runs; "
           f"concurrency equal for both tools; tool pinned to one CPU: {pinned})", "",
           table(rows, COLUMNS), "", "## Ratios reach / blackbox_exporter (median of per-run ratios; "
           "< 1 is better for wall, cpu, rss; > 1 for checks/s)", "", table(ratios, RATIO_COLUMNS)]

    growth = []
    for workload in workloads:
        for loop in loops:
            tool = f"reach/{loop}"
            per_n = {n: groups[(workload, n, tool)] for n in sizes if (workload, n, tool) in groups}
            if len(per_n) < 1:
                continue
            first = min(per_n)
            base = med(p["cpu"] / p["checks"] for p in per_n[first])
            for n, passes in per_n.items():
                c = med(p["cpu"] / p["checks"] for p in passes)
                growth.append({"workload": workload, "tool": tool, "N": n,
                               "cpu_s": med(p["cpu"] for p in passes),
                               "cpu_per_check_us": 1e6 * c, "vs_smallest_N": c / base})
    out += ["", "## reach cost growth with N (constant cpu per check = linear)", "",
            table(growth, ("workload", "tool", "N", "cpu_s", "cpu_per_check_us", "vs_smallest_N"))]

    fidelity: list[dict[str, Any]] = []
    for (workload, n, tool), passes in groups.items():
        reported = [x for p in passes for x in p.get("reported", []) if p.get("truth")]
        truth = [x for p in passes for x in p.get("truth", []) if p.get("reported")]
        if not reported or not truth:
            continue
        lag99 = med(p["lag_p99"] for p in passes if "lag_p99" in p) if any(
            "lag_p99" in p for p in passes) else float("nan")
        fidelity.append({
            "workload": workload, "N": n, "tool": tool, "samples": len(truth),
            "truth_p50_ms": 1e3 * percentile(truth, 0.5), "reported_p50_ms": 1e3 * percentile(reported, 0.5),
            "truth_p99_ms": 1e3 * percentile(truth, 0.99),
            "reported_p99_ms": 1e3 * percentile(reported, 0.99),
            "inflation_p50_ms": 1e3 * (percentile(reported, 0.5) - percentile(truth, 0.5)),
            "inflation_p99_ms": 1e3 * (percentile(reported, 0.99) - percentile(truth, 0.99)),
            "loop_lag_p99_ms": 1e3 * lag99,
        })
    out += ["", "## Timing fidelity: reach's reported durations vs a blocking-socket sampler on the "
            "same targets during the same pass", "",
            table(fidelity, ("workload", "N", "tool", "samples", "truth_p50_ms", "reported_p50_ms",
                             "inflation_p50_ms", "truth_p99_ms", "reported_p99_ms",
                             "inflation_p99_ms", "loop_lag_p99_ms"))]

    render = []
    for (workload, n, tool), passes in groups.items():
        if workload == "dc" and any("render_seconds" in p for p in passes):
            render.append({"N": n, "tool": tool, "checks": passes[0]["checks"],
                           "round_wall_s": med(p["wall"] for p in passes),
                           "classify_ms": 1e3 * med(p["classify_seconds"] for p in passes),
                           "record_render_ms": 1e3 * med(p["render_seconds"] for p in passes),
                           "metrics_kb": passes[0]["render_bytes"] / 1024,
                           "rss_peak_mb": med(p["rss_peak_kb"] / 1024 for p in passes)})
    out += ["", "## DC rounds (tcp + mtproto per endpoint, classify, Metrics.record_round + render)", "",
            table(render, ("N", "tool", "checks", "round_wall_s", "classify_ms", "record_render_ms",
                           "metrics_kb", "rss_peak_mb"))]

    targets: list[dict[str, Any]] = []

    def goal(target: str, tool: str, measured: str, met: bool) -> None:
        targets.append({"target": target, "tool": tool, "measured": measured,
                        "met": "yes" if met else "NO"})

    def ratio(workload: str, n: int, tool: str) -> dict[str, Any] | None:
        return next((x for x in ratios if x["workload"] == workload and x["N"] == n
                     and x["ratio"].startswith(tool + " ")), None)

    big = max(sizes)
    for loop in loops:
        tool = f"reach/{loop}"
        # Issue 15's goals first, then the earlier ones (docs/benchmark.md).
        got = ratio("tcp", big, tool)
        if got:
            goal(f"tcp N={big}: peak RSS <= 1.5x blackbox", tool, f"{got['rss_peak']:.2f}x",
                 got["rss_peak"] <= 1.5)
        dc = groups.get(("dc", big, tool))
        if dc:
            cpu = med(p["cpu"] for p in dc)
            wall = med(p["wall"] for p in dc)
            rss = med(p["rss_peak_kb"] / 1024 for p in dc)
            goal(f"dc N={big} ({dc[0]['checks']} checks): <= 10 s of one core, < 100 MB", tool,
                 f"cpu {cpu:.1f} s (wall {wall:.1f} s), {rss:.0f} MB", cpu <= 10 and rss < 100 and pinned)
        for n in sizes:
            got = ratio("tls", n, tool)
            if got:
                goal(f"tls N={n}: cpu/check <= 0.6x blackbox", tool, f"{got['cpu_per_check']:.2f}x",
                     got["cpu_per_check"] <= 0.6)
        for f in fidelity:
            if f["tool"] == tool and f["N"] == big:
                goal(f"{f['workload']} N={big}: p99 inflation < 5 ms", tool,
                     f"{f['inflation_p99_ms']:.2f} ms", f["inflation_p99_ms"] < 5)
        for n in sizes:
            got = ratio("tcp", n, tool)
            if got:
                goal(f"tcp N={n}: cpu/check <= blackbox", tool, f"{got['cpu_per_check']:.2f}x",
                     got["cpu_per_check"] <= 1)
        tcp = groups.get(("tcp", big, tool))
        if tcp:
            wall = med(p["wall"] for p in tcp)
            rss = med(p["rss_peak_kb"] / 1024 for p in tcp)
            goal(f"tcp N={big}: < 60 s, < 100 MB, one core", tool, f"{wall:.1f} s, {rss:.0f} MB",
                 wall < 60 and rss < 100 and pinned)
        if dc:
            ms = 1e3 * med(p["render_seconds"] for p in dc)
            goal(f"/metrics at {big} targets < 250 ms", tool, f"{ms:.0f} ms", ms < 250)
    out += ["", "## Targets", "", table(targets, ("target", "tool", "measured", "met"))]
    out = ["## Side by side with blackbox_exporter, and the goals", "",
           headline(groups, fidelity, sizes, loops), "", *out]
    checks = []
    for (workload, n, tool), passes in groups.items():
        checks.append({"workload": workload, "N": n, "tool": tool, "passes": len(passes),
                       "checks": sum(p["checks"] for p in passes),
                       "expected_accepts": sum(handshakes_expected(p) for p in passes),
                       "farm_accepts": sum(p["farm_accepted"] for p in passes),
                       "self_check": "passed" if all(self_check(p) is None for p in passes)
                       else "FAILED"})
    out += ["", "## Self-check: connections the farm's nginx accepted vs the checks counted "
            "(+ the timing sampler's; DC workload: the baseline's one)", "",
            table(checks, ("workload", "N", "tool", "passes", "checks", "expected_accepts",
                           "farm_accepts", "self_check"))]
    return "\n".join(out)


def headline(groups: dict[tuple[str, int, str], list[dict[str, Any]]],
             fidelity: list[dict[str, Any]], sizes: list[int], loops: list[str]) -> str:
    """The figures the goals are about, per reach event loop, beside blackbox_exporter's."""
    med = statistics.median
    big = max(sizes)
    rows: list[dict[str, Any]] = []

    def cpu_us(passes: list[dict[str, Any]]) -> float:
        return 1e6 * med(p["cpu"] / p["checks"] for p in passes)

    def rss_mb(passes: list[dict[str, Any]]) -> float:
        return med(p["rss_peak_kb"] / 1024 for p in passes)

    def row(measure: str, reach: float, bb: float | None, goal: str, met: bool | None,
            tool: str, unit: str = "") -> None:
        rows.append({"measure": measure, "tool": tool, "reach": f"{reach:.1f}{unit}",
                     "blackbox": "-" if bb is None else f"{bb:.1f}{unit}",
                     "ratio": "-" if not bb else f"{reach / bb:.2f}x", "goal": goal,
                     "met": "-" if met is None else ("yes" if met else "NO")})

    for loop in loops:
        tool = f"reach/{loop}"
        for workload, limit in (("tcp", 0.3), ("tls", 0.6)):
            a, b = groups.get((workload, big, tool)), groups.get((workload, big, "blackbox"))
            if a and b:
                r, x = cpu_us(a), cpu_us(b)
                row(f"{workload.upper()} CPU per check, N={big}", r, x, f"<= {limit}x blackbox",
                    r <= limit * x, tool, " us")
        for workload in ("tcp", "tls"):
            for n in sizes:
                a, b = groups.get((workload, n, tool)), groups.get((workload, n, "blackbox"))
                if a and b:
                    r, x = rss_mb(a), rss_mb(b)
                    at_goal = n >= 10000
                    row(f"peak RSS, {workload.upper()} N={n}", r, x,
                        "<= 1.5x blackbox" if at_goal else "", (r <= 1.5 * x) if at_goal else None,
                        tool, " MB")
        dc = groups.get(("dc", big, tool))
        if dc:
            r, at_goal = rss_mb(dc), big >= 10000
            row(f"production-shaped round, {big} targets ({dc[0]['checks']} checks, classify, "
                "metrics)", r, None, "<= 100 MB" if at_goal else "", (r <= 100) if at_goal else None,
                tool, " MB")
        for f in fidelity:
            if f["tool"] == tool and f["N"] == big:
                row(f"p99 latency inflation, {f['workload'].upper()} N={big}", f["inflation_p99_ms"],
                    None, "< 5 ms", f["inflation_p99_ms"] < 5, tool, " ms")
    return table(rows, ("measure", "tool", "reach", "blackbox", "ratio", "goal", "met"))


if __name__ == "__main__":
    sys.exit(main())
