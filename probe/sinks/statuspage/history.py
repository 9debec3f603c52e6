"""The status page's memory: per target, runs of equal verdicts over the last 24 hours.

Memory grows with verdict changes, not with rounds. The history is rebuilt from the
evidence log at start and then fed each live round; it reads round JSON (what the evidence
log holds and /api/status serves), so a live round and a logged one look the same.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probe.model.observation import RoundResult
from probe.model.verdicts import BLOCKING
from probe.sinks.evidence import log_files, read_verdicts

log = logging.getLogger(__name__)

WINDOW = 24 * 3600.0
SLOTS = 48  # cells of the history strip: half an hour each
# Display order: blocking mechanisms (in the table order of verdicts.py), then what cannot
# be judged, then ok. Also the severity a history cell shows when its half hour saw several.
ORDER: tuple[str, ...] = (*BLOCKING, "inconclusive", "vantage_offline", "ok")
RANK = {name: index for index, name in enumerate(ORDER)}
Key = tuple[str, str]  # (messenger, target)


def rank(verdict: str) -> int:
    """A verdict's severity: lower is worse; names not in ORDER come last."""
    return RANK.get(verdict, len(ORDER))


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def from_iso(value: Any) -> float | None:
    """A round JSON time back to a timestamp; None for anything that is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass
class Run:
    """Consecutive rounds in which a target had the same verdict."""

    verdict: str
    start: float
    last: float
    rounds: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "from": iso(self.start), "to": iso(self.last),
                "rounds": self.rounds}


@dataclass
class History:
    """Per target, the runs of equal verdicts over the last `window` seconds (and always the
    current run, however old: it says since when)."""

    window: float = WINDOW
    runs: dict[Key, list[Run]] = field(default_factory=dict)
    rounds: deque[float] = field(default_factory=deque)  # round start times in the window
    first_round: float | None = None  # the oldest round this history knows
    version: int = 0  # bumped per recorded round: a cache key for the rendered page

    def record(self, started: float, verdicts: Iterable[tuple[str, str, str]]) -> None:
        """One round's (messenger, target, verdict) triples; older rounds than the newest
        recorded one are ignored (the log and the live round may overlap at start)."""
        previous = self.rounds[-1] if self.rounds else None
        if previous is not None and started <= previous:
            return
        for messenger, target, verdict in verdicts:
            runs = self.runs.setdefault((messenger, target), [])
            if runs and runs[-1].verdict == verdict and runs[-1].last == previous:
                runs[-1].last = started
                runs[-1].rounds += 1
            else:
                runs.append(Run(verdict, started, started))
        self.rounds.append(started)
        if self.first_round is None:
            self.first_round = started
        self.version += 1
        self.prune(started)

    def record_json(self, data: Mapping[str, Any]) -> None:
        """A round as JSON (the evidence log's lines)."""
        started = from_iso(data.get("started"))
        if started is None:
            return
        self.record(started, ((str(v.get("messenger")), str(v.get("target")), str(v.get("verdict")))
                              for v in data.get("verdicts") or [] if isinstance(v, dict)))

    def record_result(self, result: RoundResult) -> None:
        self.record(result.started, ((v.messenger, v.target, v.verdict) for v in result.verdicts))

    def prune(self, now: float) -> None:
        cutoff = now - self.window
        while self.rounds and self.rounds[0] < cutoff:
            self.rounds.popleft()
        for key in list(self.runs):
            runs = self.runs[key]
            if runs[-1].last < cutoff:  # not seen for a whole window: gone from the config
                del self.runs[key]
            elif runs[0].last < cutoff:
                self.runs[key] = [r for r in runs[:-1] if r.last >= cutoff] + [runs[-1]]

    def since(self, key: Key) -> tuple[float, bool] | None:
        """When the current verdict began, and whether that is exact (False: it began at or
        before the first round this history knows)."""
        runs = self.runs.get(key)
        if not runs:
            return None
        start = runs[-1].start
        return start, self.first_round is not None and start > self.first_round

    def slots_ran(self, now: float, slots: int = SLOTS) -> list[bool]:
        """Which slots of the window saw a round (the same for every target of a page)."""
        size = self.window / slots
        begin = now - self.window
        ran = [False] * slots
        for started in self.rounds:
            index = int((started - begin) // size)
            if 0 <= index < slots:
                ran[index] = True
        return ran

    def strip(self, key: Key, now: float, slots: int = SLOTS,
              ran: list[bool] | None = None) -> list[str | None]:
        """The most severe verdict of each slot of the window (oldest first); None where no
        round ran."""
        size = self.window / slots
        begin = now - self.window
        cells: list[str | None] = [None] * slots
        for run in self.runs.get(key, []):
            first = max(0, int((run.start - begin) // size))
            last = min(slots - 1, int((run.last - begin) // size))
            for index in range(first, last + 1):
                current = cells[index]
                if current is None or rank(run.verdict) < rank(current):
                    cells[index] = run.verdict
        ran = self.slots_ran(now, slots) if ran is None else ran
        return [cell if ran[index] else None for index, cell in enumerate(cells)]

    def load(self, directory: Path | None, now: float | None = None) -> int:
        """Rebuild from the evidence log's rounds of the last window; return how many.

        Streams the log and keeps only (time, messenger, target, verdict) of each round
        (names interned), so memory at start follows targets x rounds, never what the
        observations hold (a hostile resolver's answers)."""
        if directory is None or not directory.is_dir():
            return 0
        now = time.time() if now is None else now
        cutoff = now - self.window
        rounds: list[tuple[float, list[tuple[str, str, str]]]] = []
        for path in log_files(directory):
            try:
                if path.stat().st_mtime < cutoff:
                    continue
                for started_text, verdicts in read_verdicts(path):
                    started = from_iso(started_text)
                    if started is not None and cutoff <= started <= now:
                        rounds.append((started, verdicts))
            except OSError as exc:
                log.warning("status page: cannot read %s: %s", path, exc)
        rounds.sort(key=lambda item: item[0])
        for started, verdicts in rounds:
            self.record(started, verdicts)
        return len(rounds)
