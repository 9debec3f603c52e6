"""The evidence log: every round's observations and verdicts as one JSON line.

Evidence must outlive the metrics (Prometheus keeps numbers, an analyst needs the
answers a resolver gave and the failure behind each verdict) and must be kept whether or
not anyone scrapes. One line per round, appended and flushed at once, so a crash loses at
most the line being written; the reader skips (and reports) a torn last line. The vantage's
own address is never recorded: observations name only the remote side.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.config import Config
from probe.round import RoundResult

log = logging.getLogger(__name__)

CURRENT = "evidence.jsonl"
MAX_FILE_BYTES = 64 << 20


@dataclass
class EvidenceLog:
    """Appends rounds under `directory`, rotating by size and deleting by age."""

    directory: Path | None
    retention_days: float = 14
    max_file_bytes: int = MAX_FILE_BYTES
    write_errors: int = 0
    last_error: str | None = field(default=None)

    @classmethod
    def for_config(cls, config: Config) -> EvidenceLog:
        return cls(config.evidence.directory, config.evidence.retention_days)

    def append_round(self, result: RoundResult) -> bool:
        """Append one round; on failure (disk full, permissions) log, count, and go on."""
        if self.directory is None:
            return True
        from probe.report import round_json

        line = json.dumps(round_json(result), separators=(",", ":")) + "\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / CURRENT
            if path.exists() and path.stat().st_size + len(line) > self.max_file_bytes:
                path.rename(self.directory / f"evidence-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl")
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.prune()
        except OSError as exc:
            self.write_errors += 1
            self.last_error = str(exc)
            log.error("evidence log: cannot write to %s: %s", self.directory, exc)
            return False
        self.last_error = None
        return True

    def prune(self, now: float | None = None) -> list[Path]:
        """Delete rotated files older than the retention; return what was deleted."""
        if self.directory is None:
            return []
        cutoff = (now or time.time()) - self.retention_days * 86400
        removed = []
        for path in self.directory.glob("evidence-*.jsonl"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


def read_rounds(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete round in a log file; a torn line (a crash mid-write) is reported and skipped."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s:%d: incomplete or damaged line skipped (%d bytes)", path, number, len(raw))
