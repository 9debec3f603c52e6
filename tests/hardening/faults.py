"""A round in which everything goes wrong at once, on loopback, and a soak over it.

Each data centre address is a different loopback address with a different misbehaving
peer on the same port; the domain's resolvers are a silent one, a garbage one and a TCP
tarpit, with a control resolver that sends the TLS step to a peer that stalls the
handshake. Used by test_faults.py and by `python -m tests.hardening.faults` (the soak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from probe.inputs.config import Config, load_config
from probe.inputs.plan import plan
from probe.serve.service import Service, round_seconds
from tests.hardening.hostile import ScriptedTCP, ScriptedUDP, dns_answer
from tests.hardening.util import without_catalogue_groups
from tests.support.mtproto import MtprotoServer

PEERS = {  # loopback address -> what answers there
    "127.0.0.11": "tarpit",       # accepts, never reads
    "127.0.0.12": "reset",        # resets every connection
    "127.0.0.13": "refused",      # nothing listens
    "127.0.0.14": "drip",         # a byte every 20 ms
    "127.0.0.15": "ok",           # a real MTProto responder
    "127.0.0.16": "tls-stall",    # reads the ClientHello, never answers
}


def _free_port_on_all() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        ok = True
        for address in PEERS:
            with socket.socket() as sock:
                try:
                    sock.bind((address, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port")


@contextlib.asynccontextmanager
async def faulty_world(directory: Path, timeout: float = 0.1, datacenters_each: int = 1,
                       evidence: bool = True) -> AsyncIterator[Path]:
    """Start the misbehaving peers; yield a config file that probes all of them."""
    port = _free_port_on_all()
    servers: list[Any] = []
    scripts = {"tarpit": [("stall", None)], "reset": [("reset", None)],
               "drip": [("drip", (b"\x58\x00\x00\x00" + b"\0" * 88, 0.02))],
               "tls-stall": [("read", 4096), ("stall", None)]}
    for address, kind in PEERS.items():
        if kind in scripts:
            servers.append(ScriptedTCP(scripts[kind], host=address))
        elif kind == "ok":
            servers.append(MtprotoServer(address, port))
    silent = ScriptedUDP(lambda q: [], host="127.0.0.21")
    garbage = ScriptedUDP(lambda q: [q[:2] + os.urandom(40)], host="127.0.0.22")
    tcp_tarpit = ScriptedTCP([("stall", None)], host="127.0.0.23")

    def control_reply(query: bytes) -> list[bytes]:
        return [dns_answer(query, "127.0.0.16")]

    control = ScriptedUDP(control_reply, host="127.0.0.24")
    try:
        for server in servers:
            if isinstance(server, ScriptedTCP):
                server._server = await asyncio.start_server(server._handle, server.host, port, backlog=4096)
                server.port = port
            else:
                await server.start()
        for udp in (silent, garbage, control):
            await udp.start()
        await tcp_tarpit.start()
        dcs = [{"name": f"{kind}{i}".replace("-", ""), "addresses": [address]}
               for address, kind in PEERS.items() if kind != "tls-stall"
               for i in range(datacenters_each)]
        data = {
            "vantage": {"name": "faults", "country": "ZZ"},
            "messengers": {"telegram": {
                "datacenters": dcs, "ports": [port],
                "domains": [{"name": "web.telegram.org", "port": port}],
                "address_space": ["127.0.0.0/8"], "groups": without_catalogue_groups()}},
            "resolvers": {
                "system": False, "public_networks": ["127.0.0.0/8"],
                "servers": [
                    {"name": "silent", "address": "127.0.0.21", "port": silent.port},
                    {"name": "garbage", "address": "127.0.0.22", "port": garbage.port},
                    {"name": "tarpit", "address": "127.0.0.23", "port": tcp_tarpit.port,
                     "protocol": "tcp"}],
                "control": [{"name": "control", "address": "127.0.0.24", "port": control.port}],
                "race_window": 0},
            "baseline": {"targets": [{"name": "site", "address": "127.0.0.15", "port": port}]},
            "schedule": {"interval": 1, "jitter": 0, "concurrency": 64,
                         # one try per step: these tests time leaks and schedules, not confirmation
                         "confirm": {"attempts": 1},
                         "timeouts": {k: timeout for k in ("dns", "connect", "tls", "mtproto", "http")}},
            "evidence": {"directory": str(directory / "evidence") if evidence else None},
            # no traffic budget: every interval runs (as loopback_config): at the soak's
            # 0.3 s intervals the default 30 MB/day is spent in minutes, and the intervals
            # it skips would write no evidence
            "budget": {"bytes_per_day": "unlimited"},
        }
        path = directory / "faults.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield path
    finally:
        for server in servers:
            await server.stop()
        for udp in (silent, garbage, control):
            await udp.stop()
        await tcp_tarpit.stop()


def round_budget(config: Config) -> float:
    """What a round may take: the service's own bound (probe.serve.service.round_seconds,
    without the interval), plus 0.5 s of scheduling slack."""
    return round_seconds(config, plan(config)) + 0.5


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _serve_world(directory: Path, timeout: float) -> None:
    async with faulty_world(directory, timeout=timeout) as path:
        print(f"ready {path}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the soak closes our stdin


@contextlib.asynccontextmanager
async def world_process(directory: Path, timeout: float) -> AsyncIterator[Path]:
    """The faulty world in its own process, so the soak measures the probe's fds and tasks only."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.hardening.faults", "--serve", str(directory),
        "--timeout", str(timeout), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
        if not line or line[0] != "ready":
            raise RuntimeError("the faulty world did not start")
        yield Path(line[1])
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def soak(directory: Path, rounds: int, interval: float = 0.3, timeout: float = 0.05,
               warmup: int = 10, baseline_samples: int = 1) -> dict[str, Any]:
    """Run `rounds` scheduled intervals over the faulty world; return the figures.

    `baseline_samples` 1 (the default) leaves out the loss test's full baseline sample: with
    one try per step the loss test asks for its largest sample (100 handshakes started
    SAMPLE_STAGGER apart: 2 s a round) whenever a step timed out, which is every round
    here; that path is timed by test_every_fault_at_once, and soaked with
    `--baseline-samples 20` (about 2.3 s a round)."""
    async with world_process(directory, timeout) as path:
        config = load_config(path)
        config = config.model_copy(update={
            # below the config's 1 s floor, for the soak only
            "schedule": config.schedule.model_copy(update={"interval": interval}),
            "baseline": config.baseline.model_copy(update={"samples": baseline_samples})})
        service = Service(path, config)
        starts: list[float] = []
        durations: list[float] = []
        measured: list[float] = []  # each round (an interval may hold a sweep and a full round)
        cut: list[int] = []  # intervals whose round the service cut at its budget
        samples: dict[str, tuple[int, int]] = {}
        done = asyncio.Event()
        run_one = service.run_one
        measure = service._measure

        async def timed(*args: Any) -> Any:
            started = time.monotonic()
            try:
                return await measure(*args)
            finally:
                measured.append(time.monotonic() - started)

        service._measure = timed  # type: ignore[method-assign]

        def record() -> None:  # the interval's work: its rounds, metrics and evidence
            durations.append(time.monotonic() - starts[-1])
            if len(starts) == warmup:
                samples["warm"] = (open_fds(), len(asyncio.all_tasks()))
            if len(durations) >= rounds:
                samples["end"] = (open_fds(), len(asyncio.all_tasks()))
                done.set()

        async def counted() -> Any:
            starts.append(time.monotonic())
            try:
                result = await run_one()
            except TimeoutError:  # cut at the service's budget: an interval without evidence
                cut.append(len(starts))
                record()
                raise
            record()  # (an interval cancelled when the soak ends is not counted)
            return result

        service.run_one = counted  # type: ignore[method-assign]
        rss_before = rss_mib()
        loop_task = asyncio.create_task(service.loop())
        try:
            await asyncio.wait_for(done.wait(), rounds * (interval + 2 * round_budget(config)) + 30)
        finally:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        evidence_rounds = torn = 0
        from probe.sinks.evidence import summarise
        if config.evidence.directory is not None:
            summary = summarise(config.evidence.directory)
            evidence_rounds = summary["rounds"]
            torn = len(summary["torn_lines"])
        return {
            "rounds": len(durations), "interval": interval, "timeout": timeout,
            "round_budget": round_budget(config),
            "baseline_samples": baseline_samples, "rounds_measured": len(measured),
            "round_seconds_max": max(measured), "round_seconds_median": statistics.median(measured),
            # an interval's work: its rounds, metrics and evidence
            "interval_seconds_max": max(durations),
            "start_gap_min": min(gaps), "start_gap_max": max(gaps),
            # on time: `interval` after the previous start, or at once after an overrun
            "late_starts": sum(1 for g, d in zip(gaps, durations, strict=False)
                               if g > max(interval, d) + 0.1),
            "overruns": sum(1 for d in durations if d > interval),
            "fds_warm": samples["warm"][0], "fds_end": samples["end"][0],
            "tasks_warm": samples["warm"][1], "tasks_end": samples["end"][1],
            "rss_growth_mib": round(rss_mib() - rss_before, 1),
            "evidence_rounds": evidence_rounds, "evidence_torn_lines": torn,
            "rounds_lost": len(durations) - evidence_rounds,
            "rounds_cut": len(cut),  # at the service's budget (interval + round_seconds)
            "observations_per_round": len(service.latest.observations) if service.latest else 0,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hardening.faults",
                                     description="Soak: rounds over a world of faults on loopback.")
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=0.05)
    parser.add_argument("--baseline-samples", type=int, default=1,
                        help="baseline.samples (1: no full sample; see soak())")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve_world(args.serve, args.timeout))
        return 0
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(soak(Path(tmp), args.rounds, args.interval, args.timeout,
                                    baseline_samples=args.baseline_samples))
    print(json.dumps(figures, indent=1) if args.json else
          "\n".join(f"{k:24} {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
