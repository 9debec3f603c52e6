"""The whole pytest suite as several pytest processes side by side (what scripts/test runs).

Why: most of the suite's wall time is the censorship lab, whose tests mostly wait (probe
rounds, timeouts, alert windows) rather than compute. One lab in one process ran its tests
one after another for ~19 minutes while the CPU-bound rest took half that. Each lab test
file now runs in its own pytest process with its own lab instance (REACH_LAB_INSTANCE:
namespace names, management subnet, working directory and lock of its own, see
tests/lab/plan.py), beside the other lab files and the CPU-bound directories.

A lab file whose tests are long and independent (each resets the lab) is split into several
jobs by ``-k`` selections (SPLIT below), each with its own lab instance; its last part is
"none of the others", so a new test always runs in exactly one part.

Two kinds of job: those that mostly wait and whose timing is asserted (each lab file, and
the uplink cut + soak file) run up to ``--lab-instances`` at a time at normal priority; the
CPU-bound directories run at most ``--cpu-jobs`` at a time under ``nice``, so that they
fill the cores without delaying a lab's servers and probes past their timeouts. Jobs start
longest first (weights below, measured; a new file gets a middle weight). Each job's output
is printed as one block when it ends (no interleaving), then the failures, the 15 slowest
tests of the whole run (from each job's JUnit XML) and one result line per job. Exit 0
only when every job passed.

    python -m tests.parallel [--cpu-jobs 2] [--lab-instances 3] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
LAB = TESTS / "lab"
#: Each in a process of its own at normal priority, out of their directory's niced job:
#: the uplink cut (a namespace of its own) and the 500-round soak, whose scheduler timing is
#: asserted; the load run, whose requests served and CPU share are asserted (niced beside
#: the lab it was starved: 25 requests in 4 s where a quiet machine serves hundreds).
TIMED = (TESTS / "hardening" / "test_faults.py", TESTS / "hardening" / "test_load.py")

#: Wall seconds per job measured in a parallel run on 2 busy cores (only the order
#: matters). Unknown jobs get DEFAULT_WEIGHT.
WEIGHTS = {
    "tests/unit": 620,
    "tests/fleet": 640,
    "tests/hardening": 650,
    "tests/hardening/test_faults.py": 720,
    "tests/hardening/test_load.py": 60,
    "tests/lab/test_scenarios.py": 490,
    "tests/lab/test_loss.py[1]": 190,
    "tests/lab/test_loss.py[2]": 175,
    "tests/lab/test_loss.py[3]": 150,
    "tests/lab/test_loss.py[4]": 200,
    "tests/lab/test_fleet_e2e.py": 220,
    "tests/lab/test_loss_fleet.py": 510,
    "tests/lab/test_fleet_offline.py": 110,
    "tests/lab/test_statuspage_lab.py": 75,
    "tests/lab/test_offline_scenarios.py": 230,
    "tests/lab/test_transport_scenarios.py": 125,
    "tests/lab/test_residual_scenarios.py[1]": 170,
    "tests/lab/test_residual_scenarios.py[2]": 200,
    "tests/top-level": 230,
    "tests/browser": 60,
}
DEFAULT_WEIGHT = 120
#: Lab files run as several jobs: per file, ``-k`` expressions of all parts but the last
#: (which runs the rest). tests/lab/test_loss.py: one `probe run` scenario after another
#: took 460 s in one process (L80 200 s, R-residual 75 s: 3 rounds 30 s apart, L15 65-140 s);
#: split (L80 at 5 rounds), its parts took 181 s and 163 s (2026-12-05, lab instance 5).
#: tests/lab/test_residual_scenarios.py: the 60 s drop (6 rounds 15 s apart) took 168 s, the
#: 180 s one (3 rounds 75 s apart) ~200 s: one job each keeps both under 4 minutes.
#: Issue 19's targeted-loss scenarios (LT30-*, LT50-*: 10 rounds each, 40-175 s a scenario,
#: more when changes call full rounds) are parts of their own, beside the uniform-loss rest:
#: measured 132 s (LT30), 78 s (LT50), 259 s (the rest with T-uplink, beside the unit suite),
#: so T-uplink (3 rounds, 2 with transfers) joins LT50.
SPLIT = {
    "tests/lab/test_loss.py": ("L80 or R-residual or T-front", "LT30", "LT50 or T-uplink"),
    "tests/lab/test_residual_scenarios.py": ("R60",),
}
#: niceness of the CPU-bound jobs
NICE = 10


@dataclass
class Job:
    name: str
    paths: list[str]
    lab: bool = False
    #: waits more than it computes, and asserts timing: not niced, counted with the labs
    waits: bool = False
    ignore: list[str] = field(default_factory=list)
    weight: float = DEFAULT_WEIGHT
    # filled in while running
    instance: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    xml: Path | None = None
    started: float = 0.0
    seconds: float = 0.0
    rc: int | None = None

    def ok(self) -> bool:
        return self.rc in (0, 5)  # 5: nothing collected (e.g. a path filtered away)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def discover(split: bool = True) -> list[Job]:
    """Every test file of the lab as its own job (or as the parts SPLIT names); every other
    directory of tests/ as one; the top-level test files together. ``split=False`` when the
    caller selects with its own -k (pytest keeps the last -k only)."""
    jobs: list[Job] = []
    for path in sorted(LAB.glob("test_*.py")):
        parts = SPLIT.get(rel(path)) if split else None
        if not parts:
            jobs.append(Job(rel(path), [rel(path)], lab=True, waits=True))
            continue
        rest = "not (" + " or ".join(f"({k})" for k in parts) + ")"
        for i, keywords in enumerate((*parts, rest), 1):
            jobs.append(Job(f"{rel(path)}[{i}]", [rel(path), "-k", keywords], lab=True, waits=True))
    jobs += [Job(rel(path), [rel(path)], waits=True) for path in TIMED]
    top: list[str] = []
    for path in sorted(TESTS.iterdir()):
        if path.is_dir() and path != LAB and (path / "__init__.py").exists() and any(path.glob("test_*.py")):
            ignore = [rel(timed) for timed in TIMED if timed.parent == path]
            jobs.append(Job(rel(path), [rel(path)], ignore=ignore))
        elif path.is_file() and path.name.startswith("test_") and path.suffix == ".py":
            top.append(rel(path))
    if top:
        jobs.append(Job("tests/top-level", top))
    for job in jobs:
        job.weight = WEIGHTS.get(job.name, DEFAULT_WEIGHT)
    return sorted(jobs, key=lambda j: -j.weight)


def start(job: Job, logdir: Path, extra: list[str]) -> None:
    slug = job.name.replace("/", "_")
    job.log, job.xml = logdir / f"{slug}.log", logdir / f"{slug}.xml"
    nice = [] if job.waits else ["nice", "-n", str(NICE)]
    argv = [*nice, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-ra", "--durations=15",
            f"--junitxml={job.xml}", *[f"--ignore={p}" for p in job.ignore], *job.paths, *extra]
    env = dict(os.environ)
    if job.lab:
        env["REACH_LAB_INSTANCE"] = str(job.instance)
    with job.log.open("wb") as out:
        job.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    job.started = time.monotonic()
    where = f" (lab instance {job.instance})" if job.lab else ""
    print(f"== start {job.name}{where}", flush=True)


def result_line(job: Job) -> str:
    assert job.log is not None
    lines = job.log.read_text(errors="replace").splitlines()
    found = [ln for ln in lines if ln.startswith("=") and (" passed" in ln or " failed" in ln
                                                        or " error" in ln or "no tests ran" in ln)]
    return found[-1].strip("= ") if found else f"exit {job.rc}, no pytest result line"


def finish(job: Job) -> None:
    assert job.log is not None and job.proc is not None
    job.rc = job.proc.returncode
    job.seconds = time.monotonic() - job.started
    text = job.log.read_text(errors="replace")
    prefix = f"[{job.name}] "
    sys.stdout.write("".join(prefix + line + "\n" for line in text.splitlines()))
    state = "passed" if job.ok() else f"FAILED (exit {job.rc})"
    print(f"== end {job.name}: {state} in {job.seconds:.0f} s: {result_line(job)}", flush=True)


def slowest(jobs: list[Job], count: int = 15) -> list[tuple[float, str]]:
    """The slowest tests of the whole run (setup + call + teardown, from the JUnit XML)."""
    rows: list[tuple[float, str]] = []
    for job in jobs:
        if job.xml is None or not job.xml.exists():
            continue
        with contextlib.suppress(ET.ParseError):
            for case in ET.parse(job.xml).iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                rows.append((float(case.get("time", "0") or 0), name))
    return sorted(rows, reverse=True)[:count]


def stop_all(jobs: list[Job]) -> None:
    """Interrupt every running job like Ctrl-C (so labs tear down), then kill stragglers."""
    running = [j for j in jobs if j.proc is not None and j.proc.poll() is None]
    for job in running:
        assert job.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    for job in running:
        assert job.proc is not None
        try:
            job.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.proc.pid, signal.SIGKILL)
            job.proc.wait()


def run(jobs: list[Job], cpu_slots: int, instances: int, logdir: Path, extra: list[str]) -> int:
    queue = list(jobs)
    running: list[Job] = []
    free = list(range(1, instances + 1))

    def can_start(job: Job) -> bool:
        same = sum(1 for j in running if j.waits == job.waits)
        if job.waits:
            return same < instances and (not job.lab or bool(free))
        return same < cpu_slots

    began = time.monotonic()
    try:
        while queue or running:
            for job in list(running):
                assert job.proc is not None
                if job.proc.poll() is not None:
                    running.remove(job)
                    finish(job)
                    if job.lab:
                        free.append(job.instance)
            while queue:
                # the longest job that can start now (a lab job needs a free instance)
                nxt = next((j for j in queue if can_start(j)), None)
                if nxt is None:
                    break
                queue.remove(nxt)
                if nxt.lab:
                    nxt.instance = free.pop(0)
                start(nxt, logdir, extra)
                running.append(nxt)
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop_all(jobs)
        print("== interrupted", flush=True)
        return 130
    wall = time.monotonic() - began
    print("== slowest 15 tests of the whole run (seconds, setup + call + teardown)")
    for seconds, name in slowest(jobs):
        print(f"{seconds:8.1f}  {name}")
    print("== failures")
    for job in jobs:
        assert job.log is not None
        for line in job.log.read_text(errors="replace").splitlines():
            if line.startswith(("FAILED ", "ERROR ", "XPASS ")):
                print(f"[{job.name}] {line}")
    print("== result per job (wall seconds)")
    for job in sorted(jobs, key=lambda j: -j.seconds):
        print(f"{job.seconds:6.0f}  {'ok    ' if job.ok() else 'FAILED'}  {job.name}: {result_line(job)}")
    failed = [j.name for j in jobs if not j.ok()]
    print(f"== pytest: {'FAILED: ' + ', '.join(failed) if failed else 'passed'} "
          f"({len(jobs)} processes, {wall / 60:.1f} min wall)", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpu-jobs", type=int, default=int(os.environ.get("REACH_TEST_JOBS", "2")),
                        help="CPU-bound pytest processes at a time (default 2, REACH_TEST_JOBS)")
    parser.add_argument("--lab-instances", type=int,
                        default=int(os.environ.get("REACH_LAB_INSTANCES", "3")),
                        help="lab (and other waiting) processes side by side, 1-9 "
                             "(default 3, REACH_LAB_INSTANCES)")
    parser.add_argument("extra", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    if not 1 <= args.lab_instances <= 9 or args.cpu_jobs < 1:
        print("error: --cpu-jobs must be >= 1 and --lab-instances 1-9", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="reach-tests-") as tmp:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        split = not any(a == "-k" or a.startswith("-k") for a in args.extra)
        return run(discover(split), args.cpu_jobs, args.lab_instances, Path(tmp), args.extra)


if __name__ == "__main__":
    sys.exit(main())
