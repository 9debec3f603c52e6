"""Faults: silent resolvers, tarpits, slow drips, thousands of resets, the uplink cut
mid-round. Rounds end within their budget, the next starts on time, nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.inputs.config import load_config
from probe.measure.round import run_round
from probe.model import failures
from probe.serve.service import Service
from tests.hardening._counts import CASES
from tests.hardening.faults import faulty_world, open_fds, round_budget, soak
from tests.hardening.hostile import ScriptedTCP
from tests.hardening.util import loopback_config

EXPECTED = {  # (target prefix, check) -> failure
    ("tarpit", "mtproto"): failures.GENERIC_TIMEOUT,
    ("reset", "mtproto"): failures.CONNECTION_RESET,
    ("refused", "tcp"): failures.CONNECTION_REFUSED,
    ("drip", "mtproto"): failures.GENERIC_TIMEOUT,
    ("ok", "mtproto"): None,
}


async def test_every_fault_at_once_ends_within_the_budget(tmp_path: Path) -> None:
    async with faulty_world(tmp_path, timeout=0.3, evidence=False) as path:
        config = load_config(path)
        started = time.monotonic()
        result = await run_round(config)
        elapsed = time.monotonic() - started
    assert elapsed <= round_budget(config), elapsed
    seen = {}
    for obs in result.observations:
        assert obs.failure is None or obs.failure in failures.FAILURES
        seen[(obs.target.split("0-")[0], obs.check, obs.details.get("resolver"))] = obs
    for (prefix, check), failure in EXPECTED.items():
        assert seen[(prefix, check, None)].failure == failure, (prefix, check)
    for resolver in ("silent", "garbage", "tarpit"):
        dns = seen[("web.telegram.org/v4", "dns", resolver)]
        assert dns.failure == failures.GENERIC_TIMEOUT, resolver
    assert seen[("web.telegram.org/v4", "dns", "garbage")].details["garbage_replies"] >= 1
    tls = [o for o in result.observations if o.check == "tls" and o.target.endswith("v4")]
    assert tls and tls[0].failure == failures.GENERIC_TIMEOUT
    assert {v.target for v in result.verdicts} >= {"tarpit0-v4:" + str(seen[("ok", "mtproto", None)].port)}
    CASES["faults/injected in one round"] += len(result.observations)


async def test_thousands_of_resets_leak_nothing(tmp_path: Path) -> None:
    async with ScriptedTCP([("reset", None)]) as server:
        path = loopback_config(tmp_path / "p.yaml", dc_port=server.port, datacenters=1500, timeout=2)
        config = load_config(path)
        await run_round(config)  # warm up (imports, caches)
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        result = await run_round(config)
    resets = sum(1 for o in result.observations if o.failure == failures.CONNECTION_RESET)
    assert resets >= 1400, resets  # the kernel may refuse a few under the burst
    assert all(o.failure in (None, failures.CONNECTION_RESET, failures.CONNECTION_REFUSED, failures.EOF_ERROR)
               for o in result.observations)
    assert open_fds() <= fds + 2 and len(asyncio.all_tasks()) <= tasks
    CASES["faults/resets"] += resets


def _check_soak(figures: dict[str, float], rounds: int) -> None:
    assert figures["rounds"] >= rounds
    assert figures["late_starts"] == 0, figures
    assert figures["round_seconds_max"] <= figures["round_budget"], figures
    assert figures["fds_end"] <= figures["fds_warm"] + 2, figures
    assert figures["tasks_end"] <= figures["tasks_warm"], figures
    assert figures["rss_growth_mib"] < 64, figures
    assert figures["evidence_torn_lines"] == 0, figures
    # No round is lost unaccounted for: a round without its evidence line is one the service
    # cut at its own budget (0.95 s here, for 0.05 s timeouts), logged and counted as an
    # overrun. On CI's two cores shared with the lab jobs a round is sometimes starved of CPU
    # that long (1 of 41 and 1 of 501 in one run at load average 10); cuts must stay rare.
    assert figures["rounds_lost"] == figures["rounds_cut"], figures
    assert figures["rounds_cut"] <= max(1, rounds // 100), figures


async def test_soak_short(tmp_path: Path) -> None:
    figures = await soak(tmp_path, rounds=40)
    _check_soak(figures, 40)
    CASES["faults/soak rounds (short)"] += int(figures["rounds"])


@pytest.mark.slow
async def test_soak_500_rounds(tmp_path: Path) -> None:
    figures = await soak(tmp_path, rounds=500)
    _check_soak(figures, 500)
    CASES["faults/soak rounds (500)"] += int(figures["rounds"])


# ---- the uplink cut mid-round, in a network namespace we create ----------------------------

NS_ADDRESS, HOST_ADDRESS = "198.18.254.2", "198.18.254.1"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def namespace() -> Iterator[tuple[str, str]]:
    """A namespace `reachh-PID` behind a veth (198.18.254.0/30); removed whatever happens."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None:
        pytest.skip("needs root, ip and iptables")
    name, host_if, ns_if = f"reachh-{os.getpid()}", f"rh{os.getpid()}a", f"rh{os.getpid()}b"
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", name, "ip", "addr", "add", f"{NS_ADDRESS}/30", "dev", ns_if)
        _run("ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        pytest.skip(f"cannot create a namespace: {exc.stderr.decode().strip()}")
    try:
        yield name, host_if
    finally:
        subprocess.run(["iptables", "-D", "OUTPUT", "-o", host_if, "-j", "DROP"], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def test_uplink_cut_mid_round(tmp_path: Path) -> None:
    with namespace() as (ns, host_if):
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, os.environ.get("PYTHON", "python3") if False else
             __import__("sys").executable, "-m", "tests.support.mtproto", "--listen", f"{NS_ADDRESS}:4443"],
            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
        try:
            assert server.stdout is not None
            assert b"ready" in server.stdout.readline()
            path = loopback_config(tmp_path / "p.yaml", dc_port=4443, datacenters=20,
                                   address=NS_ADDRESS, timeout=0.5, evidence=tmp_path / "ev")
            config = load_config(path)
            service = Service(path, config)
            starts: list[float] = []
            took: list[float] = []
            results = []
            run_one = service.run_one

            async def counted():  # type: ignore[no-untyped-def]
                starts.append(time.monotonic())
                results.append(await run_one())
                took.append(time.monotonic() - starts[-1])
                return results[-1]

            service.run_one = counted  # type: ignore[method-assign]
            task = asyncio.create_task(service.loop())
            try:
                while len(results) < 2:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.1)  # into the third round: cut the uplink (blackhole)
                _run("iptables", "-I", "OUTPUT", "-o", host_if, "-j", "DROP")
                while len(results) < 5:
                    await asyncio.sleep(0.05)
                _run("iptables", "-D", "OUTPUT", "-o", host_if, "-j", "DROP")
                while len(results) < 7:
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            server.terminate()
            server.wait(10)
    verdicts = [sorted({v.verdict for v in r.verdicts}) for r in results]
    assert verdicts[0] == ["ok"] and verdicts[1] == ["ok"], verdicts
    assert verdicts[3] == ["vantage_offline"], verdicts  # fully inside the cut
    assert verdicts[-1] == ["ok"], verdicts  # back when the uplink is
    for result in results:  # each round within its budget: "sweep+full" is two rounds
        assert result.duration <= round_budget(config) * len(result.tier.split("+")), result.tier
    # on time: `interval` after the previous start, or at once after an interval's work
    # overran it (a sentinel round that saw the cut, then the full round it calls for)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g <= max(config.schedule.interval, d) + 0.2 for g, d in zip(gaps, took, strict=False)), \
        (gaps, took)
    assert service.evidence.write_errors == 0 and service.rounds == len(results)
    CASES["faults/uplink cuts"] += 1
