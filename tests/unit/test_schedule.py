"""`probe run`'s tiers on loopback: sentinels every interval, a sweep slice, a full round of
the messenger at once on a change, verdicts carried with when they were measured, and the
budget's shedding order."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from probe.inputs.config import load_config
from probe.serve.schedule import SHARES, SHED_ORDER, Bucket
from probe.serve.service import Service
from probe.sinks.report import round_json
from probe.sinks.statuspage.render import budget_line
from tests.unit.conftest import WEB, World
from tests.unit.test_cli import write_config

# A budget that does not bind on loopback: the whole sentinel set (about 12 kB here) fits
# in the sentinels' share of an interval, so the tiers run as without a budget. At the
# shipped 30 MB/day it does not (the tight-budget tests below).
AMPLE = 300_000_000


def service(world: World, tmp_path: Path, budget: int | str = AMPLE, **schedule: object) -> Service:
    data = world.config_data()
    path = write_config(world, tmp_path / "probe.yaml",
                        schedule={**data["schedule"], "interval": 30, **schedule},
                        budget={"bytes_per_day": budget})
    return Service(path, load_config(path))


def measured_targets(result: object) -> set[str]:
    return {o.target for o in getattr(result, "observations", []) if o.messenger is not None
            and o.started >= getattr(result, "started", 0)}


async def test_first_full_then_sentinels_carrying_the_other_verdicts(world: World, tmp_path: Path) -> None:
    svc = service(world, tmp_path, sweep=86400)  # a slice of one entry per interval
    dc1, dc2 = f"dc1-v4:{world.dc_port}", f"dc2-v4:{world.dc_port}"
    first = await svc.run_one()
    assert first is not None and first.tier == "full"
    assert measured_targets(first) == {dc1, dc2, f"{WEB}/v4", f"{WEB}/v6"}
    second = await svc.run_one()
    assert second is not None and second.tier == "sweep"
    # the sentinels: one fixed-address target and one DNS target per family
    assert measured_targets(second) == {dc1, f"{WEB}/v4", f"{WEB}/v6"}
    verdicts = {v.target: v for v in second.verdicts}
    assert set(verdicts) == {dc1, dc2, f"{WEB}/v4", f"{WEB}/v6"}  # every target, every interval
    assert verdicts[dc2].verdict == "ok" and verdicts[dc2].measured == first.verdicts[0].measured
    assert verdicts[dc1].measured is not None and verdicts[dc1].measured > first.finished
    out = round_json(second)
    assert out["traffic"]["tier"] == "sweep" and out["budget"]["bytes_per_day"] == AMPLE
    assert out["budget"]["sentinel_seconds"] == 30 and out["budget"]["sweep_seconds"] == 86400
    assert 0 < out["traffic"]["bytes_sent"] < round_json(first)["traffic"]["bytes_sent"]


async def test_a_sentinel_change_runs_the_full_round_at_once(world: World, tmp_path: Path) -> None:
    svc = service(world, tmp_path, sweep=86400)
    await svc.run_one()
    await world.dcs[0].stop()  # dc1: a sentinel
    result = await svc.run_one()
    assert result is not None and result.tier == "sweep+full"
    verdicts = {v.target: v.verdict for v in result.verdicts}
    assert verdicts[f"dc1-v4:{world.dc_port}"] == "tcp_reset"
    assert f"dc2-v4:{world.dc_port}" in measured_targets(result)  # the messenger's full round


async def test_a_sweep_finds_a_change_on_a_target_no_sentinel_watches(world: World, tmp_path: Path) -> None:
    # five rotation entries (baseline site, two DCs, the web front per family) in 2.5
    # intervals: two per interval
    svc = service(world, tmp_path, sweep=75)
    dc2 = f"dc2-v4:{world.dc_port}"
    await svc.run_one()
    await world.dcs[1].stop()
    seen = []
    for _ in range(3):
        result = await svc.run_one()
        assert result is not None
        seen.append({v.target: v.verdict for v in result.verdicts}[dc2])
        if seen[-1] != "ok":
            break
    assert seen[-1] == "tcp_reset" and "full" in result.tier
    text = svc.metrics.render().decode()
    assert 'reach_bytes_total{vantage="unit",messenger="telegram",direction="received"}' in text
    assert 'reach_budget_shedding{vantage="unit",work="sweeps"} 0' in text


def test_work_is_shed_transfers_first_sentinels_last() -> None:
    bucket = Bucket(24_000_000, now=0.0)  # an hour's worth: 1 MB
    assert bucket.shed() == []
    seen = []
    for _ in range(12):
        bucket.spend(100_000)
        seen.append(bucket.shed())
    # the paced tiers stay within their shares: the bucket is the safety net, shedding
    # sweeps only when a fifth is left
    assert seen[3] == []  # 600 kB left
    assert seen[4] == ["transfers"]  # 500 kB left
    assert seen[6] == ["transfers"]
    assert seen[7] == ["transfers", "sweeps"]  # 200 kB left
    assert seen[8] == ["transfers", "sweeps", "full_rounds"]
    assert seen[-1] == list(SHED_ORDER)
    bucket.refill(3600.0)  # an hour later the bucket is full again
    assert bucket.shed() == [] and bucket.used_today == 1_200_000
    assert Bucket(None).shed() == []


def sentinel_names(svc: Service) -> set[str]:
    return {n for names in svc.planner.sentinels.values() for n in names}


async def test_unlimited_runs_every_sentinel_and_a_slice_each_interval(world: World, tmp_path: Path) -> None:
    svc = service(world, tmp_path, budget="unlimited", sweep=86400)
    await svc.run_one()
    rotation = svc.planner.rotation
    for i in range(3):
        result = await svc.run_one()
        assert result is not None and result.tier == "sweep"
        entry = rotation[i % len(rotation)]  # a slice of one entry per interval, in turn
        expected = sentinel_names(svc) | ({entry} if entry not in svc.planner.sites else set())
        assert measured_targets(result) == expected
        budget = round_json(result)["budget"]
        assert budget["bytes_per_day"] is None and budget["shedding"] == []
        assert budget["sentinel_seconds"] == 30 and budget["sweep_seconds"] == 86400
    assert ("At this budget: a sentinel of each messenger at least every 30 s, every endpoint once"
            " every 24.0 h.") in budget_line(round_json(result))  # the status page
    text = svc.metrics.render().decode()
    assert 'reach_budget_period_seconds{vantage="unit",work="sentinels"} 30.0' in text
    assert 'reach_budget_period_seconds{vantage="unit",work="sweeps"} 86400.0' in text


async def test_periods_stretch_with_what_the_work_costs(world: World, tmp_path: Path) -> None:
    svc = service(world, tmp_path, budget=3_000_000, sweep=300)  # 34.7 bytes a second
    await svc.run_one()
    planner = svc.planner
    everything = [*planner.rotation]
    rate = 3_000_000 / 86400
    planner.costs.bytes = dict.fromkeys(everything, 10.0)  # cheap: the configured pace
    assert planner.sentinels_fit()
    assert planner.sentinel_seconds() == 30 and planner.sweep_seconds() == 300
    planner.costs.bytes = dict.fromkeys(everything, 1000.0)
    # the three sentinels (3 kB) no longer fit in an interval's share (520 bytes): one at a
    # time, at the pace the sentinels' half of the budget pays for
    assert not planner.sentinels_fit()
    sentinel, sweep = planner.sentinel_seconds(), planner.sweep_seconds()
    assert sentinel == pytest.approx(1000 / (SHARES["sentinels"] * rate))
    assert sweep == pytest.approx(len(everything) * 1000 / (SHARES["sweeps"] * rate))
    assert planner.sentinel_cycle_seconds() == pytest.approx(3 * sentinel)
    planner.costs.bytes = dict.fromkeys(everything, 2000.0)
    assert planner.sentinel_seconds() == pytest.approx(2 * sentinel)
    assert planner.sweep_seconds() == pytest.approx(2 * sweep)
    budget = planner.report([])
    assert budget["sentinel_seconds"] == round(2 * sentinel, 1)
    assert budget["sweep_seconds"] == round(2 * sweep, 1)


async def test_a_tight_budget_slows_the_sweep_but_never_stops_it(world: World, tmp_path: Path) -> None:
    # 6 MB/day: the loopback sentinels every interval (12 kB) would take the bucket below
    # half within ten intervals, and sweeps were then shed for good; now sentinels take turns
    # and the sweep runs at the (slower) pace its share of the budget pays for
    svc = service(world, tmp_path, budget=6_000_000, sweep=300)
    await svc.run_one()
    dc2 = f"dc2-v4:{world.dc_port}"
    for _ in range(12):
        result = await svc.run_one()
        assert result is not None and "sweeps" not in result.budget["shedding"]
    budget = round_json(result)["budget"]
    assert budget["sentinel_seconds"] > 30 and budget["sweep_seconds"] > 300  # stretched
    await world.dcs[1].stop()  # dc2: no sentinel watches it
    ticks = math.ceil(budget["sweep_seconds"] / 30) + 2
    seen = "ok"
    for _ in range(ticks):
        result = await svc.run_one()
        assert result is not None and "sweeps" not in result.budget["shedding"]
        seen = {v.target: v.verdict for v in result.verdicts}[dc2]
        if seen != "ok":
            break
    assert seen == "tcp_reset" and "full" in result.tier
    assert svc.planner.bucket.fill > 0.5
