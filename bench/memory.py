"""`python -m bench.memory`: where a round's memory goes, phase by phase.

Starts the loopback farm, runs one production-shaped round (the DC workload: every DC
endpoint's catalogue steps, classify, metrics record + render, the evidence line's JSON) in
a worker under tracemalloc, and prints per phase what Python still holds, the phase's own
peak, the process's RSS after it, and the source lines that allocated most in it.
tracemalloc costs time and some memory of its own: the RSS figures of record are the
benchmark's (python -m bench), these say where the memory goes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.farm import Farm
from bench.run import raise_nofile, reach_config, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--workload", choices=("dc", "tcp", "tls"), default="dc")
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--top", type=int, default=5, help="allocation sites shown per phase")
    args = parser.parse_args(argv)
    raise_nofile()
    off = args.port_offset
    with tempfile.TemporaryDirectory(prefix="reach-memory-") as tmp:
        workdir = Path(tmp)
        farm = Farm(workdir, tcp_ports=[p + off for p in range(20000, 20010)],
                    tls_ports=[p + off for p in range(21000, 21010)],
                    mtproto_ports=[p + off for p in range(22000, 22004)], status_port=20999 + off)
        farm.start()
        try:
            config = workdir / "reach.yaml"
            config.write_text(yaml.safe_dump(reach_config(args.workload, args.targets, farm, 100, 5.0)))
            proc = subprocess.run([sys.executable, "-m", "bench.reach_worker", str(config), "--phases",
                                   "--metrics"], capture_output=True, text=True, timeout=900)
        finally:
            farm.stop()
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    out = json.loads(proc.stdout.splitlines()[-1])
    print(f"## Memory by phase: {args.workload} workload, {args.targets} targets, "
          f"{out['observations']} checks (tracemalloc on)\n")
    print(table(out["phases"], ("phase", "traced_mb", "phase_peak_mb", "rss_mb", "hwm_mb")))
    print(f"\nEvidence line: {out.get('evidence_bytes', 0) / 2**20:.1f} MB of JSON; "
          f"/metrics body {out.get('render_bytes', 0) / 2**20:.1f} MB.\n")
    print("## Where each phase allocated (still held at its end; KiB, blocks)\n")
    rows = [{"phase": ph["phase"], "where": t["where"], "kib": t["kb"], "blocks": t["count"]}
            for ph in out["phases"] for t in ph["top"][:args.top]]
    print(table(rows, ("phase", "where", "kib", "blocks")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
