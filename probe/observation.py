"""What a check saw (an observation) and what the classifier concluded (a verdict).

Checks return observations and never touch metrics; everything downstream (classifier,
metrics, evidence log, status page) reads these records. They are plain data so that a
round can be written to JSON as it is.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Check = Literal["dns", "tcp", "tls", "mtproto", "http"]
CHECKS: tuple[Check, ...] = ("dns", "tcp", "tls", "mtproto", "http")



def iso(timestamp: float) -> str:
    """An ISO 8601 UTC timestamp, the form used throughout the JSON output."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Observation:
    """One step of one check against one target, with its outcome and raw evidence."""

    messenger: str | None
    target: str
    check: Check
    operation: str
    failure: str | None
    address: str | None = None
    port: int | None = None
    started: float = field(default_factory=time.time)
    duration_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    aux: bool = False  # a supporting step (control resolver, neutral SNI): not in check metrics
    id: int = -1

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = iso(self.started)
        data["duration_seconds"] = round(self.duration_seconds, 6)
        return {"id": data.pop("id"), **data}


@dataclass(slots=True)
class Verdict:
    """The classifier's conclusion for one target, naming its rule and evidence."""

    messenger: str
    target: str
    verdict: str
    rule: str
    reason: str
    evidence: list[Observation]

    def to_json(self) -> dict[str, Any]:
        return {
            "messenger": self.messenger,
            "target": self.target,
            "verdict": self.verdict,
            "rule": self.rule,
            "reason": self.reason,
            "evidence": [
                {"observation": o.id, "check": o.check, "failure": o.failure}
                for o in self.evidence
            ],
        }
