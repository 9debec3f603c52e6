"""Lab scenarios of issue 9: lossy and rate-limited networks, intermittent and residual
censorship, each over several rounds of a real `probe run` in both vantages.

Why rounds and not one `probe once`: a verdict that holds on a lossy network is a claim
about a rate (0 blocking verdicts over 10 rounds, a block seen in >= 90% of them), so each
scenario runs one long-lived `probe run` per vantage and reads its rounds back from the
evidence log (one JSON line per round, the same object `probe once --format json` prints).

`probe run` works in tiers (probe.serve.schedule): its first round is full (transfers
included, the lab having no traffic budget); after it, each interval measures a few
sentinel targets and a sweep slice, and a messenger's full round (transfers again) when they
saw a change; the other targets keep their last verdict, stamped with when they were
measured. The scenarios run those shipped tiers, as a user's probe would: a lossy link
makes most intervals full rounds, a clean one few (``fresh_per_round`` in the records says
how many targets each round measured). So the rate-limit scenarios measure the rate in
their first round and show it carried after; the residual scenario's web.telegram.org is
measured in round 0 and carried (see R-residual-sni below).

netem is not available, so: iptables `-m statistic --mode random` for loss, `-m recent`
for the residual block, tc tbf/htb for rate limits. All rules live in the censor namespace,
whose `sub0` is the subject's access link.
"""

from __future__ import annotations

import fnmatch
import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from probe.measure.round import is_transfer
from probe.model.verdicts import BLOCKING_VERDICTS
from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.scenarios import DCS_V4_NET, DCS_V6_NET, throttle
from tests.lab.topology import PROBE_BIN, ROOT, Lab, LabError, ns_exec, results_lock

RESULTS_FILE = ROOT / "build" / "lab-loss.json"
SUB = plan.SUBJECT_LINK.right_if  # the censor's end of the subject's access link
Commands = tuple[tuple[str, ...], ...]
Check = Callable[["Rounds"], list[str]]  # -> mismatches


def _both(*rule: str) -> Commands:
    return tuple((tool, *rule) for tool in ("iptables", "ip6tables"))


def lossy_link(probability: float, up: bool = True, down: bool = True) -> Commands:
    """Random loss on the subject's access link, every packet in the chosen directions,
    both families (forwarded traffic and the ISP resolver on the censor itself)."""
    p = f"{probability:g}"
    stat = ("-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP")
    rules: Commands = ()
    if up:
        rules += _both("-I", "FORWARD", "-i", SUB, *stat) + _both("-I", "INPUT", "-i", SUB, *stat)
    if down:
        rules += _both("-I", "FORWARD", "-o", SUB, *stat) + _both("-I", "OUTPUT", "-o", SUB, *stat)
    return rules


def intermittent_dc_drop(probability: float) -> Commands:
    """A censor that drops most (not all) packets to the DCs: TCP retransmissions get some
    through, so single connects often succeed."""
    stat = ("-m", "statistic", "--mode", "random", "--probability", f"{probability:g}",
            "-j", "DROP")
    return (("iptables", "-A", "FORWARD", "-i", SUB, "-d", DCS_V4_NET, *stat),
            ("ip6tables", "-A", "FORWARD", "-i", SUB, "-d", DCS_V6_NET, *stat))


def targeted_dc_loss(probability: float, family: int) -> Commands:
    """A censor that drops a share of the packets to the DCs of one family only, at random:
    connects and exchanges mostly succeed through the kernel's retransmissions."""
    tool, net = ("iptables", DCS_V4_NET) if family == 4 else ("ip6tables", DCS_V6_NET)
    return ((tool, "-A", "FORWARD", "-i", SUB, "-d", net, "-m", "statistic", "--mode",
             "random", "--probability", f"{probability:g}", "-j", "DROP"),)


def residual_sni_block(name: str, seconds: int) -> Commands:
    """Iran/China-style residual censorship: a ClientHello naming ``name`` is answered with
    an RST, and every later packet to that server address on :443 is dropped for
    ``seconds`` (xt_recent keyed on the destination)."""
    recent = ("-m", "recent", "--name", "reach_residual", "--rdest")
    return (_both("-A", "FORWARD", "-i", SUB, "-p", "tcp", "--dport", "443", *recent,
                  "--rcheck", "--seconds", str(seconds), "-j", "DROP")
            + _both("-A", "FORWARD", "-i", SUB, "-p", "tcp", "--dport", "443",
                    "-m", "string", "--algo", "bm", "--string", name, *recent, "--set",
                    "-j", "REJECT", "--reject-with", "tcp-reset"))


