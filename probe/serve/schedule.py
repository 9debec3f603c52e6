"""What `probe run` measures each interval, within the vantage's traffic budget.

A vantage is often a volunteer's home line or a metered mobile plan where the messengers
are blocked: measuring everything every 30 s costs gigabytes a day and is a burst of
handshakes towards blocked services from one address. So the work comes in tiers:

- **sentinels**: per messenger, a few targets covering both families and the main
  mechanisms (the first fixed-address target of each family, a DC for Telegram, and the
  first target with a DNS step, which compares resolvers). Fixed-address ones are cheap
  (a DC's MTProto exchange, ~2 kB): one per messenger every interval the budget allows,
  the families in turn. Those with a DNS step cost more (the control resolvers' DoH
  connections, ~8-16 kB): one per messenger, together in one round (they share those
  connections), less often. A messenger no fixed-address sentinel watches every interval
  (WhatsApp's and Signal's are names) has one of its sentinels screened (a lookup and a
  connect, ~0.7-1.2 kB) every interval the sentinels' share allows, so a whole-messenger block
  by address or name is seen within an interval;
- **screening**: when the budget cannot pay for a full-depth sweep every `schedule.sweep`,
  every target's lookup at the vantage's own resolver and its TCP connect (a few hundred
  bytes), a slice each interval. A screening never gives a verdict: when its outcome
  differs from the target's last full-depth measurement, that target is measured at full
  depth at once (with the baseline sample its loss test needs), and that judges. While
  a messenger is in the middle of a change, the changes screenings see on its other
  targets are batched (BATCH_SECONDS) and judged together with one sample.
  It sees what fails a lookup or a connect (a blackholed, refused or unreachable address,
  a failing resolver); a block at the TLS, SNI or protocol level on one endpoint, or an
  injected address that still connects, is left to the sentinels and the full-depth
  sweep;
- **sweeps**: every target and baseline site at full depth once per sweep, a slice each
  interval (an even trickle, not a burst);
- **full rounds**: a messenger's every target with the baseline sample the loss test
  needs, at once when a sentinel or a sweep saw a target change (its steps' outcomes
  differ from the last time it was measured), for that messenger only. On a
  budget, what the round that saw the change measured at full depth is published first
  (the page waits for the sentinel, not for the full round too); the full round is
  published when it is done;
- **transfers** (throughput checks) run in full rounds, and at most once per
  `schedule.transfers` in a round of the targets that have one.

Between the rounds that measure it a target keeps its last verdict, stamped with when it
was measured (`Verdict.measured`), so boards and rules see every target every interval.
A failure already judged (the same steps' outcomes as in the round that judged it) asks
no new baseline sample on a budget: the loss test's answer is reused, and one handshake
per site of its family proves the vantage online (probe.measure.round `_more_samples`).

The budget (`budget.bytes_per_day`) is a token bucket filled at bytes_per_day / 86400 a
second and holding an hour's worth. The work is fitted to it, not starved by it:

- what the work costs is learnt from the rounds' own byte counts (`Costs`: per target and
  baseline site, an average over its last measurements, from the first full round on; a
  screening's per target, from the screenings);
- sentinels get SHARES["sentinels"] of the refill rate, screening SHARES["screening"] and
  the full-depth sweep SHARES["sweeps"]; the rest, and the bucket itself, pay for full
  rounds on a change and for transfers;
- each tier runs at the pace its share buys: the sentinel periods stretch (never below
  `schedule.interval`), the screening and sweep periods too (never below
  `schedule.sweep`);
- the effective periods are in every round's `budget` (sentinel_seconds,
  sentinel_dns_seconds, screen_seconds, sweep_seconds) and on the metrics
  (reach_budget_period_seconds).

The bucket stays the safety net: as it empties, work is shed in this order: transfers,
then sweeps (screening with them), then full rounds, sentinels last (at an empty bucket an
interval measures nothing). Shedding is never silent: it is on the metrics, the status
page and a ticket alert. Without a budget (`bytes_per_day: unlimited`) every interval runs
the sentinels and a slice sized for `schedule.sweep`, nothing is screened, and every round
samples the baseline as the loss test asks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from probe.inputs.catalog import Target
from probe.inputs.config import Config
from probe.inputs.plan import MessengerPlan, baseline_targets, plan
from probe.measure.round import Signature, is_transfer, screen_view, signature
from probe.model.observation import Observation, RoundDraft, RoundResult, VantageNetwork, Verdict
from probe.model.verdicts import BLOCKING_VERDICTS

SHED_ORDER = ("transfers", "sweeps", "full_rounds", "sentinels")
# the bucket's fill (share of its capacity) below which each kind of work is shed
# (the paced tiers spend at most their shares of the refill: what empties the bucket is the
# full rounds of changes, transfers and a (re)start's first full round, so sweeps go only
# when little is left for anything else)
SHED_BELOW = {"transfers": 0.5, "sweeps": 0.2, "full_rounds": 0.1, "sentinels": 0.0}
BUCKET_SECONDS = 3600  # the bucket holds an hour of the daily budget
# Under a finite budget a transfer reads at most this much: enough to match a blockpage
# (probe.measure.checks.http matches the first 64 KiB) and to tell a throttled path (cut by
# time) from a free one; a full-size transfer is what `budget: unlimited` buys.
BUDGET_TRANSFER_BYTES = 64 << 10
# the refill rate's shares paced work may spend; the rest (and the bucket) pays for the
# full rounds a change calls for and for transfers. Sentinels get the larger share: they
# are what pages for a whole-messenger block. Screening (a lookup at the vantage's own
# resolver and a TCP connect per target) is what sees a single endpoint's block within
# minutes; the full-depth sweep behind it (TLS, protocol, DNS comparison) is slower.
SHARES = {"sentinels": 0.45, "screening": 0.35, "sweeps": 0.05}
# the most of the sentinels' share the fixed-address sentinels (a DC's MTProto exchange,
# ~2 kB) may take: the rest pays for the DNS-comparison sentinels (~8-16 kB each)
FIXED_MAX = 0.6
# the most of what the fixed-address sentinels leave that the sentinel screenings may take
# (a lookup and a connect per messenger no fixed-address sentinel watches every interval,
# ~2.4 kB an interval for WhatsApp and Signal in the lab): the rest pays for the DNS
# comparisons
SCREENED_MAX = 0.6
# what a screening is taken to cost before one was counted (a lookup and a connect)
SCREEN_GUESS = 700.0
COST_WEIGHT = 0.3  # a new measurement's weight in a target's average cost (EWMA)
# a paced sweep slice waits until its share has put this much by (or the whole sweep's
# cost, if less): a round's first DNS comparison pays for the control resolvers'
# connections (about 8 kB in the lab), which a bigger slice shares
SWEEP_BATCH_BYTES = 32_000
# While a messenger is in the middle of a change (a target of it turned to or from a block
# this long ago or less), what screenings see change on its other targets (not its
# sentinels: they page) waits this long and is then measured at full depth together, with
# one baseline sample: a whole-messenger block found target by target cost ~120 kB a
# target (its own loss sample) and emptied the bucket in minutes
BATCH_SECONDS = 300

def sentinels(targets: Iterable[Target]) -> dict[str, list[str]]:
    """Per messenger: the first fixed-address target of each family and the first target
    with a DNS step of each family (or the first targets at all, for a messenger with
    neither)."""
    chosen: dict[str, list[str]] = {}
    by_messenger: dict[str, list[Target]] = {}
    for t in targets:
        if t.messenger is not None:
            by_messenger.setdefault(t.messenger, []).append(t)
    for messenger, group in by_messenger.items():
        names: list[str] = []
        for family in (4, 6):
            mine = [t for t in group if t.family == family]
            fixed = next((t for t in mine if t.address is not None), None)
            dns = next((t for t in mine if any(s.check == "dns" for s in t.steps)), None)
            for pick in (fixed, dns):
                if pick is not None and pick.name not in names:
                    names.append(pick.name)
        chosen[messenger] = names or [group[0].name]
    return chosen


class Costs:
    """What measuring each target and baseline site costs on the wire, learnt from the
    rounds' own byte counts: a moving average (EWMA) per name, seeded by its first round.

    A round counts bytes per messenger (`RoundResult.traffic`) and per check (each step's
    first observation: details bytes_sent / bytes_received); a messenger's bytes are split
    over its measured targets in proportion to their checks' counts, so the costs add up
    to what the sockets counted. A baseline site's cost is the round's baseline bytes over
    the sites it sampled (a full round samples more: its seed is high, sweeps bring it
    down)."""

    def __init__(self) -> None:
        self.bytes: dict[str, float] = {}

    def learn(self, result: RoundResult, sites: Iterable[str],
              screens: Costs | None = None) -> None:
        """Learn from a round's counts; its screened targets' costs go to `screens`."""
        screened = set(result.screened)
        sampled = list(sites)
        # a round that samples no site of its own but took a handshake to prove the vantage
        # online for a failure already judged (result.loss_reused): that handshake is part
        # of what measuring the failing target costs now
        extra: dict[str, float] = {}
        if not sampled and result.loss_reused and "baseline" in result.traffic:
            each = sum(result.traffic["baseline"]) / len(result.loss_reused)
            extra = dict.fromkeys(result.loss_reused, each)
        weights: dict[str, dict[str, float]] = {}
        for obs in result.observations:
            if obs.messenger is None or obs.started < result.started:
                continue
            mine = weights.setdefault(obs.messenger, {})
            mine[obs.target] = mine.get(obs.target, 0.0) + float(
                (obs.details.get("bytes_sent") or 0) + (obs.details.get("bytes_received") or 0))
        for messenger, mine in weights.items():
            sent, received = result.traffic.get(messenger, (0, 0))
            total, counted = sent + received, sum(mine.values())
            for target, weight in mine.items():
                share = weight / counted if counted else 1 / len(mine)
                into = screens if screens is not None and target in screened else self
                into._add(target, total * share + extra.get(target, 0.0))
        if sampled and "baseline" in result.traffic:
            each = sum(result.traffic["baseline"]) / len(sampled)
            for site in sampled:
                self._add(site, each)

    def _add(self, name: str, nbytes: float) -> None:
        old = self.bytes.get(name)
        self.bytes[name] = nbytes if old is None else old + COST_WEIGHT * (nbytes - old)

    def of(self, names: Iterable[str], guess: float = 0.0) -> float:
        """The expected bytes of measuring these names (an unknown one at the average, or at
        `guess` while nothing is known)."""
        names = list(names)
        known = [self.bytes[n] for n in names if n in self.bytes]
        mean = sum(self.bytes.values()) / len(self.bytes) if self.bytes else guess
        return sum(known) + mean * (len(names) - len(known))


class Bucket:
    """The daily budget as a token bucket, and what was spent since midnight (UTC)."""

    def __init__(self, bytes_per_day: int | None, now: float | None = None) -> None:
        self.bytes_per_day = bytes_per_day
        self.capacity = None if bytes_per_day is None else bytes_per_day * BUCKET_SECONDS / 86400
        self.tokens = self.capacity or 0.0
        self.updated = time.time() if now is None else now
        self.day = self._day(self.updated)
        self.used_today = 0

    @staticmethod
    def _day(now: float) -> str:
        return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")

    def refill(self, now: float) -> None:
        if self.capacity is not None and self.bytes_per_day is not None:
            self.tokens = min(self.capacity,
                              self.tokens + (now - self.updated) * self.bytes_per_day / 86400)
        self.updated = now
        day = self._day(now)
        if day != self.day:
            self.day, self.used_today = day, 0

    def spend(self, nbytes: int) -> None:
        self.used_today += nbytes
        if self.capacity is not None:
            self.tokens -= nbytes

    @property
    def fill(self) -> float:
        """How full the bucket is, 0..1 (1 when unlimited)."""
        if self.capacity is None:
            return 1.0
        return max(0.0, self.tokens / self.capacity)

    def shed(self) -> list[str]:
        """The kinds of work shed now, in SHED_ORDER."""
        if self.capacity is None:
            return []
        fill = self.tokens / self.capacity
        return [w for w in SHED_ORDER if fill <= SHED_BELOW[w] if w != "sentinels" or fill <= 0]

    def restore(self, finished: float, budget: Mapping[str, object], now: float) -> None:
        """A restart: take up what the last round before it had left (its `budget`, written
        in the evidence log when it `finished`), refilled since. Without this every start
        had a full bucket and ran a full round (~0.6 MB): a probe restarted often, by a
        crash loop or a volunteer's reboots, spent past its budget."""
        if self.capacity is None or not finished <= now:
            return
        fill, used, day = budget.get("fill"), budget.get("used_today"), budget.get("day")
        if isinstance(fill, int | float) and 0 <= fill <= 1:
            self.tokens = min(self.tokens, fill * self.capacity)
            self.updated = finished
            self.refill(now)
        if day == self.day and isinstance(used, int) and used >= 0:
            self.used_today += used

    def adopt(self, bytes_per_day: int | None) -> None:
        """A reload changed the budget: keep today's use, rescale the bucket."""
        if bytes_per_day == self.bytes_per_day:
            return
        fill = self.fill
        self.bytes_per_day = bytes_per_day
        self.capacity = None if bytes_per_day is None else bytes_per_day * BUCKET_SECONDS / 86400
        self.tokens = (self.capacity or 0.0) * fill


