"""What a check saw (an observation) and what the classifier concluded (a verdict).

Checks return observations and never touch metrics; everything downstream (classifier,
metrics, evidence log, status page) reads these records. They are plain data so that a
round can be written to JSON as it is.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from probe.inputs.catalog import Target
from probe.judge import answer

# primary: the step that speaks for the target (its metrics, its verdict); differential: a
# step that explains a primary failure (neutral SNI, plain HTTP to a DC, the rejected
# certificate); control: a reference believed untampered (control resolver, baseline site).
Role = Literal["primary", "differential", "control"]



def iso(timestamp: float) -> str:
    """An ISO 8601 UTC timestamp, the form used throughout the JSON output."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Attempt:
    """One try of a step that was repeated to confirm a failure."""

    failure: str | None
    started: float
    duration_seconds: float
    # The kernel's connect time when the attempt's TCP connect completed; None when it did
    # not, or the check records none. A failure after a connect is about the payload (a
    # silenced or reset first packet); one without is about the connect (a dropped SYN):
    # what tells a residual drop's trigger from the drop (probe.judge.residual).
    connect_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.connect_seconds is None else {"connect_seconds": round(self.connect_seconds, 6)}
        return {"failure": self.failure, "started": iso(self.started),
                "duration_seconds": round(self.duration_seconds, 6), **extra}


@dataclass(slots=True)
class Observation:
    """One step of one check against one target, with its outcome and raw evidence."""

    messenger: str | None
    target: str
    check: str
    operation: str
    failure: str | None
    address: str | None = None
    port: int | None = None
    started: float = field(default_factory=time.time)
    duration_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    role: Role = "primary"
    attempts: list[Attempt] = field(default_factory=list)  # empty: tried once
    id: int = -1

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def primary(self) -> bool:
        return self.role == "primary"

    def tries(self) -> list[Attempt]:
        """Every attempt, the observation itself when it was tried once."""
        return self.attempts or [Attempt(self.failure, self.started, self.duration_seconds,
                                         self.connect_seconds)]

    @property
    def connect_seconds(self) -> float | None:
        """The kept attempt's connect time, when its TCP connect completed and the check
        records it (a TCP check's success: its duration is the connect time)."""
        if self.check == "tcp":
            return self.duration_seconds if self.ok else None
        value = self.details.get("connect_seconds")
        return float(value) if value is not None else None

    def failed_attempts(self) -> tuple[int, int]:
        """(k, n): k of n attempts failed."""
        tries = self.tries()
        return sum(1 for t in tries if t.failure is not None), len(tries)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = iso(self.started)
        data["duration_seconds"] = round(self.duration_seconds, 6)
        data["attempts"] = [t.to_json() for t in self.tries()]
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
    # when the target was last measured, for a verdict carried between the rounds that
    # measure it (probe.serve.schedule); None: measured in the round that carries it
    measured: float | None = None
    # The circumvention path the target measures (domain_fronting, whatsapp_proxy), if any.
    circumvention: str = ""
    # What a user loses when the target is blocked (its catalogue group's `path`), set from
    # the round's targets when the round is judged (RoundDraft.judged).
    path: str = "chat"
    # A residual drop behind the verdict (probe.judge.residual.Residual.to_json): the
    # trigger, when the drop began, this round's dropped connects, with times.
    residual: dict[str, Any] | None = None
    # The figures a rule weighed beyond its evidence (the loss rules: the target's, the
    # service's and the baseline's counts and p-values), shown as they are in /api/target.
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        extra = {} if self.measured is None else {"measured": iso(self.measured)}
        return {
            **extra,
            "messenger": self.messenger,
            "target": self.target,
            "verdict": self.verdict,
            "rule": self.rule,
            "reason": self.reason,
            **({"circumvention": self.circumvention} if self.circumvention else {"path": self.path}),
            "evidence": [
                {"observation": o.id, "check": o.check, "role": o.role, "failure": o.failure,
                 "attempts_failed": o.failed_attempts()[0], "attempts": o.failed_attempts()[1]}
                for o in self.evidence
            ],
            **({"residual": self.residual} if self.residual is not None else {}),
            **({"details": self.details} if self.details else {}),
        }


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
class VantageNetwork:
    """The vantage's own network this round, as the classifier and the fleet judge it.

    `online` is proof that the outside world answers (a verified handshake or an
    authenticated answer from outside), not merely a working baseline; `international_cut`
    is online through domestic sites alone while everything abroad fails (a shutdown with a
    domestic whitelist); `baseline_blocked` is a failed baseline while online; `degraded` is
    loss or latency the baseline shares. `state` names the first of these that holds
    (probe.model.verdicts.VANTAGE_STATES).
    """

    online: bool = False
    online_ipv4: bool = False  # the proof, per family (probe.judge.vantage): what the classifier reads
    online_ipv6: bool = False
    baseline_ok: bool = False
    baseline_blocked: bool = False
    degraded: bool = False
    international_cut: bool = False
    loss_ratio: float | None = None
    rtt_seconds: float | None = None
    retransmit_ratio: float | None = None  # share of the baseline's segments retransmitted
    retried_ratio: float | None = None  # share of its handshakes retransmitting or timing out
    baseline_sites: dict[str, bool] = field(default_factory=dict)
    online_evidence: list[str] = field(default_factory=list)

    def family_online(self, family: int) -> bool:
        return self.online_ipv6 if family == 6 else self.online_ipv4

    @property
    def state(self) -> str:
        """The vantage's state in one word (probe.model.verdicts.VANTAGE_STATES)."""
        if not self.online:
            return "offline"
        if self.international_cut:
            return "international_cut"
        if self.baseline_blocked:
            return "baseline_blocked"
        return "degraded" if self.degraded else "online"

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, **asdict(self)}