def uplink_rate_limit(rate: str) -> Commands:
    """tbf on everything the subject receives: a slow access link, not a censor."""
    return (("tc", "qdisc", "add", "dev", SUB, "root", "tbf", "rate", rate, "burst", "32kb",
             "latency", "400ms"),)


@dataclass
class Rounds:
    """Every round of both vantages in one scenario (round JSON objects, in order)."""

    subject: list[dict[str, Any]]
    control: list[dict[str, Any]]

    @staticmethod
    def verdicts(rounds: list[dict[str, Any]], pattern: str = "*") -> list[list[dict[str, Any]]]:
        import fnmatch

        return [[v for v in r["verdicts"] if fnmatch.fnmatchcase(v["target"], pattern)]
                for r in rounds]


def blocking(rounds: list[dict[str, Any]], pattern: str = "*") -> list[int]:
    """Blocking verdicts per round among targets matching ``pattern``."""
    return [sum(v["verdict"] in BLOCKING_VERDICTS for v in vs)
            for vs in Rounds.verdicts(rounds, pattern)]


@dataclass(frozen=True)
class LossScenario:
    """One multi-round scenario: what the lab does, for how many rounds, what must hold."""

    id: str
    title: str
    how: str
    rounds: int
    censor: Commands
    checks: tuple[Check, ...]
    interval: float = 1.0  # seconds between round starts (rounds overrun it: back to back)
    summary: tuple[tuple[str, Callable[[Rounds], Any]], ...] = field(default=())
    # Its rounds are those of tests/lab/test_loss_fleet.py (the same lab state, scraped by
    # Prometheus), checked there with these checks: the lab runs them once, not twice.
    fleet: bool = False


# ------------------------------------------------------------------------ assertions


def no_blocks(vantage: str) -> Check:
    def check(r: Rounds) -> list[str]:
        rounds = getattr(r, vantage)
        return [f"{vantage} round {i}: {v['target']} {v['verdict']} ({v['rule']}: {v['reason']})"
                for i, vs in enumerate(Rounds.verdicts(rounds)) for v in vs
                if v["verdict"] in BLOCKING_VERDICTS]
    return check


def degraded(share: float) -> Check:
    """The subject's network is marked degraded in at least ``share`` of the rounds."""
    def check(r: Rounds) -> list[str]:
        marked = sum(bool(x["network"].get("degraded")) for x in r.subject)
        if marked < share * len(r.subject):
            figures = ", ".join("/".join(str(x["network"].get(k)) for k in (
                "loss_ratio", "retransmit_ratio", "retried_ratio")) for x in r.subject)
            return [f"subject degraded in {marked} of {len(r.subject)} rounds (need {share:.0%}); "
                    f"baseline loss/retransmit/retried ratio per round: {figures}"]
        return []
    return check


def no_blocks_except(pattern: str) -> Check:
    """No blocking verdict in the subject's rounds on any target not matching ``pattern``
    (a censor on one family's DCs blocks nothing else)."""
    def check(r: Rounds) -> list[str]:
        return [f"subject round {i}: {v['target']} {v['verdict']} ({v['rule']}: {v['reason']})"
                for i, vs in enumerate(Rounds.verdicts(r.subject)) for v in vs
                if v["verdict"] in BLOCKING_VERDICTS and not fnmatch.fnmatchcase(v["target"], pattern)]
    return check


def loss_figures_shown(pattern: str) -> Check:
    """Every blocking verdict on ``pattern`` from a loss rule carries its figures (the
    verdict's details, which /api/target shows as they are): the target's, the service's
    and the baseline's counts and p-values."""
    def check(r: Rounds) -> list[str]:
        problems = []
        for i, vs in enumerate(Rounds.verdicts(r.subject, pattern)):
            for v in vs:
                if v["verdict"] not in BLOCKING_VERDICTS or not v["rule"].startswith("loss_"):
                    continue
                loss = v.get("details", {}).get("loss", {})
                if not {"target", "service", "baseline"} <= set(loss):
                    problems.append(f"subject round {i}: {v['target']} {v['rule']} without "
                                    f"its figures: {v.get('details')}")
        return problems
    return check


