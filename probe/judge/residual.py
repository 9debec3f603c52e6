"""Residual drops: a censor that, once a connection's first payload trips its filter, drops
every later packet from that client to the same address and port for a while.

The GFW does it after fully encrypted traffic (up to 180 s, Wu et al. 2023) and after SNI
and HTTP triggers (90-180 s); Iran's protocol filter for 60 s, the timer reset on every
trigger (shared/research/interference.md, domain.md 2.1/2.3). To the probe such a drop looks
like an IP block: every connect after the trigger times out, its own retries, the
differentials and, inside the window, the next rounds' first SYN too. What tells them
apart is the sequence at one address and port:

- a connect completed, and the first payload on it went unanswered or was reset (the
  trigger);
- every connect there that started after that payload (GRACE later) was dropped (timed
  out without completing), MIN_DROPS at least;
- no connect there was dropped before the trigger: loss does not wait for a payload;
- loss cannot explain the drops: at the rate the round shows connects lost in the family
  (the baseline's timed-out handshakes, SYNs retransmitted anywhere, a service's dropped
  connect that a completed one followed, since a filter's drop lasts; an address dropped
  from its first SYN on, an IP block or heavy loss, counts as one), that many drops in a
  row at one of its addresses has a chance below ALPHA. Where packets are lost at random
  (an intermittent block, a lossy path) a silenced payload and a few dropped connects can
  be chance: simulated, 0 residual verdicts in 16,000 target-rounds at each of uniform
  loss 5-50% and loss on the DCs only 30-90% (tests/unit/test_residual_sim.py).

An IP block drops the first SYN already: no trigger, so it stays `ip_blocking`. The
trigger's transport says which protocol the censor keys on: the apps' obfuscated2 makes
the targets there `protocol_filtering` (probe.judge.classify, rule
`mtproto_silenced_then_drop`); another transport's trigger (the plain one, or HTTP)
leaves the apps' transport untried behind the drop: inconclusive, not an IP block.

A later round whose every connect to that address and port is dropped, no more than
RESIDUAL_SECONDS (+ WINDOW_SLACK) after the trigger, is the same drop still running
(`carried`): only a vantage that remembers the trigger (`probe run`, ResidualMemory) can
tell; a lone round (`probe once`) sees an IP block, which is all a lone round can know. A
drop outlasting that window is no residual drop any more: `ip_blocking` again (so an IP
block that follows a protocol filter is named `protocol_filtering` for up to 200 s after
the last trigger: late, never a block missed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from probe.model import failures as F
from probe.model.observation import Observation, iso

#: The longest residual drop reported (GFW, fully encrypted traffic and ESNI: 180 s).
RESIDUAL_SECONDS = 180.0
#: Slack on that window: a censor may count it from the trigger connection's last packet
#: (the client retransmits its unanswered payload until the step's timeout).
WINDOW_SLACK = 20.0
#: A connect that started this soon after the trigger's payload may have passed the censor
#: before it armed the drop (the payload and the SYN cross it in the order sent, but a
#: censor takes a moment to decide): it counts neither way.
GRACE = 0.2
#: Dropped connects after the trigger before a drop is called one (a single lost connect
#: is loss).
MIN_DROPS = 2
#: At most this chance (per family and round) that loss at the rate the round shows
#: elsewhere made a residual drop's dropped connects.
ALPHA = 1e-3
#: A payload failure that can trigger: silence or a reset right after the first bytes.
PAYLOAD_FAILURES = frozenset({F.GENERIC_TIMEOUT, F.CONNECTION_RESET, F.EOF_ERROR})

WINDOW = RESIDUAL_SECONDS + WINDOW_SLACK
Key = tuple[str, int]  # (address, port)


@dataclass(frozen=True)
class Try:
    """One attempt to an address and port, from a step that records its connect."""

    started: float
    connect_seconds: float | None  # None: the connect did not complete
    failure: str | None
    transport: str  # tcp | obfuscated2 | intermediate | http
    observation: Observation

    @property
    def dropped(self) -> bool:
        return self.connect_seconds is None and self.failure == F.GENERIC_TIMEOUT

    @property
    def payload_failed(self) -> bool:
        return (self.connect_seconds is not None and self.transport != "tcp"
                and self.failure in PAYLOAD_FAILURES)

    @property
    def payload_at(self) -> float:
        return self.started + (self.connect_seconds or 0.0)


def _transport(obs: Observation) -> str | None:
    """The transport a step spoke, for the steps whose connects are read here (a DC's plan:
    the TCP connect, MTProto in either transport, the plain-HTTP differential)."""
    if obs.check == "tcp":
        return "tcp"
    if obs.check == "mtproto":
        return str(obs.details.get("transport") or "obfuscated2")
    if obs.check == "http" and obs.details.get("purpose") == "protocol_differential":
        return "http"
    return None


def tries(observations: Iterable[Observation]) -> dict[Key, list[Try]]:
    """Every attempt per address and port, in the order they started (messenger targets
    only: the baseline's sites are not the service's)."""
    found: dict[Key, list[Try]] = {}
    for obs in observations:
        transport = _transport(obs)
        if transport is None or obs.messenger is None or obs.address is None or obs.port is None:
            continue
        for attempt in obs.tries():
            found.setdefault((obs.address, obs.port), []).append(
                Try(attempt.started, attempt.connect_seconds, attempt.failure, transport, obs))
    for group in found.values():
        group.sort(key=lambda t: t.started)
    return found


@dataclass(frozen=True)
class Residual:
    """A residual drop at one address and port: its trigger and the drops behind it."""

    address: str
    port: int
    trigger_target: str
    transport: str  # the trigger's transport
    failure: str  # what the trigger's payload got
    connected: float  # when the trigger's connect started
    triggered: float  # when its payload went out
    drop_since: float  # when the first dropped connect after it started
    dropped: int  # connects dropped this round
    last_drop: float  # the latest dropped connect's start this round
    carried: bool = False  # the trigger was in an earlier round; this one saw drops only
    trigger: Observation | None = None  # the trigger's observation, in its own round
    # an earlier trigger's payload time, when this round's connects began inside its window
    # (that drop ended during the round, and this trigger armed it again)
    previous: float | None = None

    def covers(self, started: float) -> bool:
        """A connect starting then is inside the drop (this one's, or the earlier one it
        re-armed)."""
        if started >= self.triggered - GRACE:
            return True
        return self.previous is not None and self.previous <= started <= self.previous + WINDOW

    def seconds_since(self) -> float:
        return round(self.last_drop - self.triggered, 3)

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port,
                "trigger": {"target": self.trigger_target, "transport": self.transport,
                            "failure": self.failure, "connected": iso(self.connected),
                            "payload": iso(self.triggered)},
                "drop_since": iso(self.drop_since), "dropped_this_round": self.dropped,
                "last_drop": iso(self.last_drop), "seconds_since_trigger": self.seconds_since(),
                "trigger_round": "earlier" if self.carried else "this"}

    def sentence(self) -> str:
        """The sequence in words, with times (UTC)."""
        where = f"{self.address}:{self.port}"
        what = "silenced" if self.failure == F.GENERIC_TIMEOUT else f"cut ({self.failure})"
        trigger = (f"{_clock(self.connected)} {self.transport} ({self.trigger_target}) connected to "
                   f"{where}, its first payload at {_clock(self.triggered)} {what}; every "
                   f"connect there dropped from {_clock(self.drop_since)} on")
        if not self.carried:
            return f"sequence: {trigger} ({self.dropped} connects in this round)"
        return (f"residual drop: {trigger}; this round's {self.dropped} connects there dropped too "
                f"(the last at {_clock(self.last_drop)}, {self.seconds_since():.0f} s after the "
                f"trigger; a residual drop lasts up to {RESIDUAL_SECONDS:.0f} s)")


def _clock(timestamp: float) -> str:
    return iso(timestamp)[11:23]


def _within(earlier: Residual | None, t: Try) -> bool:
    """A connect inside the window of a residual drop an earlier round saw."""
    return earlier is not None and earlier.triggered <= t.started <= earlier.triggered + WINDOW


def _in_round(group: list[Try], earlier: Residual | None = None) -> Residual | None:
    """A trigger in this round followed by nothing but drops (the module's rules). Drops
    before it are allowed only inside an earlier trigger's window (the old drop ended
    during this round's first connects, and the payload armed it again)."""
    for trigger in group:
        if not trigger.payload_failed:
            continue
        at = trigger.payload_at
        before = [t for t in group if t.started < at - GRACE]
        after = [t for t in group if t.started >= at + GRACE]
        if len(after) < MIN_DROPS or not all(t.dropped for t in after):
            continue
        if any(t.dropped and not _within(earlier, t) for t in before):
            return None  # dropped before any payload: an IP block, or loss
        return Residual(trigger.observation.address or "", trigger.observation.port or 0,
                        trigger.observation.target, trigger.transport, trigger.failure or "",
                        trigger.started, at, after[0].started, len(after), after[-1].started,
                        trigger=trigger.observation,
                        previous=earlier.triggered if earlier is not None and any(
                            t.dropped and _within(earlier, t) for t in before) else None)
    return None


def _continuing(group: list[Try], earlier: Residual | None) -> Residual | None:
    """Only drops at the address and port this round, inside the window of a trigger an
    earlier round saw there."""
    if earlier is None or len(group) < MIN_DROPS or not all(t.dropped for t in group):
        return None
    if not (_within(earlier, group[0]) and _within(earlier, group[-1])):
        return None
    return replace(earlier, dropped=len(group), last_drop=group[-1].started, carried=True,
                   trigger=None)


def find(observations: Iterable[Observation],
         earlier: Mapping[Key, Residual] | None = None) -> dict[Key, Residual]:
    """The residual drops a round shows, per address and port: triggered in it, or (given
    the triggers earlier rounds saw, `earlier`) still running from before."""
    observations = list(observations)
    found: dict[Key, Residual] = {}
    # per family (IPv6?): [connects lost at random, connects], and the addresses read
    lost: dict[bool, list[int]] = {False: [0, 0], True: [0, 0]}
    keys: dict[bool, int] = {False: 0, True: 0}

    def count(v6: bool, dropped: int, total: int) -> None:
        lost[v6][0] += dropped
        lost[v6][1] += total

    for obs in observations:  # the baseline's handshakes: timeouts and SYNs retransmitted
        if obs.messenger is None and obs.check in ("tcp", "tls") and obs.address is not None:
            samples = obs.details.get("samples") or [obs.details]
            resent = sum(int(x.get("tcp_retransmits", 0)) for x in samples)
            tries_ = obs.tries()
            count(":" in obs.address,
                  sum(a.failure == F.GENERIC_TIMEOUT for a in tries_) + resent, len(tries_) + resent)
    for key, group in tries(observations).items():
        before = (earlier or {}).get(key)
        residual = _in_round(group, before) or _continuing(group, before)
        v6 = ":" in key[0]
        keys[v6] += 1
        # SYNs the service's completed connects had to resend were lost
        resent = sum(int(t.observation.details.get("tcp_retransmits", 0)) for t in group
                     if t.transport == "tcp" and t.connect_seconds is not None)
        count(v6, resent, resent)
        if residual is not None:
            found[key] = residual
            continue
        # up to its last completed connect, an address shows what loss does to connects: a
        # drop a completed connect followed was lost at random (a filter's drop lasts; drops
        # inside a remembered window are that drop ending).
        last = max((t.started for t in group if t.connect_seconds is not None), default=None)
        if last is not None:
            upto = [t for t in group if t.started <= last and not _within(before, t)]
            count(v6, sum(t.dropped for t in upto), len(upto))
        elif all(t.dropped and not _within(before, t) for t in group):
            # every connect dropped, from the first SYN: an IP block, or heavy loss. One
            # lost connect's worth (its retries are not independent of each other)
            count(v6, 1, 1)

    def chance(key: Key, residual: Residual) -> float:
        """How likely loss at the family's rate drops that many connects in a row, at one of
        its addresses: where packets are lost at random (an intermittent block, a lossy
        path), a silenced payload and a few dropped connects can be chance."""
        dropped, total = lost[":" in key[0]]
        rate = (dropped + 1) / (total + 2)
        return float(rate ** residual.dropped * keys[":" in key[0]])

    return {k: r for k, r in found.items() if chance(k, r) < ALPHA}


def explained(target_observations: Iterable[Observation], residual: Residual) -> list[Observation] | None:
    """The target's failed observations at the residual's address and port when every
    failed attempt there is the drop or a trigger of it (a payload failure after a completed
    connect); None when some failure is not (or nothing failed)."""
    key = (residual.address, residual.port)
    failed: list[Observation] = []
    for obs_key, group in tries(target_observations).items():
        for t in group:
            if t.failure is None:
                continue
            if obs_key != key:
                return None
            if not (t.payload_failed or (t.dropped and residual.covers(t.started))):
                return None
            if not any(o is t.observation for o in failed):
                failed.append(t.observation)
    return failed or None


class ResidualMemory:
    """The residual drops a running probe has seen, so that a later round inside the window
    knows its drops for what they are (probe.serve.service keeps one)."""

    def __init__(self) -> None:
        self.known: dict[Key, Residual] = {}

    def recall(self, now: float) -> dict[Key, Residual]:
        return {k: r for k, r in self.known.items() if now - r.triggered <= WINDOW}

    def learn(self, observations: Iterable[Observation], found: Mapping[Key, Residual],
              now: float) -> None:
        """Keep this round's drops (a carried one keeps its trigger's time); forget an
        address and port the round reached without a drop, and those past the window."""
        touched = set(tries(observations))
        kept = {k: r for k, r in self.known.items()
                if k not in touched and now - r.triggered <= WINDOW}
        kept.update(found)
        self.known = kept
