"""Lab scenarios of issue 19 section 3: residual blocking after a transport trigger.

A filter in front of the IPv4 DCs applies the GFW's rule for fully encrypted traffic (Wu et
al. 2023; tests/support/fetcensor.py) and, once it has silenced a random-looking first
packet, drops every packet from the subject to that address and port for 60 s (Iran's
protocol filter) or 180 s (the GFW's longest penalty). The DC's plain-MTProto and HTTP
differentials, the step's own retries and, inside the window, the next rounds' first SYN
all run into the drop: reach must name it `protocol_filtering` (rule
`mtproto_silenced_then_drop`, probe/judge/residual.py), never `ip_blocking`, in every
round, with the sequence and its times in the verdict (`residual`).

Each scenario is several rounds of a real `probe run` in both vantages
(tests/lab/scenarios_loss.py's machinery): 6 rounds 15 s apart for the 60 s drop (the drop
ends and is armed again inside the run), 3 rounds 75 s apart for the 180 s one (the drop
judged fresh ~75 s after its trigger, past a 60 s window, and still running at ~150 s).
The control's path has no filter: everything ok.

How the drop is made: the subject's connections to the IPv4 DCs (ports 80, 443) are
REDIRECTed to the relay (nat PREROUTING); on a block the relay writes the destination into
the xt_recent list ``reach_fet<port>``; a mangle PREROUTING rule (before the REDIRECT)
drops the subject's packets to an address in that list for the scenario's seconds. IPv6
DCs are not filtered: they must stay `ok`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.lab import plan
from tests.lab.scenarios import DCS_V4_NET
from tests.lab.scenarios_loss import (
    Check,
    Commands,
    LossScenario,
    Rounds,
    control_all_ok,
    judge,
    no_blocks,
    run_rounds,
)
from tests.lab.scenarios_transport import exempt_by_chance, random_first_packet_targets
from tests.lab.topology import Lab, ServiceSpec

FET_PORT = 7001  # not the transport scenarios' relay port: the two never share a lab
LIST = "reach_fet"  # xt_recent lists reach_fet443 and reach_fet80
LOG_NAME = "fetcensor-residual.jsonl"
V4_DCS = "dc*-v4*"  # every IPv4 DC target: dc1-v4:443, dc2-v4b:80, dc2-media-v4:443 ...
RULE = "mtproto_silenced_then_drop"


def relay(lab: Lab) -> ServiceSpec:
    return ServiceSpec("residual-fetcensor", plan.CENSOR, "fetcensor", [("0.0.0.0", FET_PORT)],
                       ["--log", str(lab.workdir / LOG_NAME), "--residual", LIST])


def fet_residual(seconds: int) -> Commands:
    """The filter in front of the IPv4 DCs, with a residual drop of ``seconds``."""
    sub = plan.SUBJECT_LINK.right_if
    rules: list[tuple[str, ...]] = []
    for port in plan.DC_PORTS:
        rules.append(("iptables", "-t", "mangle", "-A", "PREROUTING", "-i", sub, "-p", "tcp",
                      "-d", DCS_V4_NET, "--dport", str(port), "-m", "recent", "--name",
                      f"{LIST}{port}", "--rdest", "--rcheck", "--seconds", str(seconds),
                      "-j", "DROP"))
    rules.append(("iptables", "-t", "nat", "-A", "PREROUTING", "-i", sub, "-p", "tcp",
                  "-d", DCS_V4_NET, "-m", "multiport", "--dports",
                  ",".join(str(p) for p in plan.DC_PORTS), "-j", "REDIRECT", "--to-ports",
                  str(FET_PORT)))
    return tuple(rules)


def decisions(lab: Lab) -> list[dict[str, Any]]:
    import json

    path = lab.workdir / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Lucky:
    """Targets whose random first packet the filter exempted by chance during the run
    (about 1 in 400, Ex2: the first six bytes printable): rightly `ok` in the round that
    measured them then. Filled in by the test before the checks run."""

    targets: set[str]


def v4_dcs_filtered(lucky: Lucky) -> Check:
    """Every IPv4 DC target of every subject round is protocol_filtering by the residual
    rule, with the sequence in its verdict; a target the filter exempted by chance is
    excused (counted in the record)."""
    expected = {t for names in random_first_packet_targets().values() for t in names
                if fnmatch.fnmatchcase(t, V4_DCS)}

    def check(r: Rounds) -> list[str]:
        problems = []
        for i, vs in enumerate(Rounds.verdicts(r.subject, V4_DCS)):
            missing = expected - {v["target"] for v in vs}
            if missing:
                problems.append(f"subject round {i}: no verdict for {sorted(missing)}")
            for v in vs:
                if v["target"] in lucky.targets and v["verdict"] == "ok":
                    continue
                if (v["verdict"], v["rule"]) != ("protocol_filtering", RULE):
                    problems.append(f"subject round {i}: {v['target']} {v['verdict']} "
                                    f"({v['rule']}: {v['reason']})")
                elif not v.get("residual") or "drop_since" not in v["residual"]:
                    problems.append(f"subject round {i}: {v['target']}: no residual sequence")
        return problems
    return check


def others_ok(r: Rounds) -> list[str]:
    """IPv6 DCs and the web names pass no filter: ok in every subject round."""
    return [f"subject round {i}: {v['target']} {v['verdict']} ({v['rule']})"
            for i, vs in enumerate(Rounds.verdicts(r.subject)) for v in vs
            if not fnmatch.fnmatchcase(v["target"], V4_DCS) and v["verdict"] != "ok"]


def residuals(r: Rounds) -> list[dict[str, Any]]:
    """Every residual sequence of the subject's IPv4 DC verdicts, round by round."""
    return [v["residual"] for vs in Rounds.verdicts(r.subject, V4_DCS) for v in vs
            if v.get("residual")]