def control_all_ok(r: Rounds) -> list[str]:
    return [f"control round {i}: {v['target']} {v['verdict']} ({v['rule']})"
            for i, vs in enumerate(Rounds.verdicts(r.control)) for v in vs
            if v["verdict"] != "ok"]


def detected(pattern: str, share: float, failures: tuple[str, ...]) -> Check:
    """A blocking verdict on a target matching ``pattern`` in at least ``share`` of the
    subject's rounds, with one of ``failures`` behind it."""
    def check(r: Rounds) -> list[str]:
        hits = sum(n > 0 for n in blocking(r.subject, pattern))
        problems = []
        if hits < share * len(r.subject):
            problems.append(f"blocking verdict on {pattern} in {hits} of {len(r.subject)} rounds")
        seen = {e.get("failure") for vs in Rounds.verdicts(r.subject, pattern) for v in vs
                if v["verdict"] in BLOCKING_VERDICTS for e in v["evidence"]}
        if failures and not seen & set(failures):
            problems.append(f"none of {failures} behind the blocking verdicts (saw {seen})")
        return problems
    return check


def verdict_in_every_round(pattern: str, verdict: str, failures: tuple[str, ...] = ()) -> Check:
    def check(r: Rounds) -> list[str]:
        problems = []
        for i, vs in enumerate(Rounds.verdicts(r.subject, pattern)):
            for v in vs:
                if v["verdict"] != verdict:
                    problems.append(f"subject round {i}: {v['target']} {v['verdict']} "
                                    f"({v['rule']}: {v['reason']})")
                seen = {e.get("failure") for e in v["evidence"]}
                missing = [f for f in failures if f not in seen]
                if v["verdict"] == verdict and missing:
                    problems.append(f"subject round {i}: {v['target']}: {missing} not in {seen}")
        return problems
    return check


def transfer_measured(pattern: str) -> Check:
    """Every round's verdict on targets matching ``pattern`` rests on a transfer (a
    throughput check): without one a rate-limit scenario would pass without measuring a
    rate (as it did while a traffic budget held the first transfers back)."""
    def check(r: Rounds) -> list[str]:
        return [f"subject round {i}: {v['target']} {v['verdict']} without a transfer "
                f"(evidence: {sorted({e['check'] for e in v['evidence']})})"
                for i, vs in enumerate(Rounds.verdicts(r.subject, pattern)) for v in vs
                if not any(is_transfer(e["check"]) for e in v["evidence"])]
    return check


def verdict_absent(verdict: str) -> Check:
    def check(r: Rounds) -> list[str]:
        return [f"{name} round {i}: {v['target']} {verdict}"
                for name, rounds in (("subject", r.subject), ("control", r.control))
                for i, vs in enumerate(Rounds.verdicts(rounds)) for v in vs
                if v["verdict"] == verdict]
    return check


def _lossy(percent: int, rounds: int = 10, fleet: bool = False) -> LossScenario:
    checks: tuple[Check, ...] = (no_blocks("subject"), no_blocks("control"), control_all_ok)
    if percent >= 15:
        checks += (degraded(0.8),)
    return LossScenario(
        f"L{percent:02d}-lossy-uplink",
        f"Lossy uplink, {percent}% both ways",
        f"no censor; {percent}% of packets dropped at random on the subject's access link, "
        "both directions, both families (iptables statistic)"
        + ("; the rounds of the fleet test (scraped by Prometheus)" if fleet else ""),
        rounds, lossy_link(percent / 100), checks, fleet=fleet)


def _targeted(percent: int, family: int, rounds: int = 10) -> LossScenario:
    """Issue 19: a share of the packets to one family's DCs dropped, nothing else touched.
    Connects and MTProto exchanges mostly succeed through retransmissions (all DC targets
    read `ok` before the service's retransmissions were weighed); now a blocking verdict
    on that family's DCs in >= 9 of 10 rounds, and none on anything else."""
    dcs = f"dc*-v{family}*"
    return LossScenario(
        f"LT{percent}-dc-v{family}", f"Targeted loss, {percent}% to the IPv{family} DCs",
        f"the censor drops {percent}% of the packets to the IPv{family} DCs at random "
        "(iptables statistic, the subject's side); the other family, the fronts and the "
        "baseline untouched", rounds, targeted_dc_loss(percent / 100, family),
        (detected(dcs, 0.9, ()), no_blocks_except(dcs), loss_figures_shown(dcs),
         no_blocks("control"), control_all_ok))


TARGETED = (_targeted(30, 4), _targeted(30, 6), _targeted(50, 4), _targeted(50, 6))

