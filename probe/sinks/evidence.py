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
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
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
MAX_DIRECTORY_BYTES = 1 << 30
_sequence = itertools.count()
# O_NOFOLLOW: a symlink swapped in as evidence.jsonl is refused (ELOOP, counted as a write
# error), never appended through to whatever it names.
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY_MODE = 0o750


def make_directory(path: Path, mode: int = DIRECTORY_MODE) -> None:
    """Create `path` and its missing parents with `mode` whatever the umask (mkdir's mode is
    masked by it: a umask of 0 would make them world-writable); existing ones are left."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode)
            os.chmod(directory, mode, follow_symlinks=False)


@dataclass
class EvidenceLog:
    """Appends rounds under `directory`, rotating by size and deleting by age."""

    directory: Path | None
    retention_days: float = 14
    max_file_bytes: int = MAX_FILE_BYTES
    max_directory_bytes: int = MAX_DIRECTORY_BYTES
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
        self.max_directory_bytes = e.max_directory_bytes
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
        make_directory(self.directory)
        path = self.directory / CURRENT
        fd = os.open(path, _OPEN_FLAGS, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.max_file_bytes:
                os.close(fd)
                fd = -1
                self._rotate(path)
                fd = os.open(path, _OPEN_FLAGS, 0o640)
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
        """Delete rotated files older than the retention, then the oldest ones while the
        directory holds more than `max_directory_bytes`; return what was deleted. The
        current file is never deleted (it is at most `max_file_bytes`)."""
        if self.directory is None or not self.directory.is_dir():
            return []
        cutoff = (now if now is not None else time.time()) - self.retention_days * 86400
        removed = []
        rotated: list[tuple[float, int, Path]] = []
        for path in self.directory.glob(ROTATED_GLOB):
            with contextlib.suppress(FileNotFoundError):
                stat = path.lstat()
                if stat.st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed.append(path)
                else:
                    rotated.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in rotated)
        with contextlib.suppress(FileNotFoundError):
            total += (self.directory / CURRENT).lstat().st_size
        for _, size, path in sorted(rotated, key=lambda item: (item[0], item[2].name)):
            if total <= self.max_directory_bytes:
                break
            path.unlink(missing_ok=True)
            removed.append(path)
            total -= size
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
        for number, raw in enumerate(_lines(handle), 1):
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


MAX_LINE_BYTES = 256 << 20  # a line longer than this is skipped, never held whole
TAIL_BYTES = 4 << 20  # how much of the log's end last_budget reads


def last_budget(directory: Path | None) -> tuple[float, dict[str, Any]] | None:
    """(finished, budget) of the last whole round in the current log that has a budget:
    what a restarted probe has spent of its traffic budget (probe.serve.schedule.Bucket).
    Reads at most TAIL_BYTES from the end; None when there is no such round."""
    if directory is None:
        return None
    try:
        with (directory / CURRENT).open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read(TAIL_BYTES)
    except OSError:
        return None
    for raw in reversed(tail.split(b"\n")[1:] if size > TAIL_BYTES else tail.split(b"\n")):
        try:
            data = json.loads(raw)
        except ValueError:
            continue  # empty, torn or cut by the tail's start
        budget = data.get("budget") if isinstance(data, dict) else None
        if isinstance(budget, dict) and isinstance(data.get("finished"), str):
            try:
                return datetime.fromisoformat(data["finished"]).timestamp(), budget
            except ValueError:
                continue
    return None


def _lines(handle: Any, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The file's lines; one longer than `limit` is read past in chunks and skipped (a
    warning), so no line costs more than `limit` bytes of memory."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            skipped = len(line)
            while True:
                chunk = handle.readline(1 << 20)
                skipped += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            log.warning("%s: a line of %d bytes skipped (longer than %d)", handle.name, skipped, limit)
            continue
        yield line


_VERDICTS = b'"verdicts":'
_STARTED = b'"started":'


def read_verdicts(path: Path) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """Each round's start time (ISO text) and (messenger, target, verdict) triples, without
    building the round's observations: the page's history needs nothing else, and the
    observations are what a hostile network makes large. The top-level "started" is the
    first key of that name in a line (the vantage before it has none) and "verdicts" the
    last (round_json puts it last); a line where either is not so is parsed whole."""
    decoder = json.JSONDecoder()
    with path.open("rb") as handle:
        for raw in _lines(handle):
            try:
                start, end = raw.find(_STARTED), raw.rfind(_VERDICTS)
                if start < 0 or end < 0:
                    raise ValueError("no started or verdicts")
                head = raw[start + len(_STARTED):start + 200].decode("utf-8", "replace")
                started, _ = decoder.raw_decode(head)
                verdicts, _ = decoder.raw_decode(raw[end + len(_VERDICTS):].decode("utf-8"))
                if not isinstance(started, str) or not isinstance(verdicts, list):
                    raise ValueError("not a round")
            except ValueError:
                if not raw.strip():
                    continue
                try:
                    data = json.loads(raw)
                    started, verdicts = data["started"], data["verdicts"]
                    if not isinstance(started, str) or not isinstance(verdicts, list):
                        continue
                except (ValueError, KeyError, TypeError):
                    continue  # torn or damaged: summarise() reports those
            yield started, [
                (sys.intern(str(v.get("messenger"))), sys.intern(str(v.get("target"))),
                 sys.intern(str(v.get("verdict"))))
                for v in verdicts if isinstance(v, dict)]


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
