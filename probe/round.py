"""One round: the baseline, then every check of every target, under one concurrency cap.

The round is the unit of a verdict: the classifier sees all of a round's observations at
once, so it can correlate steps (DNS with TLS on the answer, TLS with the neutral SNI,
every target with the baseline). Steps of one target run in order; targets run
concurrently, at most `schedule.concurrency` checks in flight.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from typing import Any, TypeVar

import aiohttp
import yaml

from probe.catalog import DCTarget, DomainTarget, MessengerPlan, plan
from probe.checks.dns import AnswerPolicy, ResolverSpec, check_dns, system_resolvers
from probe.checks.http import Blockpage, check_http
from probe.checks.mtproto import check_mtproto, check_plain_http
from probe.checks.net import Source
from probe.checks.tcp import check_tcp
from probe.checks.tls import check_tls, client_context
from probe.config import BaselineTarget, Config
from probe.observation import Observation, Verdict

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (checks done, checks planned)


@dataclass
class Baseline:
    """Whether the vantage's own network works, per address family."""

    ipv4: bool = False
    ipv6: bool = False
    throughput_bps: float | None = None

    @property
    def ok(self) -> bool:
        return self.ipv4 or self.ipv6

    def family_ok(self, family: int) -> bool:
        return self.ipv6 if family == 6 else self.ipv4

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "ipv4": self.ipv4, "ipv6": self.ipv6,
                "throughput_bps": self.throughput_bps}


@dataclass
class RoundResult:
    """Everything one round produced, in the order the sinks need it."""

    config: Config
    plans: list[MessengerPlan]
    started: float
    finished: float = 0.0
    baseline: Baseline = field(default_factory=Baseline)
    loop_lag_max: float = 0.0  # the longest event-loop lag seen while the round ran
    observations: list[Observation] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.finished - self.started


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


