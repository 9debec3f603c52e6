"""What a check is, as one record: its name, its timeout, and the traits the rest of the
pipeline asks about it.

Every place that treats checks differently (the plan's confirmation, the round's timeouts,
the classifier's "this step authenticates the service", the vantage's loss sample and its
proof of being online, the status page's words) reads this record, so a new check is one
module plus one record (probe/measure/checks/__init__.py). The record is built by keyword
only: an unknown trait is refused when the record is made, never silently ignored, as
prometheus-aioexporter refuses an unknown metric type and blackbox_exporter an unknown
prober.

An observation's `check` names the record of the kind of step it is: the neutral-SNI and
rejected-certificate differentials record `tls` observations (`records="tls"`), so the
traits an observation is judged by are those of the record its `check` names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSpec:
    """One check's traits. Only `name`, `timeout` and `timeout_default` are required."""

    name: str  # what a catalogue step names, and the registry key
    timeout: str  # its key under the config's schedule.timeouts (checks may share one)
    timeout_default: float  # seconds, when the config does not set that key
    timeout_max: float = 120.0  # the largest setting the config accepts for that key
    label: str = ""  # how people read it (the status page): "TLS"; the name when empty
    records: str = ""  # the `check` its observations carry; its own name when empty
    needs_address: bool = True  # connects somewhere: needs an address from an earlier step
    confirmed: bool = True  # a failure is repeated to confirm it (it can feed a block)
    authenticates: bool = False  # success proves the service itself answered
    connect_level: bool = False  # its attempts are compared with the baseline's for loss
    proves_online: bool = False  # success can prove the vantage's outside world answers
    # The words of that proof in `online_evidence`; {address} {port} {target} {name} (the
    # SNI, or the target) are filled in.
    proof_words: str = "{label} answer from {address}:{port} ({target})"
    transfer: bool = False  # moves payload to measure throughput: runs one at a time

    def __post_init__(self) -> None:
        for key in ("name", "timeout") + (("records",) if self.records else ()):
            value = getattr(self, key)
            if not NAME.match(value):
                raise ValueError(f"check record {self.name!r}: {key} {value!r} is not a lower-case "
                                 "identifier (a letter, then letters, digits or '_', at most 32)")
        if not 0 < self.timeout_default <= self.timeout_max:
            raise ValueError(f"check record {self.name!r}: timeout_default {self.timeout_default} "
                             f"must be more than 0 and at most timeout_max {self.timeout_max}")
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if not self.records:
            object.__setattr__(self, "records", self.name)
        object.__setattr__(self, "proof_words", self.proof_words.replace("{label}", self.label))