def remembered_beyond(seconds: float) -> Check:
    """Some round's drops were judged by a trigger an earlier round saw, more than
    ``seconds`` before: the memory covered them (a lone round would say ip_blocking)."""
    def check(r: Rounds) -> list[str]:
        carried = [x["seconds_since_trigger"] for x in residuals(r) if x["trigger_round"] == "earlier"]
        if not carried or max(carried) <= seconds:
            return [f"no drop judged by an earlier round's trigger more than {seconds:.0f} s "
                    f"later (carried: {sorted(carried)[-5:]})"]
        return []
    return check


def armed_again(after: float) -> Check:
    """The drop ended and the filter armed it again: some verdict's trigger came more than
    ``after`` seconds after the first round's first trigger."""
    def check(r: Rounds) -> list[str]:
        triggers = sorted({_time(x["trigger"]["payload"]) for x in residuals(r)})
        if not triggers or triggers[-1] - triggers[0] <= after:
            span = triggers[-1] - triggers[0] if triggers else None
            return [f"no trigger more than {after:.0f} s after the first (span {span})"]
        return []
    return check


def scenario(seconds: int, rounds: int, interval: float, checks: tuple[Check, ...],
             lucky: Lucky) -> LossScenario:
    return LossScenario(
        f"R{seconds}-fet-residual", f"Fully encrypted traffic filter, {seconds} s residual drop",
        "the IPv4 DCs behind a relay applying the GFW's rule for fully encrypted traffic; a "
        f"silenced first packet arms a drop of every packet to that address and port for "
        f"{seconds} s (xt_recent); rounds {interval:.0f} s apart",
        rounds, fet_residual(seconds),
        (v4_dcs_filtered(lucky), others_ok, no_blocks("control"), control_all_ok, *checks),
        interval=interval)


def scenarios() -> tuple[tuple[LossScenario, Lucky], ...]:
    made = []
    for seconds, rounds, interval, checks in (
            # 6 rounds 15 s apart: the first drops end ~60 s in, a later round arms them again
            (60, 6, 15.0, lambda: (remembered_beyond(10), armed_again(60))),
            # 3 rounds 75 s apart: round 1's sentinel sees the drop (a change), and the full
            # round that follows judges every IPv4 DC by round 0's triggers ~75 s earlier,
            # past a 60 s window; round 2 (~150 s) finds the same drops. (Rounds 30 s apart
            # showed no more: a partial round whose steps come to the same as before only
            # restamps the verdict, so only a changed round's verdicts are fresh.)
            (180, 3, 75.0, lambda: (remembered_beyond(60),))):
        lucky = Lucky(set())
        made.append((scenario(seconds, rounds, interval, checks(), lucky), lucky))
    return tuple(made)


SCENARIOS = scenarios()


def run(lab: Lab, scenario: LossScenario, lucky: Lucky) -> tuple[dict[str, Any], Rounds]:
    """Reset, arm the filter, run the rounds; the relay's chance exemptions excuse their
    targets; the record (tests/lab/scenarios_loss.py's, plus the relay's decisions)."""
    lab.reset()
    before = len(decisions(lab))
    lab.censor(scenario.censor)
    rounds = run_rounds(lab, scenario.rounds, scenario.interval)
    made = decisions(lab)[before:]
    names = random_first_packet_targets()
    lucky.targets = {t for destination in exempt_by_chance(made) for t in names.get(destination, [])}
    record, rounds = judge(scenario, rounds)
    record["fet_decisions"] = {
        "blocked": sum(d["verdict"] == "blocked" for d in made),
        "armed": sum(bool(d.get("residual")) for d in made),
        "exempt": sum(d["verdict"] != "blocked" for d in made)}
    record["exempt_by_chance"] = sorted(lucky.targets)
    record["rounds_seconds"] = [round(x["duration_seconds"], 1) for x in rounds.subject]
    # per subject round: IPv4 DC verdicts whose trigger was in that round / an earlier one,
    # and the longest time from a remembered trigger to the round's drops
    per_round = [[v.get("residual") or {} for v in vs]
                 for vs in Rounds.verdicts(rounds.subject, V4_DCS)]
    record["residual_rounds"] = [
        {"this": sum(x.get("trigger_round") == "this" for x in xs),
         "earlier": sum(x.get("trigger_round") == "earlier" for x in xs),
         "max_seconds_since_trigger": max((x.get("seconds_since_trigger", 0) for x in xs), default=0)}
        for xs in per_round]
    carried = [v for vs in Rounds.verdicts(rounds.subject, V4_DCS) for v in vs
               if (v.get("residual") or {}).get("trigger_round") == "earlier"]
    if carried:
        record["example_reason"] = carried[-1]["reason"]
    return record, rounds

