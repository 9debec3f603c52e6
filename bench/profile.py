"""`python -m bench.profile`: where a TLS (or TCP) check's CPU goes.

Starts the loopback farm, runs one pass of the workload in a reach worker under cProfile,
and prints the functions with the most CPU time of their own (tottime) and the cumulative
view of the check's entry points, per check (microseconds).
"""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.farm import Farm
from bench.run import raise_nofile, reach_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--workload", choices=("tcp", "tls"), default="tls")
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    raise_nofile()
    off = args.port_offset
    with tempfile.TemporaryDirectory(prefix="reach-profile-") as tmp:
        workdir = Path(tmp)
        farm = Farm(workdir, tcp_ports=[p + off for p in range(20000, 20010)],
                    tls_ports=[p + off for p in range(21000, 21010)],
                    mtproto_ports=[p + off for p in range(22000, 22004)], status_port=20999 + off)
        farm.start()
        try:
            config = workdir / "reach.yaml"
            config.write_text(yaml.safe_dump(reach_config(args.workload, args.checks, farm, 100, 5.0)))
            stats_file = workdir / "round.pstats"
            proc = subprocess.run([sys.executable, "-m", "bench.reach_worker", str(config),
                                   "--profile", str(stats_file)],
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            out = json.loads(proc.stdout.splitlines()[-1])
            stats = pstats.Stats(str(stats_file))
        finally:
            farm.stop()
    n = out["observations"]
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"## cProfile (CPU clock) of one {args.workload.upper()} pass: {n} checks, {out['ok']} ok; "
          f"{1e6 * total / n:.0f} us of profiled CPU per check (cProfile adds its own)\n")
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = file.split("/site-packages/")[-1].split("/wt/perf/")[-1].split("/lib/python3.11/")[-1]
        rows.append((tottime, cumtime, calls, f"{where}:{line}({func})"))
    rows.sort(reverse=True)
    print("| own us/check | cum us/check | calls/check | function |")
    print("|---|---|---|---|")
    for tottime, cumtime, calls, name in rows[:args.top]:
        print(f"| {1e6 * tottime / n:.1f} | {1e6 * cumtime / n:.1f} | {calls / n:.2f} | `{name}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
