"""`probe run`'s tiers on loopback: sentinels every interval, a sweep slice, a full round of
the messenger at once on a change, verdicts carried with when they were measured, and the
budget's shedding order."""

from __future__ import annotations

from pathlib import Path

from probe.inputs.config import load_config
from probe.serve.schedule import SHED_ORDER, Bucket
from probe.serve.service import Service
from probe.sinks.report import round_json
from tests.unit.conftest import WEB, World
from tests.unit.test_cli import write_config


def service(world: World, tmp_path: Path, **schedule: object) -> Service:
    data = world.config_data()
    path = write_config(world, tmp_path / "probe.yaml",
                        schedule={**data["schedule"], "interval": 30, **schedule})
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
    assert out["traffic"]["tier"] == "sweep" and out["budget"]["bytes_per_day"] == 30_000_000
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
    assert seen[2] == ["transfers"]  # 700 kB left
    assert seen[4] == ["transfers", "sweeps"]
    assert seen[7] == ["transfers", "sweeps", "full_rounds"]
    assert seen[-1] == list(SHED_ORDER)
    bucket.refill(3600.0)  # an hour later the bucket is full again
    assert bucket.shed() == [] and bucket.used_today == 1_200_000
    assert Bucket(None).shed() == []
