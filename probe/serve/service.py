"""`probe run`: rounds on a schedule, the HTTP server, reloads and a clean shutdown.

Rounds never overlap: the next starts `interval` (plus jitter) after the previous one
started, or at once when a round overran, and the overrun is counted. A reload (SIGHUP, or
POST /-/reload with --web-enable-lifecycle) parses the new file in a thread (a big config
must not stall the loop) and validates it first; a bad one is refused, reported in metrics
and logs, and the running config stays. A reload never starts a round early: the next
round keeps its time, or moves later when the new interval is longer -- reloads cannot be
used to multiply the vantage's traffic in a censored network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from probe.inputs.config import Config, ConfigError, load_config
from probe.inputs.freshness import config_anchor_files
from probe.inputs.plan import (
    MessengerPlan,
    baseline_targets,
    plan,
    step_seconds,
    transfers_seconds,
    worst_case_seconds,
)
from probe.judge.residual import ResidualMemory
from probe.judge.vantage import MAX_SAMPLES_PER_SITE, samples_needed
from probe.measure.round import SAMPLE_STAGGER, run_round
from probe.model.observation import RoundResult
from probe.serve.schedule import Bucket, Planner, Prepared, Work
from probe.sinks import scrub
from probe.sinks.evidence import EvidenceCollector, EvidenceLog, last_budget
from probe.sinks.metrics import Metrics
from probe.sinks.scrub import vantage_addresses

log = logging.getLogger("probe")


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (all interfaces) or '[V6]:PORT'; ValueError names what is wrong."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT, :PORT or [IPV6]:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


# a pure function that can take tens of milliseconds (one try per step: thousands of
# Fisher tests); the budget asks it every interval with the same figures
_samples_needed = functools.cache(samples_needed)


def round_seconds(config: Config, plans: list[MessengerPlan]) -> float:
    """The longest a round can take: the longest chain of steps any one target (or the
    baseline's first handshake) can take, the transfers one after another, and, when the
    loss test needs them (probe.measure.round), the baseline's further samples, started
    SAMPLE_STAGGER apart after the targets are done (sized as the round sizes them, for
    every target of the plan: a bound for a round of part of it)."""
    t = config.schedule.timeouts
    sites = baseline_targets(config)
    measured = [x for p in plans for x in p.targets]
    chain = worst_case_seconds([*sites, *measured], t, config.schedule.confirm)
    sampling = 0.0
    if config.baseline.samples >= 2 and sites:
        needed = _samples_needed(len(measured), config.schedule.confirm.attempts)
        fewest = min(n for n in (sum(1 for s in sites if s.family == f) for f in (4, 6)) if n)
        size = max(config.baseline.samples, min(MAX_SAMPLES_PER_SITE, -(-needed // fewest)))
        sampling = ((size - 1) * SAMPLE_STAGGER
                    + max(step_seconds(s, t) for site in sites for s in site.steps))
    return chain + transfers_seconds([*sites, *measured], t) + sampling


class Service:
    """The scheduler and its state, shared with the HTTP handlers."""

    def __init__(self, path: Path, config: Config, metrics: Metrics | None = None) -> None:
        self.path = path
        self.config = config
        self.metrics = metrics or Metrics()
        self.scrubber = scrub.shared  # the checks' raw() scrubs with the same addresses
        self.scrubber.configure(vantage_addresses(config.vantage))
        self.evidence = EvidenceLog.for_config(config)
        self.evidence.scrubber = self.scrubber
        self.metrics.registry.register(
            EvidenceCollector(lambda: self.evidence, lambda: self.config.vantage.name))
        self.latest: RoundResult | None = None
        self.round_listeners: list[Callable[[RoundResult], None]] = []  # the status page's history
        self.last_reload_error: str | None = None
        self.next_round_at: float = time.time()
        self.started_at = time.time()
        self.round_started_at: float | None = None
        self._jitter_factor = 1.0
        self.rounds = 0
        self.reloads = 0
        self._wake = asyncio.Event()
        self._reload_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Future[tuple[bool, str]]] = set()
        self.metrics.config_loaded(config.vantage.name, True, config_anchor_files(config))
        self.planner = Planner(config, Bucket(config.budget.bytes_per_day))
        last = last_budget(config.evidence.directory)  # a restart spends what was left
        if last is not None:
            self.planner.bucket.restore(*last, time.time())
        # residual drops seen, so that a round inside one knows it (probe.judge.residual)
        self.residuals = ResidualMemory()

    def reload(self) -> tuple[bool, str]:
        """Load the config file again; keep the old config if the new one is bad."""
        try:
            config = load_config(self.path)
            prepared = Planner.prepare(config)
        except ConfigError as exc:
            return self._refuse(exc)
        return self._apply(config, prepared)

    async def reload_async(self) -> tuple[bool, str]:
        """`reload`, with the file read and parsed in a thread; one reload at a time."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            try:
                config = await asyncio.to_thread(load_config, self.path)
            except ConfigError as exc:
                return self._refuse(exc)
            try:
                prepared = await asyncio.to_thread(Planner.prepare, config)
            except ConfigError as exc:  # a plan the config allows but that cannot be made
                return self._refuse(exc)
            return self._apply(config, prepared)

    def reload_soon(self) -> None:
        """For the SIGHUP handler: a reload task, kept until it ends."""
        task = asyncio.ensure_future(self.reload_async())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, exc: ConfigError) -> tuple[bool, str]:
        message = self.scrubber.text(str(exc))
        self.last_reload_error = message
        self.metrics.config_loaded(self.config.vantage.name, False)
        log.error("reload refused, keeping the running config: %s", message)
        return False, message

    def _apply(self, config: Config, prepared: Prepared | None = None) -> tuple[bool, str]:
        self.config = config
        self.planner.configure(config, prepared)
        self.scrubber.configure(vantage_addresses(config.vantage))
        self.evidence.configure(config)
        self.last_reload_error = None
        self.reloads += 1
        self.metrics.config_loaded(config.vantage.name, True, config_anchor_files(config))
        log.info("config reloaded from %s", self.path)
        if self.round_started_at is not None:  # the new interval applies, never earlier
            later = self.round_started_at + config.schedule.interval * self._jitter_factor
            if later > self.next_round_at:
                self.next_round_at = later
        return True, "reloaded"

    def health(self) -> tuple[bool, str]:
        """Healthy while rounds keep coming: none for three intervals (plus a minute) means
        stuck, also when no round ever finished (a config that breaks every round)."""
        limit = 3 * self.config.schedule.interval + 60
        if self.latest is None:
            age = time.time() - self.started_at
            if age > limit:
                return False, f"stale: no round finished in {age:.0f}s since start"
            return True, "starting"
        age = time.time() - self.latest.finished
        if age > limit:
            return False, f"stale: last round {age:.0f}s ago"
        return True, "ok"

    def _round_budget(self, config: Config, plans: list[MessengerPlan]) -> float:
        """The interval plus the longest a round can take (round_seconds): past that, a
        round is stuck and the next one starts."""
        return config.schedule.interval + round_seconds(config, plans)

    async def _measure(self, config: Config, work: Work) -> RoundResult:
        planner = self.planner
        # the plan is made once per config (the planner's), shared by the budget and the round
        plans = planner.plans if planner.config is config else plan(config)
        async with asyncio.timeout(self._round_budget(config, plans)):
            result = await run_round(config, only=work.only, sites=work.sites,
                                     transfers=work.transfers, site_states=planner.site_states,
                                     transfer_bytes=planner.transfer_bytes, plans=plans,
                                     residuals=self.residuals,
                                     judged=planner.judged(), screen=work.screen)
        result = replace(result, tier=work.tier)
        planner.bucket.spend(sum(s + r for s, r in result.traffic.values()))
        return result

    async def run_one(self) -> RoundResult | None:
        """One interval's work (probe.serve.schedule): a full round while targets are
        unknown, else the sentinels, a sweep slice and a screening slice, and at once the
        full round of any messenger in which a full-depth measurement saw a change (a
        target only a screening saw change: that target at full depth). None when the
        budget skipped the interval.

        On a budget, what the partial round measured at full depth is published before
        that full round runs (the page's latency is the sentinel's, not the sentinel's
        plus the full round's); a screening publishes nothing of its own. The full round
        is then published as a round of its own. Unlimited: one publication, as before."""
        config = self.config
        planner = self.planner
        started = time.time()
        work = planner.next_work(started)
        if work is None:
            self.metrics.record_budget(config.vantage.name, planner.report(planner.bucket.shed()))
            log.warning("traffic budget spent: interval skipped (sentinels shed)")
            return None
        fresh = [await self._measure(config, work)]
        shed = planner.bucket.shed()
        # published at once only from a round that proved the vantage online (else its
        # changed target reads vantage_offline: the full round decides)
        quick = (planner.bucket.bytes_per_day is not None and "full_rounds" not in shed
                 and fresh[0].network.online)
        changed = planner.absorb(fresh[0], full=work.tier in ("full", "transfers"),
                                 accept=quick or "full_rounds" in shed)
        if changed and "full_rounds" not in shed:
            if quick:
                await self._publish(planner.merged(started, fresh, shed))
                started, fresh = time.time(), []
            # a change is a suspicion: the full round runs the transfers too
            full = planner.follow_up("transfers" not in shed)
            log.info("change seen (%s): full-depth round of %d targets", ", ".join(sorted(changed)),
                     len(full.only or ()))
            got = await self._measure(config, full)
            if not got.network.online and not planner.depth_changed:
                # a screened target alone proved nothing (its failure would read as
                # vantage_offline): its messenger's full round decides
                full = Work("full", planner.messenger_targets(changed), None, "transfers" not in shed)
                got = await self._measure(config, full)
            fresh.append(got)
            planner.absorb(fresh[-1], full=True)
        result = planner.merged(started, fresh, planner.bucket.shed())
        await self._publish(result)
        return result

    async def _publish(self, result: RoundResult) -> None:
        """A round to the sinks: /api/status, the listeners, the metrics, the evidence."""
        config = self.config
        self.latest = result
        self.rounds += 1
        for listener in self.round_listeners:
            listener(result)
        try:
            self.metrics.record_round(result)
            if result.budget is not None:
                self.metrics.record_budget(config.vantage.name, result.budget)
        finally:  # evidence is kept even when the metrics cannot be recorded
            await asyncio.to_thread(self.evidence.append_round, result)

    async def loop(self) -> None:
        """Run rounds until cancelled; a failing round is logged, never fatal."""
        while True:
            started = self.round_started_at = time.time()
            try:
                result = await self.run_one()
                if result is not None:
                    log.info("round %d (%s): %d targets in %.1fs, baseline %s, %d bytes", self.rounds,
                             result.tier, len(result.verdicts), result.duration,
                             "ok" if result.baseline.ok else "DOWN",
                             sum(s + r for s, r in result.traffic.values()))
            except TimeoutError:
                log.error("round did not finish within its budget; starting the next one")
            except Exception:
                log.exception("round failed; the next one runs on schedule")
            schedule = self.config.schedule
            self._jitter_factor = 1 + random.uniform(-schedule.jitter, schedule.jitter)
            self.next_round_at = started + schedule.interval * self._jitter_factor
            delay = self.next_round_at - time.time()
            if delay <= 0:
                self.metrics.overruns.labels(self.config.vantage.name).inc()
                log.warning("round overran the interval by %.1fs", -delay)
                continue
            # a reload may move next_round_at later (never earlier): sleep until it holds
            while (delay := self.next_round_at - time.time()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

