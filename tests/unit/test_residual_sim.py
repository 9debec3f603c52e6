"""How often random loss reads as a residual drop: the false-positive rate of the residual
rules (probe/judge/residual.py) per target-round, simulated.

Each simulated round is what `probe run` measures of 16 IPv4 DC targets (each at its own
address) and a 40-handshake baseline, packet by packet: a connect sends SYNs at 0, 1 and 3 s
(Linux's initial RTO, doubled) until `connect` seconds, a payload is resent at 0.2, 0.6,
1.4 and 3.0 s after the connect until `mtproto` seconds, each try getting through when
neither its packet nor the answer is lost. The plan is the shipped one: tcp, obfuscated2
(the plain-HTTP differential when it failed), the plain transport; a failed step is tried
4 times 1 s apart. Rounds follow each other 30 s apart with the memory a running probe
keeps, so a false trigger remembered into later rounds counts as well.

Networks: uniform loss on everything (the vantage's own network: the baseline loses as
much) and loss on the DCs only (an intermittent IP block, which must stay `ip_blocking`,
not turn into `protocol_filtering`). A false positive is a verdict by
`mtproto_silenced_then_drop` or `residual_drop_other_transport` on a network that has no
residual drop at all.

    python -m tests.unit.test_residual_sim [rounds]   # prints the table (docs/lab.md)
"""

from __future__ import annotations

import random
import sys

from probe.inputs.catalog import StepSpec, Target
from probe.judge import residual as R
from probe.judge.classify import RESIDUAL_RULES, classify_round
from probe.model import failures as F
from probe.model.observation import (
    Attempt,
    Baseline,
    Observation,
    RoundDraft,
    VantageIdentity,
    VantageNetwork,
)

T = F.GENERIC_TIMEOUT
CONNECT, MTPROTO, SPACING, ATTEMPTS = 5.0, 5.0, 1.0, 4  # the shipped defaults
SYN_AT = (0.0, 1.0, 3.0)
RESEND_AT = (0.0, 0.2, 0.6, 1.4, 3.0)
RTT = 0.05
DCS = 16
SAMPLES = 40
STEPS = (StepSpec(check="tcp"), StepSpec(check="mtproto", differentials=("http_post",)),
         StepSpec(check="mtproto_plain", needs=("tcp",)))
TARGETS = [Target(messenger="telegram", name=f"dc{i}-v4:443", group="datacenters",
                  endpoint=f"dc{i}", family=4, port=443, address=f"149.154.170.{i}", domain=None,
                  url=None, sni=None, trust="system", steps=STEPS) for i in range(1, DCS + 1)]


def connect(rng: random.Random, p: float) -> float | None:
    """The connect time, or None when every SYN within the timeout was lost."""
    for at in SYN_AT:
        if at >= CONNECT:
            break
        if rng.random() > p and rng.random() > p:
            return at + RTT
    return None


def exchange(rng: random.Random, p: float, connected: float) -> bool:
    return any(connected + at < MTPROTO and rng.random() > p and rng.random() > p
               for at in RESEND_AT)


