"""`probe run`: rounds on a schedule, the HTTP server, reloads and a clean shutdown.

Rounds never overlap: the next starts `interval` (plus jitter) after the previous one
started, or at once when a round overran, and the overrun is counted. A reload (SIGHUP or
POST /-/reload) validates the new file first; a bad one is refused, reported in metrics
and logs, and the running config stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from probe.config import Config, ConfigError, load_config
from probe.evidence import EvidenceCollector, EvidenceLog
from probe.metrics import Metrics
from probe.observation import RoundResult
from probe.plan import baseline_targets, plan, worst_case_seconds
from probe.round import run_round

log = logging.getLogger("probe")


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (all interfaces) or '[V6]:PORT'; ValueError names what is wrong."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT, :PORT or [IPV6]:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class Service:
    """The scheduler and its state, shared with the HTTP handlers."""

    def __init__(self, path: Path, config: Config, metrics: Metrics | None = None) -> None:
        self.path = path
        self.config = config
        self.metrics = metrics or Metrics()
        self.evidence = EvidenceLog.for_config(config)
        self.metrics.registry.register(
            EvidenceCollector(lambda: self.evidence, lambda: self.config.vantage.name))
        self.latest: RoundResult | None = None
        self.round_listeners: list[Callable[[RoundResult], None]] = []  # the status page's history
        self.last_reload_error: str | None = None
        self.next_round_at: float = time.time()
        self.rounds = 0
        self._wake = asyncio.Event()
        self.metrics.config_loaded(config.vantage.name, True)

    def reload(self) -> tuple[bool, str]:
        """Load the config file again; keep the old config if the new one is bad."""
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self.last_reload_error = str(exc)
            self.metrics.config_loaded(self.config.vantage.name, False)
            log.error("reload refused, keeping the running config: %s", exc)
            return False, str(exc)
        self.config = config
        self.evidence.configure(config)
        self.last_reload_error = None
        self.metrics.config_loaded(config.vantage.name, True)
        log.info("config reloaded from %s", self.path)
        self._wake.set()  # the new schedule applies from the next round
        return True, "reloaded"

    def _round_budget(self, config: Config) -> float:
        """The interval plus the longest chain of steps any one target (or the baseline)
        can take: past that, a round is stuck and the next one starts."""
        t = config.schedule.timeouts
        targets = [*baseline_targets(config), *(x for p in plan(config) for x in p.targets)]
        return config.schedule.interval + worst_case_seconds(targets, t) + t.http

    async def run_one(self) -> RoundResult:
        config = self.config
        async with asyncio.timeout(self._round_budget(config)):
            result = await run_round(config)
        self.latest = result
        self.rounds += 1
        for listener in self.round_listeners:
            listener(result)
        self.metrics.record_round(result)
        await asyncio.to_thread(self.evidence.append_round, result)
        return result

    async def loop(self) -> None:
        """Run rounds until cancelled; a failing round is logged, never fatal."""
        while True:
            started = time.time()
            try:
                result = await self.run_one()
                log.info("round %d: %d targets in %.1fs, baseline %s", self.rounds,
                         len(result.verdicts), result.duration, "ok" if result.baseline.ok else "DOWN")
            except TimeoutError:
                log.error("round did not finish within its budget; starting the next one")
            except Exception:
                log.exception("round failed; the next one runs on schedule")
            schedule = self.config.schedule
            interval = schedule.interval * (1 + random.uniform(-schedule.jitter, schedule.jitter))
            self.next_round_at = started + interval
            delay = self.next_round_at - time.time()
            if delay <= 0:
                self.metrics.overruns.labels(self.config.vantage.name).inc()
                log.warning("round overran the interval by %.1fs", -delay)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