class Round:
    """Runs one round for a config. Create one per round; it is not reusable."""

    def __init__(self, config: Config, progress: Progress | None = None) -> None:
        self.config = config
        self.plans = plan(config)
        self.timeouts = config.schedule.timeouts
        self.source = Source(
            str(config.vantage.source_address) if config.vantage.source_address else None,
            str(config.vantage.source_address6) if config.vantage.source_address6 else None,
        )
        self.context = client_context(config.tls.ca_file)
        self.resolvers = resolver_specs(config)
        dns_fp, self.blockpages = fingerprints()
        self.policy = AnswerPolicy(dns_fp, tuple(config.resolvers.public_networks))
        self._semaphore = asyncio.Semaphore(config.schedule.concurrency)
        self._progress = progress
        self._done = 0
        self._planned = 0
        self.result = RoundResult(config, self.plans, time.time())

    async def _limited(self, step: Awaitable[T]) -> T:
        async with self._semaphore:
            value = await step
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, self._planned)
        return value

    def _http_options(self) -> dict[str, Any]:
        return {
            "context": self.context, "timeout": self.timeouts.http,
            "max_bytes": self.config.http.max_bytes,
            "transfer_seconds": self.config.http.transfer_seconds,
            "blockpages": list(self.blockpages),
        }

    async def _baseline_site(self, site: BaselineTarget) -> Observation:
        address = str(site.address)
        if site.sni is None:
            return await check_tcp(None, site.name, address, site.port, self.timeouts.connect,
                                   self.source)
        observations = await check_tls(None, site.name, address, site.port, site.sni, site.sni,
                                       context=self.context, timeout=self.timeouts.tls,
                                       source=self.source, explain=False)
        return observations[0]

    async def _baseline(self) -> list[Observation]:
        steps = [self._limited(self._baseline_site(t)) for t in self.config.baseline.targets]
        observations = list(await asyncio.gather(*steps))
        baseline = self.result.baseline
        for target, obs in zip(self.config.baseline.targets, observations, strict=True):
            if obs.ok:
                if target.address.version == 4:
                    baseline.ipv4 = True
                else:
                    baseline.ipv6 = True
        url = self.config.baseline.throughput_url
        if url and baseline.ok:
            obs = await self._limited(check_http(None, "baseline-throughput", url, None,
                                                 **self._http_options()))
            observations.append(obs)
            if obs.ok and obs.details.get("bytes"):
                baseline.throughput_bps = obs.details["throughput_bps"]
        return observations

    async def _dc(self, target: DCTarget) -> list[Observation]:
        address = str(target.address)
        tcp = await self._limited(check_tcp(target.messenger, target.name, address, target.port,
                                            self.timeouts.connect, self.source))
        if not tcp.ok:
            return [tcp]
        mtproto = await self._limited(check_mtproto(
            target.messenger, target.name, address, target.port, self.timeouts.mtproto,
            self.source))
        if mtproto.ok:
            return [tcp, mtproto]
        differential = await self._limited(check_plain_http(
            target.messenger, target.name, address, target.port, self.timeouts.mtproto,
            self.source))
        return [tcp, mtproto, differential]

    async def _domain(self, target: DomainTarget, mplan: MessengerPlan) -> list[Observation]:
        lookups = [
            self._limited(check_dns(
                target.messenger, target.name, target.domain, target.family, spec,
                timeout=self.timeouts.dns, race_window=self.config.resolvers.race_window,
                policy=self.policy, in_space=mplan.in_address_space, session=self._session,
                source=self.source,
            ))
            for spec in self.resolvers
        ]
        if not lookups:
            return []
        observations: list[Observation] = list(await asyncio.gather(*lookups))
        primary = next((o for o in observations if not o.details["control"]), observations[0])
        for obs in observations:
            obs.aux = obs is not primary
        address = _chosen_address(observations)
        if address is None:
            return observations
        tcp = await self._limited(check_tcp(target.messenger, target.name, address, target.port,
                                            self.timeouts.connect, self.source))
        observations.append(tcp)
        if not tcp.ok:
            return observations
        tls = await self._limited(check_tls(
            target.messenger, target.name, address, target.port, target.domain, target.neutral_sni,
            context=self.context, timeout=self.timeouts.tls, source=self.source,
        ))
        observations += tls
        # an https URL behind a failed handshake would only fail the same way again
        if target.url and (tls[0].ok or target.url.startswith("http:")):
            observations.append(await self._limited(check_http(
                target.messenger, target.name, target.url, address,
                source=self.source.for_version(target.family),
                **self._http_options(),
            )))
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

    async def run(self) -> RoundResult:
        """Run every step; the classifier is applied by the caller's pipeline."""
        self._planned = len(self.config.baseline.targets) + sum(
            2 * len(p.dc_targets) + len(p.domain_targets) * (len(self.resolvers) + 3)
            for p in self.plans
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.context, limit=4)
        ) as self._session:
            jobs: list[Callable[[], Awaitable[list[Observation]]]] = [self._baseline]
            for mplan in self.plans:
                jobs += [partial(self._dc, t) for t in mplan.dc_targets]
                jobs += [partial(self._domain, t, mplan) for t in mplan.domain_targets]
            groups: list[list[Observation]] = [[] for _ in jobs]
            queue = iter(enumerate(jobs))

            # A pool of workers, not a task per target: at 10,000 targets the tasks and
            # their coroutines would all exist at once, for nothing but waiting.
            async def worker() -> None:
                for index, job in queue:
                    groups[index] = await job()

            workers = min(self.config.schedule.concurrency, len(jobs))
            monitor = asyncio.create_task(self._watch_loop_lag())
            try:
                await asyncio.gather(*(worker() for _ in range(workers)))
            finally:
                monitor.cancel()
        observations = self.result.observations
        for group in groups:
            for obs in group:
                obs.id = len(observations)
                observations.append(obs)
        self.result.finished = time.time()
        return self.result


def _chosen_address(observations: list[Observation]) -> str | None:
    """The address the rest of a domain's checks use: what the user's resolver said.

    The first non-control resolver that answered; if none did, the control resolver's
    answer, so that an IP block behind a DNS block is still seen.
    """
    for control in (False, True):
        for obs in observations:
            if obs.details.get("control") == control and obs.details.get("answers"):
                answers: list[str] = obs.details["answers"]
                return answers[0]
    return None


async def run_round(config: Config, progress: Progress | None = None) -> RoundResult:
    """Run a round and classify it: the whole pipeline short of the sinks."""
    from probe.classify import classify_round

    result = await Round(config, progress).run()
    result.verdicts = classify_round(result)
    return result
