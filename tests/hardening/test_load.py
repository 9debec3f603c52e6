"""The short load run: many clients on /metrics and /api/status while rounds run.
The full one (2,000 targets, 200 clients, 30 s) is `python -m tests.hardening.load`."""

from __future__ import annotations

import asyncio
import time

import pytest

from probe.serve.server import Pacer
from tests.hardening._counts import CASES
from tests.hardening.load import run_load


async def test_short_load_run() -> None:
    figures = await run_load(targets=200, clients=50, seconds=4, interval=1.5, baseline_seconds=3)
    load = figures["load"]
    assert load["errors"] == 0, load["first_errors"]
    for path in ("/metrics", "/api/status"):
        assert load[path]["requests"] > 50
        assert load[path]["p99_ms"] < 5000  # paced, never refused or timed out
    quiet, loaded = figures["rounds_without_load"], figures["rounds_under_load"]
    assert quiet["rounds"] >= 1 and loaded["rounds"] >= 1, figures
    # the HTTP side is paced: never more requests served than the token bucket admits,
    # however fast the clients ask (the CPU this saves is a benchmark figure: the load run)
    pacer = Pacer()
    served = load["/metrics"]["requests"] + load["/api/status"]["requests"]
    assert served <= pacer.burst + pacer.rate * load["wall_seconds"] + 2, load
    CASES["load/requests (short run)"] += load["/metrics"]["requests"] + load["/api/status"]["requests"]


async def test_pacer_admits_the_rate_and_refuses_past_max_wait() -> None:
    pacer = Pacer(rate=10, burst=5, max_wait=1.0)
    started = time.monotonic()
    results = await asyncio.gather(*(pacer.acquire("flood") for _ in range(30)))
    assert results[:5] == [True] * 5  # the burst goes through at once
    assert 12 <= results.count(True) <= 17  # then 10 a second for the 1 s a request may wait
    assert results.count(False) == pacer.refused > 0
    assert time.monotonic() - started < 2


async def test_pacer_serves_sources_round_robin() -> None:
    """A flood from one source queues behind itself: a request from another source is
    admitted after about one slot, not after the flood's queue."""
    pacer = Pacer(rate=20, burst=1, max_wait=5.0)
    flood = [asyncio.ensure_future(pacer.acquire("127.0.0.2")) for _ in range(60)]
    await asyncio.sleep(0.3)
    started = time.monotonic()
    assert await pacer.acquire("127.0.0.1")
    assert time.monotonic() - started < 0.5  # the flood's queue would take 3 s
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


@pytest.mark.parametrize("rate", [100.0])
def test_default_rate_is_far_above_scraping(rate: float) -> None:
    assert Pacer().rate == rate  # Prometheus HA pair + Grafana: a few requests a minute
