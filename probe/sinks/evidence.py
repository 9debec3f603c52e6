"""The evidence log: every round's observations and verdicts as one JSON line.

Evidence must outlive the metrics (Prometheus keeps numbers, an analyst needs the
answers a resolver gave and the failure behind each verdict) and must be kept whether or
not anyone scrapes. One line per round, appended and fsynced at once, so a crash loses at
most the line being written; the reader skips (and reports) a torn line.

What keeps the log readable whatever happens:
- a torn tail (kill -9, power loss mid-write) is closed with a newline before the next
  append, so the next round's line is not glued to the broken one;
- a failed write (disk full, file too large) is cut back to the last complete line, counted
  (`reach_evidence_write_errors_total`) and logged, and probing goes on;
- rotation renames to a name that is never reused, so no rotated file is overwritten.

The vantage's own address is never recorded: observations name only the remote side, and
as a safety net every line goes through the scrubber (probe/sinks/scrub.py), which replaces the
configured source addresses and the host's own interface addresses by "[vantage]".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from probe.inputs.config import Config
from probe.model.observation import RoundResult
from probe.sinks.scrub import SCRUBBED, Scrubber, vantage_addresses  # noqa: F401  (SCRUBBED: re-exported)

log = logging.getLogger(__name__)

CURRENT = "evidence.jsonl"
ROTATED_GLOB = "evidence-*.jsonl"
MAX_FILE_BYTES = 64 << 20
_sequence = itertools.count()


@dataclass
class EvidenceLog:
    """Appends rounds under `directory`, rotating by size and deleting by age."""

    directory: Path | None
    retention_days: float = 14
    max_file_bytes: int = MAX_FILE_BYTES
    scrubber: Scrubber = field(default_factory=Scrubber)
    write_errors: int = 0
    writes: int = 0
    last_ok: bool = True
    last_error: str | None = field(default=None)

    @classmethod
    def for_config(cls, config: Config) -> EvidenceLog:
        log_ = cls(None)
        log_.configure(config)
        return log_

    def configure(self, config: Config) -> None:
        """Apply a (re)loaded config; the error counters carry over."""
        e, v = config.evidence, config.vantage
        self.directory = e.directory
        self.retention_days = e.retention_days
        self.max_file_bytes = e.max_file_bytes
        self.scrubber.configure(vantage_addresses(v))

    def _line(self, result: RoundResult) -> bytes:
        from probe.sinks.report import round_json

        text = json.dumps(round_json(result), separators=(",", ":"), default=str)
        text = self.scrubber.text(text)
        return (text + "\n").encode("utf-8")

    def append_round(self, result: RoundResult) -> bool:
        """Append one round; on failure (disk full, permissions) log, count, and go on."""
        if self.directory is None:
            return True
        try:
            line = self._line(result)
            self._append(line)
        except (OSError, ValueError) as exc:
            self.write_errors += 1
            self.last_ok = False
            self.last_error = str(exc)
            log.error("evidence log: cannot write to %s: %s", self.directory, exc)
            return False
        self.writes += 1
        self.last_ok = True
        self.last_error = None
        try:
            self.prune()
        except OSError as exc:  # pruning is housekeeping: never lose a round over it
            log.warning("evidence log: cannot prune %s: %s", self.directory, exc)
        return True

    def _append(self, line: bytes) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / CURRENT
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.max_file_bytes:
                os.close(fd)
                fd = -1
                self._rotate(path)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
                size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # a torn line from a crash: close it so our line stays whole
                log.warning("evidence log: %s ends in a torn line; closing it", path)
                line = b"\n" + line
            try:
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except OSError:
                # cut back to the last complete line so the log stays readable
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            if fd >= 0:
                os.close(fd)

    def _rotate(self, path: Path) -> Path:
        assert self.directory is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        while True:
            target = self.directory / f"evidence-{stamp}-{os.getpid()}-{next(_sequence)}.jsonl"
            if not target.exists():
                break
        path.rename(target)
        log.info("evidence log: rotated %s to %s", path.name, target.name)
        return target

    def prune(self, now: float | None = None) -> list[Path]:
        """Delete rotated files older than the retention; return what was deleted."""
        if self.directory is None or not self.directory.is_dir():
            return []
        cutoff = (now if now is not None else time.time()) - self.retention_days * 86400
        removed = []
        for path in self.directory.glob(ROTATED_GLOB):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed


class EvidenceCollector(Collector):
    """Exports the evidence log's health: a probe that cannot keep evidence must say so."""

    def __init__(self, get_log: Any, get_vantage: Any) -> None:
        self._get_log = get_log
        self._get_vantage = get_vantage

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        evidence: EvidenceLog = self._get_log()
        vantage: str = self._get_vantage()
        errors = CounterMetricFamily(
            "reach_evidence_write_errors", "Rounds the evidence log could not record.",
            labels=["vantage"])
        errors.add_metric([vantage], evidence.write_errors)
        yield errors
        ok = GaugeMetricFamily(
            "reach_evidence_last_write_successful",
            "Whether the latest round was written to the evidence log (1 when the log is off).",
            labels=["vantage"])
        ok.add_metric([vantage], 1 if evidence.last_ok else 0)
        yield ok


def ignore_file_size_signal() -> None:
    """Make an exceeded RLIMIT_FSIZE an EFBIG error (counted) instead of a fatal signal."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


# --------------------------------------------------------------------------------------
# Reading


@dataclass
class TornLine:
    path: Path
    line: int
    size: int


def read_rounds(path: Path, torn: list[TornLine] | None = None) -> Iterator[dict[str, Any]]:
    """Every complete round in a log file; a torn line (a crash mid-write) is reported and skipped."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                log.warning("%s:%d: incomplete or damaged line skipped (%d bytes)", path, number, len(raw))
                if torn is not None:
                    torn.append(TornLine(path, number, len(raw)))
                continue
            yield data


def log_files(path: Path) -> list[Path]:
    """A log file itself, or a directory's rotated files (oldest first) then the current one."""
    if path.is_dir():
        return sorted(path.glob(ROTATED_GLOB), key=lambda p: p.stat().st_mtime) + (
            [path / CURRENT] if (path / CURRENT).exists() else [])
    return [path]


def summarise(path: Path) -> dict[str, Any]:
    """What a log (file or directory) holds: rounds, span, verdict counts, torn lines."""
    torn: list[TornLine] = []
    rounds = observations = 0
    first = last = None
    verdicts: dict[str, int] = {}
    files = log_files(path)
    for file in files:
        for data in read_rounds(file, torn):
            rounds += 1
            observations += len(data.get("observations") or [])
            started = data.get("started")
            first = first or started
            last = started or last
            for verdict in data.get("verdicts") or []:
                name = str(verdict.get("verdict"))
                verdicts[name] = verdicts.get(name, 0) + 1
    return {
        "files": [str(f) for f in files], "rounds": rounds, "observations": observations,
        "first_round": first, "last_round": last, "verdicts": dict(sorted(verdicts.items())),
        "torn_lines": [{"file": str(t.path), "line": t.line, "bytes": t.size} for t in torn],
    }