@dataclass
class Known:
    """A target's last measurement: its verdict, the steps' outcomes, and when."""

    verdict: Verdict
    signature: Signature
    measured: float


@dataclass(frozen=True)
class Prepared:
    """What the scheduler derives from a config's plan."""

    targets: list[Target]
    sites: list[str]
    sentinels: dict[str, list[str]]
    rotation: list[str]
    plans: list[MessengerPlan]  # the config's plan, made once: every round of it shares it


@dataclass
class Work:
    """One round to run: which targets and baseline sites, with or without transfers, and
    which targets only screened (probe.measure.round SCREEN_CHECKS)."""

    tier: str
    only: set[str] | None
    sites: set[str] | None
    transfers: bool
    screen: set[str] = field(default_factory=set)


@dataclass
class Planner:
    """The scheduler's state across intervals (kept over a reload of the same plan)."""

    config: Config
    bucket: Bucket
    known: dict[str, Known] = field(default_factory=dict)
    site_states: dict[str, bool] = field(default_factory=dict)
    network: VantageNetwork | None = None  # the last measured loss figures
    cursor: int = 0
    last_transfers: float = 0.0
    last_sweep_slice: float = 0.0
    costs: Costs = field(default_factory=Costs)
    ticked: float | None = None  # when next_work last ran
    # bytes the fixed-address and the DNS-comparison sentinels have put by, and whose turn
    # is next per messenger and kind
    fixed_credit: float = 0.0
    dns_credit: float = 0.0
    screened_credit: float = 0.0
    turns: dict[str, int] = field(default_factory=dict)
    sweep_credit: float = 0.0  # bytes the sweeps' share has put by
    # the last absorbed round's changes: targets a screening saw change, and messengers in
    # which a full-depth measurement saw one
    screen_changed: set[str] = field(default_factory=set)
    depth_changed: set[str] = field(default_factory=set)
    slice_sites: set[str] = field(default_factory=set)  # the sites of the last paced round
    screen_costs: Costs = field(default_factory=Costs)  # a screening's bytes per target
    screen_credit: float = 0.0  # bytes the screening's share has put by
    screen_cursor: int = 0
    # per messenger, when one of its targets last turned to or from a block; and the targets
    # a screening saw change since, waiting to be measured at full depth together
    verdict_changed: dict[str, float] = field(default_factory=dict)
    deferred: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.configure(self.config)
        if self.bucket.bytes_per_day is not None:
            # on a budget the first transfers wait for the schedule (or a suspicion): a
            # probe restarted often must not pay for them at every start
            self.last_transfers = self.bucket.updated

    @property
    def transfer_bytes(self) -> int | None:
        """What each transfer may read: capped under a finite budget."""
        return None if self.bucket.bytes_per_day is None else BUDGET_TRANSFER_BYTES

    @staticmethod
    def prepare(config: Config) -> Prepared:
        """The plan-derived part of the state: heavy for a big config, so a reload makes it
        in a thread."""
        plans = plan(config)
        targets = [t for p in plans for t in p.targets]
        sites = [t.name for t in baseline_targets(config)]
        return Prepared(targets, sites, sentinels(targets), [*sites, *(t.name for t in targets)],
                        plans)

    def configure(self, config: Config, prepared: Prepared | None = None) -> None:
        self.config = config
        ready = prepared or self.prepare(config)
        self.targets = ready.targets
        self.sites = ready.sites
        self.sentinels = ready.sentinels
        self.rotation = ready.rotation
        self.plans = ready.plans
        with_dns = {t.name for t in self.targets if any(s.check == "dns" for s in t.steps)}
        # the sentinels of each kind: fixed-address ones (every interval the budget allows)
        # and those with a DNS step, whose control resolvers cost more (less often)
        fixed = {m: [n for n in names if n not in with_dns] for m, names in self.sentinels.items()}
        dns = {m: [n for n in names if n in with_dns] for m, names in self.sentinels.items()}
        self.fixed_sentinels = {m: v for m, v in fixed.items() if v}
        self.dns_sentinels = {m: v for m, v in dns.items() if v}
        self.messenger_of = {t.name: t.messenger for t in self.targets if t.messenger is not None}
        self.transfer_targets = {t.name for t in self.targets
                                 if any(is_transfer(s.check) for s in t.steps)}
        names = {t.name for t in self.targets}
        self.known = {k: v for k, v in self.known.items() if k in names}
        self.deferred = {k: v for k, v in self.deferred.items() if k in names}
        self.bucket.adopt(config.budget.bytes_per_day)

    def messenger_targets(self, messengers: Iterable[str]) -> set[str]:
        wanted = set(messengers)
        return {t.name for t in self.targets if t.messenger in wanted}

    def slice_size(self) -> int:
        """Rotation entries per interval for every one to come round once per sweep."""
        s = self.config.schedule
        return max(1, math.ceil(len(self.rotation) * s.interval / s.sweep))

    def transfers_due(self, now: float) -> bool:
        return now - self.last_transfers >= self.config.schedule.transfers

    @property
    def rate(self) -> float | None:
        """The bucket's refill, bytes a second (None: unlimited)."""
        b = self.bucket.bytes_per_day
        return None if b is None else b / 86400

    def sentinels_fit(self) -> bool:
        """Whether every sentinel can be measured every interval within the sentinels'
        share of the budget (always, without a budget)."""
        rate = self.rate
        every = [n for names in self.sentinels.values() for n in names]
        return rate is None or (
            self.costs.of(every) <= SHARES["sentinels"] * rate * self.config.schedule.interval)

    @staticmethod
    def _mean(costs: Costs, names: list[str], guess: float = 0.0) -> float:
        return costs.of(names, guess) / len(names) if names else 0.0

    def _kind_cost(self, kind: dict[str, list[str]]) -> float:
        """Bytes of one round of a kind of sentinel: one per messenger (each in turn)."""
        return sum(self._mean(self.costs, names) for names in kind.values())

    def sentinel_pace(self) -> tuple[float, float]:
        """(fixed-address, DNS-comparison) sentinel periods (see _pace)."""
        pf, _, pd = self._pace()
        return pf, pd

    def _fixed_period(self) -> float:
        """The fixed-address sentinels' period: as often as FIXED_MAX of the sentinels'
        share pays for (every interval at 30 MB/day in the lab: a DC costs ~2 kB)."""
        fixed = self._kind_cost(self.fixed_sentinels)
        if not fixed:
            return math.inf
        rate = self.rate or math.inf
        return max(float(self.config.schedule.interval), fixed / (FIXED_MAX * SHARES["sentinels"] * rate))

    def _pace(self) -> tuple[float, float, float]:
        """(fixed-address, screened, DNS-comparison) sentinel periods: every interval when
        the whole set fits, else the fixed ones first (_fixed_period), then the screenings
        of the messengers they leave unwatched (screened_sentinels) with up to SCREENED_MAX
        of what is left, and the DNS ones, one per messenger together (they share the
        control resolvers' connections), at the pace the rest of the share pays for."""
        interval = float(self.config.schedule.interval)
        rate = self.rate
        if rate is None or self.sentinels_fit():
            return interval, interval, interval
        pf = self._fixed_period()
        fixed = self._kind_cost(self.fixed_sentinels)
        left = SHARES["sentinels"] * rate - (fixed / pf if fixed else 0.0)
        screens = self._screen_cost(self.screened_sentinels())
        ps = max(interval, screens / (SCREENED_MAX * left)) if screens else math.inf
        left -= screens / ps if screens else 0.0
        dns = self._kind_cost(self.dns_sentinels)
        pd = max(interval, dns / left) if dns else math.inf
        return pf, ps, pd

    def _screen_cost(self, kind: dict[str, list[str]]) -> float:
        """Bytes of one round of sentinel screenings: one per messenger (each in turn)."""
        return sum(self._mean(self.screen_costs, names, SCREEN_GUESS) for names in kind.values())

    def screened_sentinels(self) -> dict[str, list[str]]:
        """The sentinels of each messenger no fixed-address sentinel watches every interval
        (WhatsApp's and Signal's are names; any messenger's when the budget stretches the
        fixed ones): one of them is screened, a lookup and a connect (~0.7-1.2 kB), at the
        screened pace (every interval at 30 MB/day), in turn. That sees a whole-messenger
        block by address or name at once, and the change measures the sentinel at full
        depth (follow_up); the DNS comparison comes at its slower pace."""
        rate = self.rate
        if rate is None or self.sentinels_fit():
            return {}
        late = self._fixed_period() > self.config.schedule.interval
        return {m: names for m, names in self.sentinels.items()
                if names and (late or m not in self.fixed_sentinels)}

    def sentinel_periods(self) -> dict[str, float]:
        """Per messenger, how often one of its sentinels is measured (its fixed-address
        ones when it has some, else its DNS ones)."""
        pf, pd = self.sentinel_pace()
        return {m: min(pf if m in self.fixed_sentinels else math.inf,
                       pd if m in self.dns_sentinels else math.inf)
                for m in self.sentinels if self.sentinels[m]}

    def sentinel_seconds(self) -> float:
        """The longest any messenger waits for a sentinel, at the pace the budget buys."""
        return max(self.sentinel_periods().values(), default=float(self.config.schedule.interval))

    def sentinel_cycle_seconds(self) -> float:
        """How long until every sentinel has been measured."""
        interval = float(self.config.schedule.interval)
        if self.rate is None or self.sentinels_fit():
            return interval
        pf, pd = self.sentinel_pace()
        cycles = [pf * len(n) for n in self.fixed_sentinels.values()]
        cycles += [pd * len(n) for n in self.dns_sentinels.values()]
        return max(cycles, default=interval)

    def sweep_seconds(self) -> float:
        """How long a full-depth sweep (every target and site once) takes at the pace the
        budget buys."""
        sweep = self.config.schedule.sweep
        rate = self.rate
        if rate is None:
            return sweep
        return max(sweep, self.costs.of(self.rotation) / (SHARES["sweeps"] * rate))

    def screening(self) -> bool:
        """Whether targets are screened between their full-depth measurements: when the
        budget cannot pay for a full-depth sweep every `schedule.sweep`."""
        return self.rate is not None and self.sweep_seconds() > self.config.schedule.sweep

    def screen_seconds(self) -> float | None:
        """How long a screening of every target takes at the pace the budget buys (None:
        no screening)."""
        rate = self.rate
        if rate is None or not self.screening():
            return None
        cost = self.screen_costs.of([t.name for t in self.targets], SCREEN_GUESS)
        return max(self.config.schedule.sweep, cost / (SHARES["screening"] * rate))

    def next_work(self, now: float) -> Work | None:
        """This interval's round: a full one while anything is unknown, else sentinels (when
        their share has put their cost by) plus a sweep slice (as many entries as its share
        pays for). None when the bucket is empty (the interval is skipped)."""
        self.bucket.refill(now)
        shed = self.bucket.shed()
        interval = self.config.schedule.interval
        # an interval's worth at least: rounds come an interval apart (or later, overrun)
        step = interval if self.ticked is None else max(interval, now - self.ticked)
        self.ticked = now
        transfers = self.transfers_due(now) and "transfers" not in shed
        if any(t.name not in self.known for t in self.targets):
            if "sentinels" in shed:
                return None
            return Work("full", None, None, transfers)
        if "sentinels" in shed:
            return None
        if transfers and (self.transfer_targets or self.config.baseline.throughput_url):
            # the periodic throughput checks: the targets with a transfer, at full depth,
            # with the baseline's sample (and its reference transfer)
            return Work("transfers", set(self.transfer_targets), None, True)
        rate = self.rate
        only: set[str] = set()
        screen: set[str] = set()
        if rate is None or self.sentinels_fit():
            only = {n for names in self.sentinels.values() for n in names}
            self.fixed_credit = self.dns_credit = self.screened_credit = 0.0
        else:
            pf, ps, pd = self._pace()
            screened = self.screened_sentinels()
            for kind, period, attr, cost, into in (
                    (self.fixed_sentinels, pf, "fixed_credit",
                     self._kind_cost(self.fixed_sentinels), only),
                    (self.dns_sentinels, pd, "dns_credit", self._kind_cost(self.dns_sentinels), only),
                    (screened, ps, "screened_credit", self._screen_cost(screened), screen)):
                if not kind or not math.isfinite(period):
                    continue
                # what is left over after a measurement carries (up to one more), so a
                # period a little over the interval is kept on average, not doubled
                credit = getattr(self, attr)
                credit = min(max(2 * cost, credit), credit + step * cost / period)
                if credit >= cost:
                    credit -= cost
                    for messenger, names in kind.items():  # one each, in turn
                        if into is screen and not only.isdisjoint(names):
                            continue  # measured at full depth this interval already
                        key = f"{attr}:{messenger}"
                        turn = self.turns.get(key, 0)
                        into.add(names[turn % len(names)])
                        self.turns[key] = turn + 1
                setattr(self, attr, credit)
        sites: set[str] = set()
        entries: list[str] = []
        if "sweeps" not in shed:
            if rate is None or self.sweep_seconds() <= self.config.schedule.sweep:
                entries = [self.rotation[(self.cursor + i) % len(self.rotation)]
                           for i in range(self.slice_size())]
                self.sweep_credit = 0.0
            else:
                # as many entries as the sweeps' share has put by, in rotation order; the
                # credit keeps at most the dearest entry's cost, so every entry comes round
                put_by = step * SHARES["sweeps"] * rate
                dearest = max(self.costs.of([n]) for n in self.rotation)
                batch = min(SWEEP_BATCH_BYTES, self.costs.of(self.rotation))
                self.sweep_credit = min(max(dearest, put_by, batch), self.sweep_credit + put_by)
                while (self.sweep_credit >= batch or entries) and len(entries) < len(self.rotation):
                    name = self.rotation[(self.cursor + len(entries)) % len(self.rotation)]
                    cost = self.costs.of([name])
                    if cost > self.sweep_credit:
                        break
                    self.sweep_credit -= cost
                    entries.append(name)
            for name in entries:
                (sites if name in self.sites else only).add(name)
            self.cursor = (self.cursor + len(entries)) % len(self.rotation)
        self.slice_sites = set(sites)
        if "sweeps" not in shed and rate is not None and self.screening():
            names = [t.name for t in self.targets]
            put_by = step * SHARES["screening"] * rate
            dearest = max(self.screen_costs.of([n], SCREEN_GUESS) for n in names)
            self.screen_credit = min(max(dearest, put_by), self.screen_credit + put_by)
            # every target's lookup and connect, as many as the screening's share pays for
            taken = 0
            while taken < len(names):
                name = names[(self.screen_cursor + taken) % len(names)]
                cost = self.screen_costs.of([name], SCREEN_GUESS)
                if cost > self.screen_credit:
                    break
                self.screen_credit -= cost
                taken += 1
                if name not in only:
                    screen.add(name)
            self.screen_cursor = (self.screen_cursor + taken) % len(names)
        tier = ("sweep" if entries else "sentinel" if only else "screen" if screen
                else "carried")
        return Work(tier, only, sites, False, screen)

    def follow_up(self, transfers: bool) -> Work:
        """The full-depth work a change calls for: the full round of every messenger in which
        a full-depth measurement (a sentinel, a sweep entry) saw a change; a target only a
        screening saw change is measured at full depth itself, with the baseline sample its
        loss test needs (a messenger's full round with that sample is ~0.5 MB in the lab,
        a third of the bucket at 30 MB/day: the sentinels were then shed for minutes)."""
        only = self.messenger_targets(self.depth_changed)
        only |= {n for n in self.screen_changed if n not in only}
        return Work("full", only, None, transfers and bool(self.depth_changed))

    def judged(self) -> dict[str, Signature]:
        """The targets whose last verdict came from a failure, with the steps' outcomes it
        was judged on: a round that sees the same needs no new loss sample for them
        (probe.measure.round `_more_samples`). Only on a budget: unlimited, every round
        samples as before."""
        if self.bucket.bytes_per_day is None:
            return {}
        return {name: k.signature for name, k in self.known.items()
                if any(e[2] for e in k.signature)}

    def absorb(self, result: RoundResult, full: bool, accept: bool = False) -> set[str]:
        """Take a round's outcome in; return the messengers with a target that changed.
        A full round's verdicts replace the known ones; a partial round's only restamp a
        target whose steps came to the same as before (a changed one is for the full round
        that follows to judge, in context), unless `accept` (the partial round's
        verdict is published at once, before the full round that follows, or full rounds
        are shed: it is the best there is).

        A screened target (result.screened) never gets a verdict from its screening: when
        its lookup or connect came to something else than in its last full-depth
        measurement, its messenger is returned as changed (for the full round), and that is
        all. A target whose loss test was reused (result.loss_reused: a failure already
        judged) keeps its verdict, restamped."""
        now = result.finished
        # a full round samples the whole baseline: its site costs only seed unknown ones
        self.costs.learn(result, [n for n in self.sites if n not in self.costs.bytes] if full
                         else self.slice_sites, self.screen_costs)
        self.site_states.update(result.network.baseline_sites)
        if any(o.messenger is None for o in result.observations) and not result.loss_reused:
            self.network = result.network
        screened, reused = set(result.screened), set(result.loss_reused)
        by_target: dict[str, list[Observation]] = {}
        for obs in result.observations:
            if obs.messenger is not None:
                by_target.setdefault(obs.target, []).append(obs)
        changed: set[str] = set()
        self.screen_changed, self.depth_changed = set(), set()
        watching = {n for names in self.sentinels.values() for n in names}
        for verdict in result.verdicts:
            sig = signature(by_target.get(verdict.target, []))
            known = self.known.get(verdict.target)
            if verdict.target in screened:
                seen = screen_view(sig)
                if known is not None and seen != screen_view(known.signature,
                                                             {e[0] for e in seen}):
                    if (verdict.target not in watching and verdict.messenger is not None
                            and now - self.verdict_changed.get(verdict.messenger, -math.inf)
                            < BATCH_SECONDS):
                        self.deferred.setdefault(verdict.target, now)
                        continue
                    changed.add(verdict.messenger)
                    self.screen_changed.add(verdict.target)
                continue
            self.deferred.pop(verdict.target, None)  # measured at full depth: judged here
            if verdict.target in reused and known is not None:
                known.measured = now
                continue
            if full or known is None:
                self._know(verdict, sig, now)
            elif known.signature == sig:
                known.measured = now
            else:
                changed.add(verdict.messenger)
                self.depth_changed.add(verdict.messenger)
                if accept:
                    self._know(verdict, sig, now)
        if self.deferred and now - min(self.deferred.values()) >= BATCH_SECONDS:
            # the batch is due: measured at full depth together, with one baseline sample
            self.screen_changed |= set(self.deferred)
            changed |= {self.messenger_of[n] for n in self.deferred if n in self.messenger_of}
            self.deferred = {}
        if result.transfers_ran:
            self.last_transfers = now
        return changed

    def _know(self, verdict: Verdict, sig: Signature, now: float) -> None:
        """A target's new verdict; when it turns to or from a block, its messenger is in
        the middle of a change (BATCH_SECONDS)."""
        old = self.known.get(verdict.target)
        if (old is not None and verdict.messenger is not None
                and (old.verdict.verdict in BLOCKING_VERDICTS) != (verdict.verdict in BLOCKING_VERDICTS)):
            self.verdict_changed[verdict.messenger] = now
        self.known[verdict.target] = Known(verdict, sig, now)

    def merged(self, started: float, fresh: list[RoundResult], shed: list[str]) -> RoundResult:
        """The interval as the sinks see it: every planned target's current verdict (carried
        ones stamped with when they were measured, their evidence with them), this
        interval's observations, the network as last measured."""
        last = fresh[-1]
        result = RoundDraft(self.config.vantage.identity(), list(self.targets), started)
        result.finished = last.finished
        result.baseline = last.baseline
        result.network = replace(last.network)
        measured_network = next((r.network for r in reversed(fresh)
                                 if any(o.messenger is None for o in r.observations)
                                 and not r.loss_reused), None)
        if measured_network is None and self.network is not None:
            for name in ("degraded", "loss_ratio", "rtt_seconds", "retransmit_ratio",
                         "retried_ratio"):
                setattr(result.network, name, getattr(self.network, name))
        result.loop_lag_max = max(r.loop_lag_max for r in fresh)
        result.tier = "+".join(dict.fromkeys(r.tier for r in fresh))
        result.loss_reused = tuple(dict.fromkeys(n for r in fresh for n in r.loss_reused))
        result.screened = tuple(dict.fromkeys(n for r in fresh for n in r.screened))
        result.transfers_ran = any(r.transfers_ran for r in fresh)
        traffic: dict[str, tuple[int, int]] = {}
        for r in fresh:
            for label, (s, rcv) in r.traffic.items():
                old = traffic.get(label, (0, 0))
                traffic[label] = (old[0] + s, old[1] + rcv)
        result.traffic = dict(sorted(traffic.items()))
        observations: list[Observation] = []
        for r in fresh:
            observations += r.observations
        copies: dict[int, Observation] = {}
        verdicts: list[Verdict] = []
        fresh_ids = {id(o) for o in observations}
        for t in self.targets:
            known = self.known.get(t.name)
            if known is None:
                continue
            verdict = known.verdict
            evidence = []
            for obs in verdict.evidence:
                if id(obs) in fresh_ids:
                    evidence.append(obs)
                    continue
                copy = copies.get(id(obs))
                if copy is None:
                    copy = copies[id(obs)] = replace(obs)
                    observations.append(copy)
                evidence.append(copy)
            verdicts.append(replace(verdict, evidence=evidence, measured=known.measured))
        for index, obs in enumerate(observations):
            obs.id = index
        result.observations = observations
        result.budget = self.report(shed)
        return result.judged(verdicts)

    def report(self, shed: list[str]) -> dict[str, object]:
        b = self.bucket
        _, screen_pace, dns = self._pace()
        screen = self.screen_seconds()
        return {"bytes_per_day": b.bytes_per_day, "used_today": b.used_today,
                "day": b.day, "fill": round(b.fill, 4), "shedding": list(shed),
                # the pace the budget buys, from the measured costs: a sentinel of each
                # messenger at least every sentinel_seconds (per messenger in
                # sentinel_seconds_by_messenger), every sentinel once per
                # sentinel_cycle_seconds, every target and site once per sweep_seconds
                "sentinel_seconds": round(self.sentinel_seconds(), 1),
                "sentinel_seconds_by_messenger": {m: round(v, 1) for m, v
                                                  in self.sentinel_periods().items()},
                "sentinel_cycle_seconds": round(self.sentinel_cycle_seconds(), 1),
                "sentinel_dns_seconds": None if not math.isfinite(dns) else round(dns, 1),
                # the messengers whose sentinels are screened in between, and how often
                "sentinel_screened": sorted(self.screened_sentinels()),
                "sentinel_screen_seconds": None if not math.isfinite(screen_pace)
                else round(screen_pace, 1),
                "sweep_seconds": round(self.sweep_seconds(), 1),
                "screen_seconds": None if screen is None else round(screen, 1),
                "sweep_bytes": round(self.costs.of(self.rotation))}