@dataclass(frozen=True, slots=True)
class VantageIdentity:
    """Who measured: what the round's record and every sink say about the vantage (its own
    addresses are kept to judge the round and to scrub them, never written out)."""

    name: str
    country: str = "ZZ"
    asn: int = 0
    network: str = ""
    role: str = "subject"
    addresses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "country": self.country, "asn": self.asn,
                "network": self.network, "role": self.role}


@dataclass
class RoundDraft:
    """A round while it runs and is judged: the round fills it in, probe.judge.vantage sets
    its `network`, and `judged()` turns it into the RoundResult the sinks read."""

    vantage: VantageIdentity
    targets: list[Target]
    started: float
    finished: float = 0.0
    baseline: Baseline = field(default_factory=Baseline)
    network: VantageNetwork = field(default_factory=VantageNetwork)
    loop_lag_max: float = 0.0  # the longest event-loop lag seen while the round ran
    # bytes on the wire per messenger ("baseline" for the baseline's): (sent, received)
    traffic: dict[str, tuple[int, int]] = field(default_factory=dict)
    tier: str = "full"  # full | sentinel | sweep (probe.serve.schedule)
    transfers_ran: bool = True  # whether transfer checks were part of the round
    budget: dict[str, Any] | None = None  # the traffic budget's state (probe run only)
    observations: list[Observation] = field(default_factory=list)
    # targets whose failure was judged before and whose loss test was not sampled again
    # (probe.measure.round `_more_samples`): their verdict is the earlier one's
    loss_reused: tuple[str, ...] = ()
    screened: tuple[str, ...] = ()  # targets measured at the screening level only

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def judged(self, verdicts: list[Verdict]) -> RoundResult:
        """The frozen result; each verdict carries its target's `path` (a verdict whose
        target is not in the round keeps its own)."""
        paths = {(t.messenger, t.name): t.path for t in self.targets}
        verdicts = [v if paths.get((v.messenger, v.target), v.path) == v.path
                    else replace(v, path=paths[(v.messenger, v.target)]) for v in verdicts]
        return RoundResult(self.vantage, tuple(self.targets), self.started, self.finished,
                           self.baseline, self.network, self.loop_lag_max, dict(self.traffic),
                           self.tier, self.transfers_ran, self.budget, tuple(self.observations),
                           tuple(verdicts), self.loss_reused, self.screened)


@dataclass(frozen=True)
class RoundResult:
    """Everything one round produced, judged, in the order the sinks need it. Built once
    (RoundDraft.judged) and not changed after: its JSON form is made once and shared by
    the evidence log, /api/status and the status page."""

    vantage: VantageIdentity
    targets: tuple[Target, ...]
    started: float
    finished: float
    baseline: Baseline
    network: VantageNetwork
    loop_lag_max: float
    traffic: dict[str, tuple[int, int]]
    tier: str
    transfers_ran: bool
    budget: dict[str, Any] | None
    observations: tuple[Observation, ...]
    verdicts: tuple[Verdict, ...]
    loss_reused: tuple[str, ...] = ()  # RoundDraft.loss_reused
    screened: tuple[str, ...] = ()  # RoundDraft.screened

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def traffic_json(self) -> dict[str, Any]:
        """The round's bytes on the wire, counted at its sockets: in all and per messenger."""
        traffic = self.traffic
        return {"tier": self.tier,
                "bytes_sent": sum(s for s, _ in traffic.values()),
                "bytes_received": sum(r for _, r in traffic.values()),
                "by_messenger": {k: {"sent": s, "received": r} for k, (s, r) in traffic.items()}}

    @cached_property
    def answers(self) -> dict[str, answer.Answer]:
        """Can a user here use each messenger? (probe.judge.answer), from the verdicts."""
        return answer.by_messenger(
            ((v.messenger, v.path, v.verdict, v.circumvention) for v in self.verdicts),
            online=self.network.online and not self.network.international_cut)

    @cached_property
    def json(self) -> dict[str, Any]:
        """The JSON contract of `probe once` and /api/status (docs/engine-contract.md), made
        once per round. Shared: readers must not change it."""
        return {
            "vantage": self.vantage.to_json(),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "duration_seconds": round(self.duration, 3),
            "event_loop_lag_max_seconds": round(self.loop_lag_max, 6),
            "traffic": self.traffic_json(),
            **({"budget": self.budget} if self.budget is not None else {}),
            "baseline": self.baseline.to_json(),
            "network": self.network.to_json(),
            "observations": [o.to_json() for o in self.observations],
            "verdicts": [verdict.to_json() for verdict in self.verdicts],
            "answers": {m: a.to_json(self.vantage.role) for m, a in self.answers.items()},
        }
