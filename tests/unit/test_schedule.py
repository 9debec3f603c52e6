"""`probe run`'s tiers on loopback: sentinels every interval, a sweep slice, a full round of
the messenger at once on a change, verdicts carried with when they were measured, and the
budget's shedding order."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from probe.inputs.config import Config, load_config
from probe.model.observation import RoundResult
from probe.serve.schedule import (
    BATCH_SECONDS,
    FIXED_MAX,
    SCREEN_GUESS,
    SCREENED_MAX,
    SHARES,
    SHED_ORDER,
    Bucket,
    Work,
)
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
    published: list[RoundResult] = []
    svc.round_listeners.append(published.append)
    result = await svc.run_one()
    # on a budget the sentinel's own verdict is published at once, before the full round
    # (the page waits for the sentinel, not for the full round too); then the full round
    assert result is not None and [r.tier for r in published] == ["sweep", "full"]
    assert result is published[-1]
    dc1, dc2 = f"dc1-v4:{world.dc_port}", f"dc2-v4:{world.dc_port}"
    for r in published:
        assert {v.target: v.verdict for v in r.verdicts}[dc1] == "tcp_reset"
    assert dc2 not in measured_targets(published[0])
    assert dc2 in measured_targets(result)  # the messenger's full round
    assert svc.rounds == 3


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
    # the three sentinels (3 kB) no longer fit in an interval's share (520 bytes): the
    # fixed-address one (dc1) as often as FIXED_MAX of the sentinels' share pays for; as
    # that is slower than every interval, a sentinel screened (a lookup and a connect) in
    # between with up to SCREENED_MAX of the rest; the two with a DNS step (the web front
    # per family) in turn with what is left
    assert not planner.sentinels_fit()
    share = SHARES["sentinels"] * rate
    fixed = 1000 / (FIXED_MAX * share)
    assert planner.screened_sentinels() == {"telegram": planner.sentinels["telegram"]}
    screens = planner.screen_costs.of(planner.sentinels["telegram"], SCREEN_GUESS) / 3
    left = share - 1000 / fixed
    screened = max(30, screens / (SCREENED_MAX * left))
    dns = 1000 / (left - screens / screened)
    assert planner.sentinel_pace() == (pytest.approx(fixed), pytest.approx(dns))
    sentinel, sweep = planner.sentinel_seconds(), planner.sweep_seconds()
    assert sentinel == pytest.approx(fixed)  # Telegram's DC: its quickest sentinel
    assert sweep == pytest.approx(len(everything) * 1000 / (SHARES["sweeps"] * rate))
    assert planner.sentinel_cycle_seconds() == pytest.approx(2 * dns)
    # the full-depth sweep is slower than `schedule.sweep`: targets are screened between
    assert planner.screening()
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


def sampled(result: RoundResult) -> int:
    """The most baseline handshakes any site had in a round (1: single handshakes)."""
    return max((len(o.tries()) for o in result.observations
                if o.messenger is None and o.started >= result.started), default=0)


async def test_a_failure_already_judged_is_not_sampled_again(world: World, tmp_path: Path) -> None:
    # dc1 (a sentinel) goes silent: its MTProto exchange times out. The round that first
    # sees it samples the baseline in full (40 handshakes) for the loss test; the rounds
    # after, which see the same timeouts, reuse that test's answer: the verdict stands,
    # restamped, and one handshake of the site proves the vantage online (before: 40 each
    # round, ~110 kB a round in the lab's Telegram blackhole)
    svc = service(world, tmp_path, sweep=86400)
    await svc.run_one()
    dc1 = f"dc1-v4:{world.dc_port}"
    world.dcs[0].mode = "silent"
    published: list[RoundResult] = []
    svc.round_listeners.append(published.append)
    await svc.run_one()
    assert [r.tier for r in published] == ["sweep", "full"]
    # a new failure: the sentinel round samples in full, and its verdict is published at
    # once; the full round after it sees the same and reuses that loss test
    assert sampled(published[0]) >= 40 and published[0].loss_reused == ()
    assert sampled(published[1]) == 1 and published[1].loss_reused == (dc1,)
    judged = {v.target: v for v in published[0].verdicts}[dc1]
    assert judged.verdict != "ok"
    for _ in range(2):
        result = await svc.run_one()
        assert result is not None and "full" not in result.tier
        assert dc1 in measured_targets(result) and result.loss_reused == (dc1,)
        verdict = {v.target: v for v in result.verdicts}[dc1]
        assert (verdict.verdict, verdict.rule) == (judged.verdict, judged.rule)
        assert verdict.measured is not None and verdict.measured > judged.measured
        # no new sample: at most one handshake (none when the web front's verified
        # handshake in the same round proved the vantage online)
        assert sampled(result) <= 1 and result.network.online
    assert svc.planner.known[dc1].verdict.rule == judged.rule
    assert dc1 in svc.planner.judged()
    svc.planner.bucket.adopt(None)  # unlimited: every round samples as before
    assert svc.planner.judged() == {}


async def test_fixed_address_sentinels_every_interval_dns_less_often(world: World, tmp_path: Path) -> None:
    # 3 MB/day: 16 bytes a second for sentinels. Telegram's DC (250 bytes) fits every
    # interval within FIXED_MAX of that share; the web front's DNS comparison (3 kB a
    # family) comes round at the pace the rest pays for (~400 s)
    svc = service(world, tmp_path, budget=3_000_000, sweep=86400)
    await svc.run_one()
    planner = svc.planner
    dc1, web4, web6 = f"dc1-v4:{world.dc_port}", f"{WEB}/v4", f"{WEB}/v6"
    assert planner.fixed_sentinels == {"telegram": [dc1]}
    assert planner.dns_sentinels == {"telegram": [web4, web6]}
    planner.costs.bytes.update({dc1: 250.0, web4: 3000.0, web6: 3000.0})
    fixed, dns = planner.sentinel_pace()
    assert fixed == 30 and 300 < dns < 500
    now = planner.bucket.updated
    for i in range(1, 41):  # 20 minutes
        work = planner.next_work(now + 30 * i)
        assert work is not None and work.only is not None and dc1 in work.only  # every interval
    # the DNS ones in turn (the sweep's slices measure them too: counted by the turns)
    assert planner.turns == {"fixed_credit:telegram": 40,
                             "dns_credit:telegram": pytest.approx(1200 / dns, abs=1)}
    budget = planner.report([])
    assert budget["sentinel_seconds"] == 30 and budget["sentinel_dns_seconds"] == round(dns, 1)


def record_work(svc: Service) -> list[Work]:
    """The work of every round the service measures from now on, in order."""
    works: list[Work] = []
    measure = svc._measure

    async def recording(config: Config, work: Work) -> RoundResult:
        works.append(work)
        return await measure(config, work)

    svc._measure = recording  # type: ignore[method-assign]
    return works


async def test_a_screening_only_triggers_the_full_round(world: World, tmp_path: Path) -> None:
    # 6 MB/day: a full-depth sweep takes far longer than schedule.sweep, so targets are
    # screened in between (a lookup at the vantage's own resolver and a TCP connect). A
    # screening that sees dc2 (no sentinel) refuse never publishes a verdict itself: the
    # round it ran in carries dc2's last verdict, and dc2 measured at full depth right
    # after (that target alone: a messenger's full round is a third of the bucket) judges
    svc = service(world, tmp_path, budget=6_000_000, sweep=300)
    await svc.run_one()
    planner = svc.planner
    assert planner.screening() and planner.screen_seconds() is not None
    dc2 = f"dc2-v4:{world.dc_port}"
    await world.dcs[1].stop()
    published: list[RoundResult] = []
    svc.round_listeners.append(published.append)
    works = record_work(svc)
    for _ in range(12):
        result = await svc.run_one()
        assert result is not None
        if "full" in result.tier:
            break
    assert result is not None and result is published[-1] and "full" in result.tier
    assert {v.target: v.verdict for v in result.verdicts}[dc2] == "tcp_reset"
    assert dc2 not in svc.planner.sentinels["telegram"]
    seen = max(i for i, w in enumerate(works) if dc2 in w.screen)
    assert works[seen + 1].tier == "full" and works[seen + 1].only == {dc2}
    # loopback's baseline proves nothing (no verified handshake): dc2 alone read as
    # vantage_offline, so its messenger's full round decided (in the lab the baseline's
    # verified handshake proves the vantage online and dc2's own round is the verdict)
    assert works[seen + 2:] == [] or works[seen + 2].only == svc.planner.messenger_targets(["telegram"])
    # the screening that saw it: its connect only (the lookup is for names), and no verdict
    # of its own: every round published before the full round has dc2 as it was
    assert any(dc2 in r.screened for r in published)
    checks = [o.check for o in result.observations if o.target == dc2 and o.started >= result.started]
    assert checks.count("tcp") == 2 or (published[-1].tier == "full" and dc2 in published[-2].screened)
    for r in published[:-1]:
        assert {v.target: v.verdict for v in r.verdicts}[dc2] == "ok"
    budget = round_json(result)["budget"]
    assert budget["screen_seconds"] is not None and budget["screen_seconds"] < budget["sweep_seconds"]
    assert svc.planner.screen_costs.bytes  # learnt from the screenings' own counts


async def test_periodic_transfers_run_between_full_rounds(world: World, tmp_path: Path) -> None:
    # schedule.transfers: the throughput checks come round on their own, not only in a
    # full round (before, next_work asked for transfers in full rounds only: at a steady
    # state with no change they never ran again)
    svc = service(world, tmp_path, sweep=86400, transfers=3600)
    first = await svc.run_one()
    assert first is not None and not first.transfers_ran  # on a budget: not at start
    assert (await svc.run_one()) is not None and not svc.planner.transfers_due(time.time())
    svc.planner.last_transfers -= 3600  # an hour later
    result = await svc.run_one()
    assert result is not None and result.tier == "transfers" and result.transfers_ran
    fronts = {f"{WEB}/v4", f"{WEB}/v6"}
    assert {o.target for o in result.observations if o.check == "http"
            and o.started >= result.started} & fronts
    later = await svc.run_one()  # the next interval: sentinels again
    assert later is not None and later.tier != "transfers"


async def test_a_messenger_without_a_sentinel_every_interval_has_one_screened(
        world: World, tmp_path: Path) -> None:
    # at the shipped 30 MB/day a messenger whose sentinels the budget cannot measure every
    # interval (WhatsApp's and Signal's are names with a DNS comparison, ~8-16 kB) has one
    # of them screened each interval in between, in turn: a lookup and a connect. Here
    # Telegram's sentinels are made that dear; dc1 (a sentinel) then refuses, and the
    # next interval's screening sees it and dc1 is judged at once (before: at the DNS
    # sentinels' pace, ~7-9 min for a whole-WhatsApp or whole-Signal block in the lab)
    svc = service(world, tmp_path, budget=30_000_000, sweep=300)
    await svc.run_one()
    planner = svc.planner
    dc1 = f"dc1-v4:{world.dc_port}"
    dear = dict.fromkeys(planner.sentinels["telegram"], 40_000.0)
    planner.costs.bytes.update(dear)
    fixed, dns = planner.sentinel_pace()
    assert fixed > 30 and dns > 30
    assert planner.screened_sentinels() == {"telegram": planner.sentinels["telegram"]}
    assert planner.report([])["sentinel_screened"] == ["telegram"]
    assert "(telegram: one screened, a lookup and a connect, every 30 s in between)" in budget_line(
        {"budget": planner.report([])})  # the status page
    now = planner.bucket.updated
    for i in range(1, 21):  # ten minutes: a sentinel, measured or screened, every interval
        planner.costs.bytes.update(dear)
        work = planner.next_work(now + 30 * i)
        assert work is not None and work.only is not None
        assert (work.only | work.screen) & set(planner.sentinels["telegram"])
    assert planner.turns["screened_credit:telegram"] >= 10
    await world.dcs[0].stop()
    published: list[RoundResult] = []
    svc.round_listeners.append(published.append)
    for _ in range(3):
        planner.costs.bytes.update(dear)
        result = await svc.run_one()
        assert result is not None
        if {v.target: v.verdict for v in result.verdicts}[dc1] != "ok":
            break
    assert {v.target: v.verdict for v in result.verdicts}[dc1] == "tcp_reset"
    assert any(dc1 in r.screened for r in published)  # a screening saw it, not a sentinel's turn


async def test_screened_changes_during_a_messengers_change_are_judged_together(
        world: World, tmp_path: Path) -> None:
    # a whole-messenger block found target by target by the screening cost a loss sample
    # (~120 kB in the lab) per target and emptied the bucket in minutes (bench traffic
    # --block whatsapp, 2026-12-06: five follow-ups in four minutes, sweeps shed). While a
    # target of the messenger turned to or from a block in the last BATCH_SECONDS, what a
    # screening sees change on another (non-sentinel) target waits and is judged with the
    # others in one full-depth round
    svc = service(world, tmp_path, budget=6_000_000, sweep=300)
    await svc.run_one()
    planner = svc.planner
    dc2 = f"dc2-v4:{world.dc_port}"
    assert dc2 not in planner.sentinels["telegram"]
    await world.dcs[1].stop()
    works = record_work(svc)
    for _ in range(12):
        planner.verdict_changed["telegram"] = time.time()  # in the middle of a change
        result = await svc.run_one()
        assert result is not None
        if dc2 in planner.deferred:
            break
    assert dc2 in planner.deferred and all(w.tier != "full" for w in works)
    assert {v.target: v.verdict for v in result.verdicts}[dc2] == "ok"  # not judged yet
    planner.deferred[dc2] -= BATCH_SECONDS  # the batch is due
    for _ in range(3):
        result = await svc.run_one()
        assert result is not None
        if "full" in result.tier:
            break
    assert {v.target: v.verdict for v in result.verdicts}[dc2] == "tcp_reset"
    assert planner.deferred == {} and any(w.tier == "full" and dc2 in (w.only or ()) for w in works)


async def test_a_restart_takes_up_the_budget_where_it_was_left(world: World, tmp_path: Path) -> None:
    # the bucket lived in memory only: every start had a full bucket and ran a full round
    # (~0.6 MB in the lab), so a probe restarted often (a crash loop, a volunteer's reboots)
    # spent past its budget. The evidence log's last round has the bucket's fill and the
    # day's use: a restart takes them up, refilled for the time it was down
    data = world.config_data()
    path = write_config(world, tmp_path / "probe.yaml", schedule={**data["schedule"], "interval": 30},
                        budget={"bytes_per_day": 6_000_000}, evidence={"directory": str(tmp_path / "ev")})
    first = Service(path, load_config(path))
    result = await first.run_one()
    assert result is not None
    bucket = first.planner.bucket
    assert bucket.fill < 1 and bucket.used_today > 0
    again = Service(path, load_config(path))  # the restart, moments later
    restored = again.planner.bucket
    assert restored.fill == pytest.approx(bucket.fill, abs=0.01)
    assert restored.used_today == bucket.used_today
    # a log whose end is garbage (a torn line, a hostile write) restores nothing and breaks
    # nothing: a full bucket, as before
    with (tmp_path / "ev" / "evidence.jsonl").open("ab") as handle:
        handle.write(b'{"budget": {"fill": "lots"}, "finished": "yesterday"}\n\x00\xff{torn')
    fresh = Service(path, load_config(path)).planner.bucket
    assert fresh.fill == pytest.approx(bucket.fill, abs=0.01)  # the last whole round's
    (tmp_path / "ev" / "evidence.jsonl").write_bytes(b"\x00\xff not json\n")
    assert Service(path, load_config(path)).planner.bucket.fill == 1.0
