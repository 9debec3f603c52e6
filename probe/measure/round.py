"""One round: the baseline, then every check of every target, under one concurrency cap.

The round is the unit of a verdict: the classifier sees all of a round's observations at
once, so it can correlate steps (DNS with TLS on the answer, TLS with the neutral SNI,
every target with the baseline). Steps of one target run in order; targets run
concurrently, at most `schedule.concurrency` checks in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import cache, partial
from importlib import resources
from typing import TYPE_CHECKING

import yaml

from probe.inputs.catalog import StepSpec, Target
from probe.inputs.config import Config
from probe.inputs.plan import MessengerPlan, baseline_targets, plan
from probe.judge.classify import classify_round
from probe.judge.residual import ResidualMemory
from probe.judge.residual import find as find_residuals
from probe.judge.vantage import (
    LOST,
    MAX_SAMPLES_PER_SITE,
    baseline_up,
    connect_level,
    connectivity,
    judge,
    quality,
    samples_needed,
    samples_to_decide,
    service_steps,
    site_answered,
    troubled_counts,
)
from probe.measure.checks import REGISTRY
from probe.measure.checks.base import AnswerPolicy, Blockpage, Env, ResolverSpec, Retry, Step, TrustStore
from probe.measure.checks.dns import chosen_address, system_resolvers
from probe.measure.wire.net import METER, Ledger, Meter, Source, metered_socket_factory, settle_all
from probe.model.observation import Attempt, Observation, Role, RoundDraft, RoundResult

if TYPE_CHECKING:
    import aiohttp

Progress = Callable[[int, int], None]  # (checks done, checks planned)
Job = Callable[[], Awaitable[list[Observation]]]  # one target's steps (or the baseline's)
SAMPLE_STAGGER = 0.02  # seconds between the starts of a baseline site's samples


@cache
def fingerprints() -> tuple[dict[str, str], tuple[Blockpage, ...]]:
    """Known DNS injection addresses and HTTP blockpage patterns (probe/data)."""
    text = (resources.files("probe") / "data" / "fingerprints.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    dns_fp = {str(ipaddress.ip_address(e["address"])): e["name"] for e in data["dns"]}
    return dns_fp, tuple(Blockpage(e["name"], e["pattern"]) for e in data["http"])


def resolver_specs(config: Config) -> list[ResolverSpec]:
    """The resolvers a round asks, in order: system, configured servers, control."""
    specs = system_resolvers(str(config.resolvers.resolv_conf)) if config.resolvers.system else []
    for control, group in ((False, config.resolvers.servers), (True, config.resolvers.control)):
        for r in group:
            protocol = "doh" if r.url else r.protocol
            address = str(r.address) if r.address is not None else None
            specs.append(ResolverSpec(r.name, protocol, address, r.port, r.url, control))
    return specs


def base_env(config: Config) -> Env:
    """What every check of a round shares; each check gets it with its own timeout."""
    vantage = config.vantage
    dns_fp, blockpages = fingerprints()
    return Env(
        source=Source(str(vantage.source_address) if vantage.source_address else None,
                      str(vantage.source_address6) if vantage.source_address6 else None),
        trust=TrustStore(config.tls.ca_file, config.tls.trust),
        timeout=0.0,
        resolvers=tuple(resolver_specs(config)),
        policy=AnswerPolicy(dns_fp, tuple(config.resolvers.public_networks)),
        race_window=config.resolvers.race_window,
        blockpages=blockpages,
        http_max_bytes=config.http.max_bytes,
        http_transfer_seconds=config.http.transfer_seconds,
        retry=Retry(config.schedule.confirm.attempts, config.schedule.confirm.spacing),
    )


def _needs(spec: StepSpec, target: Target, earlier: list[str]) -> list[str]:
    """The steps that must have succeeded before `spec` runs.

    By default every earlier step that connects somewhere (a failed lookup stops nothing
    while some resolver gave an address: the address is what later steps need). A plain
    http:// URL does not need the TLS handshake before it.
    """
    needs = spec.needs if spec.needs is not None else [
        c for c in earlier if REGISTRY[c].needs_address]
    if spec.check == "http" and (target.url or "").startswith("http:"):
        needs = [n for n in needs if n != "tls"]
    return needs


_NO_LOCK = contextlib.nullcontext()


def _deciding(observations: list[Observation], role: Role) -> Observation | None:
    """The observation of a step that speaks for it (the primary resolver's, not a control's)."""
    return next((o for o in observations if o.role == role), None)


def is_transfer(check: str) -> bool:
    """Whether a check is a transfer (a throughput measurement): the costly kind, run only
    in rounds that ask for transfers."""
    return REGISTRY[check].spec.transfer


Signature = tuple[tuple[str, str, str], ...]

#: The checks a screening measures (a few hundred bytes a target): the lookup at the
#: vantage's own resolver, without the control resolvers, and the TCP connect.
SCREEN_CHECKS = ("dns", "tcp")


def signature(observations: Iterable[Observation]) -> Signature:
    """What a target's measurement came to, step by step: (check, role, failure) of its
    primary and control observations. Differentials only explain a failure; a change of
    the failure already shows in the primary. Transfers are left out: most rounds do not
    run them."""
    return tuple(sorted({(o.check, o.role, o.failure or "") for o in observations
                         if o.role != "differential" and not is_transfer(o.check)}))


def screen_view(sig: Signature, checks: Collection[str] = SCREEN_CHECKS) -> Signature:
    """The part of a signature a screening can see: its primary lookup and connect (only
    the `checks` the screening got to: a lookup that gave no address stops it)."""
    return tuple(e for e in sig if e[1] == "primary" and e[0] in checks)


#: A handshake this much slower than its round trips explain had a segment recovered by a
#: retransmission timer (Linux's minimum RTO is 200 ms; a lost SYN or SYN-ACK costs 1 s).
RECOVERY_SECONDS = 0.2
#: Round trips a TCP connect and TLS handshake take without loss (TLS 1.2's included).
HANDSHAKE_RTTS = 4


def _slow(duration: float, figures: Mapping[str, object]) -> bool:
    """A connect or handshake that took a retransmission timer longer than its kernel RTT
    explains: loss the client's own count cannot show (a lost SYN-ACK or server flight
    that the server resent first: loss on the downlink only)."""
    rtt = figures.get("tcp_rtt_seconds")
    if rtt is None:
        return False  # not a handshake this side timed (no TCP_INFO)
    return duration >= RECOVERY_SECONDS + HANDSHAKE_RTTS * float(rtt)  # type: ignore[arg-type]


def _unsteady(obs: Observation) -> bool:
    """An attempt that timed out (any step: the loss test weighs every timed-out failure
    against the baseline), or a connect-level one that needed a retransmission or was slow
    by a retransmission timer: what makes the loss test need a real sample of the baseline.
    A single handshake per site sees downlink-only loss rarely by its own retransmissions
    (the server resends a lost SYN-ACK or flight; 25% downlink loss made rounds without a
    sample 3 in 5 in the lab), so slowness counts too. A false alarm costs a sample, never
    a verdict: the verdicts and the degraded mark come from the sample itself."""
    tries = obs.tries()
    if any(a.failure in LOST for a in tries):
        return True
    if not connect_level(obs.check):
        return False
    figures = obs.details.get("samples", [obs.details])
    if any(int(f.get("tcp_retransmits", 0)) > 0 for f in figures):
        return True
    if any(float(age) >= obs.duration_seconds + RECOVERY_SECONDS
           for age in obs.details.get("overtaken_seconds", ())):
        return True  # a later attempt's success overtook one waiting a retransmission timer
    if "samples" not in obs.details:  # a target's step: its figures are the kept attempt's
        return obs.ok and _slow(obs.duration_seconds, obs.details)
    return any(a.failure is None and _slow(a.duration_seconds, f)
               for a, f in zip(tries, figures, strict=False))


def _stamp(times: dict[int, tuple[float, Meter]], index: int, loop: asyncio.AbstractEventLoop,
           meter: Meter) -> None:
    times[index] = (loop.time(), meter)


class Round:
    """Runs one round for a config. Create one per round; it is not reusable.

    A round may cover part of the plan: `only` names the targets it measures (all when
    None), `sites` the baseline sites it samples (all when None; the others count as
    `site_states` last saw them), and `transfers` says
    whether transfer checks (throughput) run. Bytes on the wire are counted per messenger
    ("baseline" for the baseline's) in `result.traffic`, and per check in each step's
    first observation (details bytes_sent / bytes_received).
    """

    def __init__(self, config: Config, progress: Progress | None = None, *,
                 only: Collection[str] | None = None, sites: Collection[str] | None = None,
                 transfers: bool = True, site_states: Mapping[str, bool] | None = None,
                 transfer_bytes: int | None = None,
                 plans: Sequence[MessengerPlan] | None = None,
                 judged: Mapping[str, Signature] | None = None,
                 screen: Collection[str] = ()) -> None:
        self.config = config
        self.plans = list(plan(config) if plans is None else plans)  # the caller's, when it made one
        self.screen = set(screen) - set(only or ())
        self.targets = [t for p in self.plans for t in p.targets
                        if only is None or t.name in only or t.name in self.screen]
        self.judged = dict(judged or {})
        self.all_sites = baseline_targets(config)
        self.baseline = [t for t in self.all_sites if sites is None or t.name in sites]
        self.site_states = dict(site_states or {})
        self.transfers = transfers
        self.ledger = Ledger()
        self.env = base_env(config)
        if transfer_bytes is not None:  # a budget caps what each transfer reads
            self.env = replace(self.env, http_max_bytes=min(self.env.http_max_bytes, transfer_bytes))
        self._envs: dict[str, Env] = {}
        self._semaphore = asyncio.Semaphore(config.schedule.concurrency)
        self._transfers = asyncio.Lock()
        self._progress = progress
        self._done = 0
        self._planned = 0
        self.result = RoundDraft(config.vantage.identity(), self.targets, time.time())
        self.result.transfers_ran = transfers
        self.result.screened = tuple(sorted(self.screen))

    async def _once(self, check: str, step: Step, screening: bool = False,
                    begun: Callable[[Meter], None] | None = None) -> list[Observation]:
        # Transfers measure throughput: one at a time (the baseline's included), so that
        # a shared bottleneck is not read as the service being throttled.
        meter = Meter(step.target.messenger or "baseline", self.ledger)
        token = METER.set(meter)
        transfer = is_transfer(check)
        try:
            async with self._semaphore, (self._transfers if transfer else _NO_LOCK):
                if begun is not None:
                    begun(meter)  # the check itself starts now (a slot of the cap was free)
                env = self._envs[check]
                if screening and check == "dns":  # the vantage's own resolver only
                    env = replace(env, resolvers=tuple(
                        r for r in env.resolvers if not r.control)[:1] or env.resolvers[:1])
                got = await REGISTRY[check].run(step, env)
            if transfer:  # an asyncio transport closes its socket on the next turn
                await asyncio.sleep(0)
        finally:
            METER.reset(token)
        if got:
            got[0].details["bytes_sent"] = meter.sent
            got[0].details["bytes_received"] = meter.received
        return got

    async def _run(self, check: str, step: Step, screening: bool = False) -> list[Observation]:
        """Run a step; confirm a failure of its primary (or control) observation the way
        a client retries: a new attempt every `schedule.confirm.spacing` seconds while none
        has succeeded (the next one starts even while an earlier one still hangs, as the
        apps open a second connection), up to `attempts` in all, stopping at the first
        success. A blackholed step so takes one timeout plus the spacings, not `attempts`
        timeouts. The observation kept carries every attempt that finished, in the order
        they started; when all failed it is the first (the most telling: a reset that later
        attempts only see as a residual drop)."""
        if not REGISTRY[check].spec.confirmed or step.role == "differential" or self.env.retry.attempts < 2:
            observations = await self._once(check, step, screening)
        else:
            observations = await self._confirmed(check, step, screening)
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, self._planned)
        return observations

    async def _confirmed(self, check: str, step: Step, screening: bool = False) -> list[Observation]:
        retry = self.env.retry
        loop = asyncio.get_running_loop()
        started = loop.time()
        running: dict[asyncio.Task[list[Observation]], int] = {}
        finished: dict[int, list[Observation]] = {}
        success: list[Observation] | None = None
        launched = 0
        # when each attempt's check began (past the concurrency cap: one still waiting for
        # a slot has sent nothing, whatever a later one did meanwhile)
        begun: dict[int, tuple[float, Meter]] = {}
        overtaken: list[float] = []  # ages of the attempts still running at the success
        try:
            while success is None:
                due = started + launched * retry.spacing if launched < retry.attempts else None
                if due is not None and loop.time() >= due:
                    running[asyncio.create_task(self._once(
                        check, step, screening, partial(_stamp, begun, launched, loop)))] = launched
                    launched += 1
                    continue
                if not running:
                    if due is None:
                        break
                    await asyncio.sleep(due - loop.time())
                    continue
                timeout = None if due is None else max(0.0, due - loop.time())
                done, _ = await asyncio.wait(running, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=running.__getitem__):
                    index = running.pop(task)
                    finished[index] = task.result()
                    main = _deciding(finished[index], step.role)
                    if success is None and (main is None or main.ok):
                        success = finished[index]
                        now = loop.time()
                        # only those still connecting: their SYN or SYN-ACK was lost. One
                        # connected and still waiting has a slow server (a busy one answers
                        # connections out of order), which is no loss
                        overtaken = [round(now - begun[i][0], 3) for t, i in running.items()
                                     if t not in done and i in begun and not begun[i][1].connected]
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        kept = success if success is not None else finished[min(finished)]
        if kept:  # every finished attempt's bytes, on the observation kept
            for key in ("bytes_sent", "bytes_received"):
                kept[0].details[key] = sum(got[0].details.get(key, 0)
                                           for got in finished.values() if got)
        main = _deciding(kept, step.role)
        if main is not None and overtaken:
            # attempts the success overtook (cancelled, so never finished): each had waited
            # this long without an answer, which the service's loss test reads
            # (probe.judge.vantage.troubled)
            main.details["overtaken_seconds"] = overtaken
        if main is not None and len(finished) > 1:
            tries = [_deciding(finished[i], step.role) for i in sorted(finished)]
            main.attempts = [Attempt(o.failure, o.started, o.duration_seconds, o.connect_seconds)
                             for o in tries if o is not None]
        return kept

    async def _target(self, target: Target) -> list[Observation]:
        """Run a target's steps in plan order; a step whose needs failed is skipped."""
        role: Role = "primary" if target.messenger is not None else "control"
        observations: list[Observation] = []
        outcome: dict[str, Observation] = {}
        earlier: list[str] = []
        address = target.address
        screening = target.name in self.screen
        for spec in target.steps:
            if REGISTRY[spec.check].needs_address and address is None and target.domain:
                break  # no resolver gave an address: nothing further can be tried
            if not self.transfers and is_transfer(spec.check):
                continue  # a round without transfers: the step is not measured
            if screening and spec.check not in SCREEN_CHECKS:
                continue  # a screening: the lookup and the connect only
            needs = _needs(spec, target, earlier)
            earlier.append(spec.check)
            if any(n in earlier and not (n in outcome and outcome[n].ok) for n in needs):
                continue
            step = Step(target, spec.check, role, address, spec.options)
            if screening:
                got = await self._run(spec.check, step, screening=True)
                observations += got
                if spec.check == "dns":
                    address = chosen_address(got)
                main = next((o for o in got if o.role == role), None)
                if main is not None:
                    outcome[spec.check] = main
                continue
            for name in spec.before:
                observations += await self._run(name, replace(step, role="differential"))
            got = await self._run(spec.check, step)
            observations += got
            if spec.check == "dns":
                address = chosen_address(got)
            main = next((o for o in got if o.role == role), None)
            if main is None:
                continue
            outcome[spec.check] = main
            if not main.ok:
                for name in spec.differentials:
                    observations += await self._run(
                        name, replace(step, role="differential", explains=main))
        return observations

    async def _pool(self, jobs: list[Job]) -> list[list[Observation]]:
        """Run jobs with at most `concurrency` workers, results in job order. A pool of
        workers, not a task per job: at 10,000 targets the tasks, their coroutines and
        semaphore waiters would all exist at once, for nothing but waiting."""
        groups: list[list[Observation]] = [[] for _ in jobs]
        queue = iter(enumerate(jobs))

        async def worker() -> None:
            for index, job in queue:
                groups[index] = await job()

        workers = min(self.config.schedule.concurrency, len(jobs))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return groups

    async def _handshakes(self, target: Target, count: int) -> list[Observation]:
        """A baseline site's step `count` times at once (slightly staggered)."""
        spec = target.steps[0]
        step = Step(target, spec.check, "control", target.address, spec.options)

        async def one(index: int) -> list[Observation]:
            await asyncio.sleep(index * SAMPLE_STAGGER)
            return await self._once(spec.check, step)

        return [g[0] for g in await asyncio.gather(*(one(i) for i in range(count))) if g]

    async def _sample(self, target: Target, count: int = 1,
                      earlier: list[Observation] | None = None) -> list[Observation]:
        """A baseline site's handshakes as one observation whose attempts are the samples
        (the site answered when any did), with the kernel's RTT and retransmissions of each
        in details["samples"]. The sample is what the vantage's loss is measured on
        (probe.judge.vantage). `earlier` are handshakes already made this round, which the
        new ones add to."""
        got = [*(earlier or []), *await self._handshakes(target, count)]
        if earlier is None:
            self._done += 1
            if self._progress is not None:
                self._progress(self._done, self._planned)
        if not got:
            return []
        kept = next((o for o in got if o.ok), got[0])
        for o in got:
            if o is not kept:
                for key in ("bytes_sent", "bytes_received"):
                    kept.details[key] = kept.details.get(key, 0) + o.details.get(key, 0)
        kept.attempts = [Attempt(o.failure, o.started, o.duration_seconds) for o in got]
        kept.details["samples"] = [
            {k: o.details[k] for k in ("tcp_rtt_seconds", "tcp_retransmits", "tcp_segments_out")
             if k in o.details} for o in got]
        return [kept]

    async def _first_sample(self) -> list[list[Observation]]:
        """One handshake per site: when every target answers, that proves the vantage
        online; more are taken (`_more_samples`) only when the loss test needs them."""
        return await self._pool([partial(self._sample, t) for t in self.baseline])

    async def _more_samples(self, first: list[list[Observation]],
                            targets: list[list[Observation]]) -> list[list[Observation]]:
        """Sample the baseline up to its full size (`_sample_sizes`) per site when the loss
        test has something to decide: some connect-level attempt of the service, or a
        baseline handshake, timed out or needed a retransmission. Otherwise the single
        handshakes stand: nothing was lost that loss would have to explain.

        A failure already judged (`judged`: the target's steps came to the same as in the
        round that gave its verdict, full sample and all) asks no new sample: its verdict
        stands, the loss test's answer is reused (`result.loss_reused`). Whenever no full
        sample is taken, a round with a failing target takes one handshake per site of
        the target's family that it has not sampled, for the round to prove the vantage
        online there, unless something else in the round already did. A screening
        (`screen`) asks none: it only says whether to measure in full."""
        if self.config.baseline.samples < 2:
            return first  # no sample asked for (the bench's one handshake per check)
        size = self._sample_sizes([o for t, group in zip(self.targets, targets, strict=True)
                                   if t.name not in self.screen for o in group])
        seen = [o for group in first for o in group]
        reused: list[Target] = []
        failing: list[Target] = []
        for target, group in zip(self.targets, targets, strict=True):
            if target.name in self.screen:
                continue
            mine = [o for o in group if o.primary]
            if any(not o.ok for o in mine):
                failing.append(target)
            sig = self.judged.get(target.name)
            if sig is not None and any(e[2] for e in sig) and sig == signature(group):
                if any(_unsteady(o) for o in mine):
                    reused.append(target)
                continue
            seen += mine
        if not any(_unsteady(o) for o in seen):
            self.result.loss_reused = tuple(t.name for t in reused)
            # a round that samples no site (probe run's paced rounds) and has a target
            # failing must still prove the vantage online in its family, or a refused
            # sentinel would read as vantage_offline: one handshake per site there
            proven = connectivity([o for g in (*first, *targets) for o in g],
                                  self.config.resolvers.public_networks,
                                  self.result.vantage.addresses)
            families = {t.family for t in failing if not proven.get(t.family)}
            extra = [t for t in self.all_sites
                     if t.family in families and t not in self.baseline]
            if not extra:
                return first
            more = await asyncio.gather(*(self._sample(t, 1, []) for t in extra))
            self.baseline = [*self.baseline, *extra]
            return [*first, *more]
        singles = [[self._single(o) for o in group] for group in first]
        # sites this round had left out are sampled too: the loss test needs every family's
        unsampled = [t for t in self.all_sites if t not in self.baseline]
        got = await asyncio.gather(
            *(self._sample(t, size[t.name] - 1, earlier)
              for t, earlier in zip(self.baseline, singles, strict=True)),
            *(self._sample(t, size[t.name], []) for t in unsampled))
        self.baseline = [*self.baseline, *unsampled]
        return list(got)

    def _sample_sizes(self, targets: Sequence[Observation] = ()) -> dict[str, int]:
        """Handshakes per site in a full sample: `baseline.samples`, or more when the
        family's sites would otherwise hold too few for the loss test to tell a target
        whose every attempt timed out from loss at this round's number of targets
        (probe.judge.vantage.samples_needed; at most MAX_SAMPLES_PER_SITE). Without
        this, a grown catalogue silently turned every lone blocked target into
        `loss_shared_with_baseline`. More again, up to a family's MAX_SAMPLES_FOR_LOSS,
        when the service's attempts of this round (`targets`) timed out or were
        retransmitted more often than a smaller clean sample could ever show as
        concentrated (samples_to_decide): 30% loss targeted at the DCs read `ok` against
        40 handshakes."""
        depth = sum(t.name not in self.screen for t in self.targets)
        needed = samples_needed(depth, self.config.schedule.confirm.attempts)
        troubled = {key: troubled_counts(group) for key, group in service_steps(targets).items()}
        sizes: dict[str, int] = {}
        for family in (4, 6):
            sites = [t for t in self.all_sites if t.family == family]
            if not sites:
                continue
            have = max(needed, self.config.baseline.samples * len(sites))
            wanted = max([needed, *(samples_to_decide(counts, have)
                                    for (_, f), counts in troubled.items() if f == family)])
            per_site = min(MAX_SAMPLES_PER_SITE, -(-wanted // len(sites)))
            for t in sites:
                sizes[t.name] = max(self.config.baseline.samples, per_site)
        return sizes

    @staticmethod
    def _single(obs: Observation) -> Observation:
        """A site's first handshake as a plain observation again (its sample of one)."""
        obs.attempts = []
        obs.details.pop("samples", None)
        return obs

    async def _baseline(self, groups: list[list[Observation]]) -> list[Observation]:
        observations = [o for group in groups for o in group]
        result = self.result
        network = result.network
        for target, group in zip(self.baseline, groups, strict=True):
            network.baseline_sites[target.name] = site_answered(group)
        # sites this round did not sample count as they were last seen (never seen: down)
        for t in self.all_sites:
            if t.name not in network.baseline_sites and t.name in self.site_states:
                network.baseline_sites[t.name] = self.site_states[t.name]
        sites = [(t.family, network.baseline_sites.get(t.name, False)) for t in self.all_sites]
        up = baseline_up(sites, self.config.baseline.require)
        result.baseline.ipv4, result.baseline.ipv6 = up[4], up[6]
        network.baseline_ok = result.baseline.ok
        measured = quality(observations)
        network.loss_ratio, network.rtt_seconds = measured.loss_ratio, measured.rtt_seconds
        network.retransmit_ratio, network.retried_ratio = measured.retransmit_ratio, measured.retried_ratio
        network.degraded = measured.degraded
        url = self.config.baseline.throughput_url
        if url and result.baseline.ok and self.transfers:
            throughput = Target(messenger=None, name="baseline-throughput", group="baseline",
                                endpoint="baseline-throughput",
                                family=6 if url.startswith("http://[") else 4, port=0, address=None,
                                domain=None, url=url, sni=None, trust="system",
                                steps=(StepSpec(check="http"),))
            got = await self._target(throughput)
            observations += got
            if got and got[0].ok and got[0].details.get("bytes"):
                result.baseline.throughput_bps = got[0].details["throughput_bps"]
        return observations

    async def _watch_loop_lag(self, tick: float = 0.05) -> None:
        """Wake every `tick` and record how late the wake-up came: a busy loop delays every
        callback, and with it any duration a check measures in user space."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(tick)
            lag = loop.time() - before - tick
            self.result.loop_lag_max = max(self.result.loop_lag_max, lag)

    @contextlib.asynccontextmanager
    async def _http_session(self) -> AsyncIterator[aiohttp.ClientSession | None]:
        """The HTTP session DoH resolvers share; None (and aiohttp never imported) when the
        round has none: the HTTP client is a large part of a round's memory."""
        if not any(r.protocol == "doh" for r in self.env.resolvers):
            yield None
            return
        import aiohttp

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.env.trust.context("system"), limit=4,
                                           socket_factory=metered_socket_factory)
        ) as session:
            yield session

    async def run(self) -> RoundDraft:
        """Run every step and judge the vantage's network; the classifier is applied by the
        caller's pipeline (run_round)."""
        self._planned = sum(len(t.steps) for t in (*self.baseline, *self.targets))
        timeouts = self.config.schedule.timeouts
        async with self._http_session() as session:
            self._envs = {name: replace(self.env, timeout=timeouts.of(name), session=session)
                          for name in REGISTRY}
            jobs: list[Job] = [partial(self._target, t) for t in self.targets]
            monitor = asyncio.create_task(self._watch_loop_lag())
            try:
                first, groups = await asyncio.gather(self._first_sample(), self._pool(jobs))
                sampled = await self._more_samples(first, groups)
                groups.insert(0, await self._baseline(sampled))
            finally:
                monitor.cancel()
                settle_all()  # the session's pooled connections, before they are closed
        # the session's pooled connections are closed (and counted) by now
        self.result.traffic = {k: (v[0], v[1]) for k, v in sorted(self.ledger.totals.items())}
        observations = self.result.observations
        for group in groups:
            for obs in group:
                obs.id = len(observations)
                observations.append(obs)
        self.result.finished = time.time()
        # online is proven by the whole round, not the baseline
        judge(self.result, self.baseline, self.config.resolvers.public_networks,
              {s.name for s in self.config.baseline.targets if s.kind == "domestic"})
        return self.result


async def run_round(config: Config, progress: Progress | None = None, *,
                    only: Collection[str] | None = None, sites: Collection[str] | None = None,
                    transfers: bool = True, site_states: Mapping[str, bool] | None = None,
                    transfer_bytes: int | None = None,
                    plans: Sequence[MessengerPlan] | None = None,
                    residuals: ResidualMemory | None = None,
                    judged: Mapping[str, Signature] | None = None,
                    screen: Collection[str] = ()) -> RoundResult:
    """Run a round and classify it: the whole pipeline short of the sinks. `plans`: the
    config's plan when the caller has made it already (one plan per round). `residuals`:
    the residual drops earlier rounds saw (a running probe's), updated with this round's.
    `judged`: targets whose failure was judged, with the signature it was judged on (no
    new loss sample for them); `screen`: targets measured at the screening level only
    (their verdicts are no verdicts: the caller compares their steps,
    probe.serve.schedule; their observations teach the residual memory nothing)."""
    draft = await Round(config, progress, only=only, sites=sites, transfers=transfers,
                        site_states=site_states, transfer_bytes=transfer_bytes, plans=plans,
                        judged=judged, screen=screen).run()
    screened = set(draft.screened)
    observations = [o for o in draft.observations if o.target not in screened]
    earlier = residuals.recall(draft.started) if residuals is not None else {}
    found = find_residuals(observations, earlier)
    if residuals is not None:
        residuals.learn(observations, found, draft.finished)
    return draft.judged(classify_round(draft, found))