class Censor:
    """The positive control: the fully-encrypted-traffic filter with a residual drop of
    `seconds` (obfuscated2 silenced, then every connect to the address dropped)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until: dict[str, float] = {}

    def drops(self, address: str, at: float) -> bool:
        return self.until.get(address, 0.0) > at

    def silences(self, address: str, at: float, transport: str) -> bool:
        if transport != "obfuscated2":
            return False
        self.until[address] = at + self.seconds
        return True


def attempt(rng: random.Random, p: float, started: float, payload: bool,
            address: str = "", transport: str = "", censor: Censor | None = None) -> Attempt:
    if censor is not None and censor.drops(address, started):
        return Attempt(T, started, CONNECT)
    took = connect(rng, p)
    if took is None:
        return Attempt(T, started, CONNECT)
    if payload and censor is not None and censor.silences(address, started + took, transport):
        return Attempt(T, started, MTPROTO, took)
    if payload and not exchange(rng, p, took):
        return Attempt(T, started, MTPROTO, took)
    return Attempt(None, started, took + RTT, took)


def step(rng: random.Random, p: float, target: Target, check: str, started: float,
         payload: bool, role: str = "primary", confirm: bool = True, censor: Censor | None = None,
         **details: object) -> tuple[Observation, float]:
    """A step as the round runs it: (its observation, when it ended)."""
    tries: list[Attempt] = []
    transport = str(details.get("transport") or check)
    for i in range(ATTEMPTS if confirm else 1):
        tries.append(attempt(rng, p, started + i * SPACING, payload, target.address or "",
                             transport, censor))
        if tries[-1].failure is None:
            break
    kept = next((a for a in tries if a.failure is None), tries[0])
    info: dict[str, object] = dict(details)
    if check == "tcp" and kept.failure is None:
        info["tcp_retransmits"] = SYN_AT.index(round((kept.connect_seconds or RTT) - RTT, 3))
    elif kept.connect_seconds is not None:
        info["connect_seconds"] = kept.connect_seconds
    obs = Observation("telegram", target.name, check, "op", kept.failure, target.address, 443,
                      kept.started, kept.duration_seconds, info, role,  # type: ignore[arg-type]
                      tries if len(tries) > 1 else [])
    return obs, max(a.started + a.duration_seconds for a in tries)


def dc_round(rng: random.Random, p: float, target: Target, at: float,
             censor: Censor | None = None) -> list[Observation]:
    tcp, end = step(rng, p, target, "tcp", at, payload=False, censor=censor)
    if not tcp.ok:
        return [tcp]
    out = [tcp]
    obf, end = step(rng, p, target, "mtproto", end, payload=True, censor=censor,
                    transport="obfuscated2")
    out.append(obf)
    if not obf.ok:
        http, end = step(rng, p, target, "http", end, payload=True, role="differential",
                         confirm=False, censor=censor, purpose="protocol_differential")
        out.append(http)
    plain, end = step(rng, p, target, "mtproto", end, payload=True, role="differential",
                      confirm=False, censor=censor, transport="intermediate")
    out.append(plain)
    return out


def simulate_round(rng: random.Random, p_dc: float, p_base: float, at: float,
                   memory: R.ResidualMemory, censor: Censor | None = None) -> tuple[list[str], int]:
    """One round: the rules of the IPv4 DCs' verdicts, and how many addresses show a
    trigger followed by drops before loss is weighed (what the loss guard has to turn
    down)."""
    tries = [Attempt(None if connect(rng, p_base) is not None and exchange(rng, p_base, 0.0)
                     else T, at, 0.1) for _ in range(SAMPLES)]
    site = Observation(None, "base-v4", "tls", "op", None if any(a.failure is None for a in tries)
                       else T, "198.18.2.10", 443, at, 0.1, {}, "control", tries)
    observations = [site]
    for target in TARGETS:
        observations += dc_round(rng, p_dc, target, at, censor)
    draft = RoundDraft(VantageIdentity("sim"), TARGETS, at, baseline=Baseline(True, False),
                       network=VantageNetwork(online=True, online_ipv4=True, baseline_ok=True))
    draft.observations = observations
    draft.finished = at + 20
    earlier = memory.recall(at)
    raw = sum(R._in_round(group, earlier.get(key)) is not None
              for key, group in R.tries(observations).items())
    found = R.find(observations, earlier)
    memory.learn(observations, found, draft.finished)
    return [v.rule for v in classify_round(draft, found)], raw


#: (name, loss on the DCs, loss on the baseline)
NETWORKS = (
    ("clean", 0.0, 0.0),
    ("uniform 5%", 0.05, 0.05), ("uniform 10%", 0.1, 0.1), ("uniform 20%", 0.2, 0.2),
    ("uniform 30%", 0.3, 0.3), ("uniform 50%", 0.5, 0.5),
    ("DCs only 30%", 0.3, 0.0), ("DCs only 50%", 0.5, 0.0), ("DCs only 80%", 0.8, 0.0),
    ("DCs only 90%", 0.9, 0.0),
)


def residual_verdicts(p_dc: float, p_base: float, rounds: int, seed: int, run_length: int = 10,
                      residual: float | None = None) -> tuple[int, int, int]:
    """(residual verdicts, target-rounds, raw trigger-then-drops patterns) over `rounds`
    rounds, in runs of `run_length` rounds 30 s apart sharing a memory; `residual`: behind
    the filter with that residual drop (the positive control)."""
    rng = random.Random(seed)
    hits = total = raw = 0
    for start in range(0, rounds, run_length):
        memory = R.ResidualMemory()
        censor = Censor(residual) if residual is not None else None
        for i in range(min(run_length, rounds - start)):
            rules, patterns = simulate_round(rng, p_dc, p_base, 1_764_936_000.0 + 30 * i, memory,
                                             censor)
            hits += sum(r in RESIDUAL_RULES for r in rules)
            total += len(rules)
            raw += patterns
    return hits, total, raw


def test_random_loss_never_reads_as_a_residual_drop() -> None:
    """100 rounds per network (the table in docs/lab.md is of 1,000): no residual verdict
    on any target, whatever the loss."""
    for n, (name, p_dc, p_base) in enumerate(NETWORKS):
        hits, total, _ = residual_verdicts(p_dc, p_base, 100, seed=19_000 + n)
        assert hits == 0, f"{name}: {hits} residual verdicts in {total} target-rounds"


def test_the_filter_with_its_residual_drop_is_read() -> None:
    """The positive control, through the same simulation: behind the filter with a 60 s
    drop, the IPv4 DC targets are read as the residual drop (rounds 30 s apart: triggered
    afresh, or remembered): all of them on a clean network, >= 90% at 5% loss (where a round
    whose loss could make the drops is left to the other rules)."""
    for p in (0.0, 0.05):
        hits, total, _ = residual_verdicts(p, p, 50, seed=7, residual=60.0)
        assert hits >= 0.9 * total, f"loss {p:.0%}: {hits} of {total}"


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 1000
    print("| network | rounds | target-rounds | trigger-then-drops patterns (before the loss "
          "guard) | residual verdicts | rate per target-round |")
    print("|---|---|---|---|---|---|")
    rows = [(name, p_dc, p_base, None) for name, p_dc, p_base in NETWORKS]
    rows += [("filter + 60 s drop, clean", 0.0, 0.0, 60.0),
             ("filter + 60 s drop, 5% loss", 0.05, 0.05, 60.0),
             ("filter + 180 s drop, 10% loss", 0.1, 0.1, 180.0)]
    for n, (name, p_dc, p_base, residual) in enumerate(rows):
        hits, total, raw = residual_verdicts(p_dc, p_base, rounds, seed=29_000 + n,
                                             residual=residual)
        print(f"| {name} | {rounds} | {total} | {raw} | {hits} | {hits / total:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