LOSS_SCENARIOS: tuple[LossScenario, ...] = (
    _lossy(5), _lossy(15), _lossy(30, fleet=True), *TARGETED,
    LossScenario(
        "L25-downlink-only", "Lossy downlink only, 25%",
        "no censor; 25% of the packets *to* the subject dropped (answers, SYN-ACKs), none of "
        "its own", 5, lossy_link(0.25, up=False),
        (no_blocks("subject"), no_blocks("control"), control_all_ok, degraded(0.6))),
    # 5 rounds, not 10: every round of the runs measured had 12-22 blocking DC verdicts
    # (2026-12-05, 20 rounds in 2 runs), and the check asks for one in >= 90% of the
    # rounds, i.e. in all 5 (one in 9 of 10 before): ~100 s less.
    LossScenario(
        "L80-intermittent-dc-block", "Intermittent targeted block",
        "the censor drops 80% of the packets to the DCs (both families) at random; "
        "baseline and web fronts untouched", 5, intermittent_dc_drop(0.8),
        (detected("dc*", 0.9, ("generic_timeout_error",)), no_blocks("control"),
         control_all_ok)),
    # With the tiers, web.telegram.org is measured in round 0 and carried in rounds 1-2 (it
    # is neither a sentinel nor in those rounds' sweep slices). Measured in every round
    # (schedule.sweep = interval, tried 2026-12-05) it came out ip_blocking/connect_timeout
    # in rounds 1 and 2 of one run of two, apparently because a sweep's ClientHello armed the
    # residual drop and the full round a change triggered at once (the logs of that run were
    # not kept) reached the address inside the 20 s window.
    # A scheduler/classifier gap (probe/serve/schedule.py, probe/judge), reported, not
    # papered over here: this scenario keeps the shipped tiers.
    LossScenario(
        "R-residual-sni", "Residual censorship",
        "a ClientHello naming web.telegram.org is reset, then every packet to that address's "
        ":443 is dropped for 20 s (xt_recent); rounds 30 s apart", 3,
        residual_sni_block("web.telegram.org", 20),
        (verdict_in_every_round("web.telegram.org/*", "sni_filtering", ("connection_reset",)),
         no_blocks("control")), interval=30),
    LossScenario(
        "T-uplink-rate-limit", "Rate limit on the whole access link",
        "tc tbf at 2 Mbit/s on everything the subject receives (a slow link, not a censor)",
        3, uplink_rate_limit("2mbit"),
        (verdict_absent("throttling"), no_blocks("subject"), transfer_measured("telegram.org/*"),
         transfer_measured("web.telegram.org/*"))),
    LossScenario(
        "T-front-rate-limit", "The same rate limit on the service's fronts only",
        "tc htb + tbf at 2 Mbit/s on traffic from the web fronts only", 3, throttle("2mbit"),
        (verdict_in_every_round("telegram.org/*", "throttling"),
         verdict_in_every_round("web.telegram.org/*", "throttling"), no_blocks("control"),
         transfer_measured("telegram.org/*"), transfer_measured("web.telegram.org/*"))),
)


# ------------------------------------------------------------------------ running rounds


Configure = Callable[[str, dict[str, Any]], None]  # (vantage, config data) -> changes it


def _config(lab: Lab, vantage: str, interval: float,
            configure: Configure | None = None) -> tuple[Path, Path]:
    """The lab probe config with evidence on and the given interval (and whatever
    `configure` changes); (config, evidence dir)."""
    data = probe_config(vantage, lab.workdir, lab.ca_dir / "ca.pem")
    evidence = lab.workdir / "evidence" / vantage
    data["schedule"]["interval"] = interval
    data["evidence"] = {"directory": str(evidence)}
    if configure is not None:
        configure(vantage, data)
    path = lab.workdir / "configs" / f"{vantage}-rounds.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, evidence


def read_rounds(evidence: Path) -> list[dict[str, Any]]:
    path = evidence / "evidence.jsonl"
    if not path.exists():
        return []
    # the probe may be writing a round right now: only whole lines are rounds
    text = path.read_text()
    complete = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_rounds(lab: Lab, rounds: int, interval: float, per_round: float = 60,
               configure: Configure | None = None) -> Rounds:
    """`probe run` in both vantages until each wrote ``rounds`` rounds; each is stopped
    (SIGTERM) once it has (the control, done long before the lossy subject, would otherwise
    run a round a second on the shared cores while it waits). `configure` changes a
    vantage's config data before it is written."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    evidence: dict[str, Path] = {}
    try:
        for vantage in (plan.SUBJECT, plan.CONTROL):
            config, evidence[vantage] = _config(lab, vantage, interval, configure)
            subprocess.run(["rm", "-rf", str(evidence[vantage])], check=True)
            log = (lab.logdir / f"probe-run-{vantage}.log").open("ab")
            procs[vantage] = subprocess.Popen(
                [*ns_exec(vantage), str(PROBE_BIN), "run", "--config", str(config),
                 "--listen", "127.0.0.1:9651"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + rounds * (per_round + interval) + 30
        while True:
            done = {v: len(read_rounds(e)) for v, e in evidence.items()}
            if all(n >= rounds for n in done.values()):
                break
            for vantage, proc in procs.items():
                if done[vantage] >= rounds:
                    _stop(proc)
                elif proc.poll() is not None:
                    raise LabError(f"{vantage}: probe run exited {proc.returncode} "
                                   f"(log: {lab.logdir}/probe-run-{vantage}.log)")
            if time.monotonic() > deadline:
                raise LabError(f"rounds not done in time: {done} of {rounds}")
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            _stop(proc)
    return Rounds(read_rounds(evidence[plan.SUBJECT])[:rounds],
                  read_rounds(evidence[plan.CONTROL])[:rounds])


def summarise(scenario: LossScenario, r: Rounds, mismatches: list[str]) -> dict[str, Any]:
    """The record docs/lab-results.md is rendered from."""
    def per_vantage(rounds: list[dict[str, Any]]) -> dict[str, Any]:
        verdicts: dict[str, int] = {}
        for vs in Rounds.verdicts(rounds):
            for v in vs:
                verdicts[v["verdict"]] = verdicts.get(v["verdict"], 0) + 1
        return {
            "rounds": len(rounds),
            "blocking_per_round": blocking(rounds),
            "dc_blocking_per_round": blocking(rounds, "dc*"),
            # of those, the DC verdicts measured in that round (the others were carried)
            "dc_blocking_fresh_per_round": [
                sum(v["verdict"] in BLOCKING_VERDICTS and v.get("measured", x["started"]) >= x["started"]
                    for v in x["verdicts"] if fnmatch.fnmatchcase(v["target"], "dc*"))
                for x in rounds],
            "verdicts": verdicts,
            "degraded_rounds": sum(bool(x["network"].get("degraded")) for x in rounds),
            "loss_ratio": [x["network"].get("loss_ratio") for x in rounds],
            "retransmit_ratio": [x["network"].get("retransmit_ratio") for x in rounds],
            "retried_ratio": [x["network"].get("retried_ratio") for x in rounds],
            # targets measured in each round (the others carried their last verdict)
            "fresh_per_round": [sum(v.get("measured", x["started"]) >= x["started"]
                                    for v in x["verdicts"]) for x in rounds],
        }
    return {"id": scenario.id, "title": scenario.title, "how": scenario.how,
            "subject": per_vantage(r.subject), "control": per_vantage(r.control),
            "mismatches": mismatches, "passed": not mismatches}


def run_loss_scenario(lab: Lab, scenario: LossScenario) -> tuple[dict[str, Any], Rounds]:
    lab.reset()
    lab.censor(scenario.censor)
    return judge(scenario, run_rounds(lab, scenario.rounds, scenario.interval))


def judge(scenario: LossScenario, rounds: Rounds) -> tuple[dict[str, Any], Rounds]:
    """The scenario's checks over its rounds: (the record, the rounds)."""
    mismatches = [m for check in scenario.checks for m in check(rounds)]
    return summarise(scenario, rounds, mismatches), rounds


def save(records: list[dict[str, Any]], path: Path = RESULTS_FILE) -> None:
    """Write the records, keeping those of other scenarios already in the file (the fleet
    test adds its scenario's record to test_loss.py's), in LOSS_SCENARIOS order."""
    with results_lock(path):  # the fleet test may run in another lab instance meanwhile
        kept = json.loads(path.read_text())["scenarios"] if path.exists() else []
        by_id = {r["id"]: r for r in [*kept, *records]}
        order = [s.id for s in LOSS_SCENARIOS]
        ordered = sorted(by_id.values(),
                         key=lambda r: order.index(r["id"]) if r["id"] in order else len(order))
        path.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "scenarios": ordered}, indent=1))
