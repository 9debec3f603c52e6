"""Residual drops after a transport trigger (probe.judge.residual): the sequence at one
address and port tells a filter that drops for a while after the apps' first payload from
an IP block that drops the first SYN, within a round and, for a running probe, across the
rounds inside the window.

The observations are built as the round builds them: a confirmed step's attempts 0.5 s
apart (the lab's spacing), each with its connect time when the connect completed.
"""

from __future__ import annotations

import json

from probe.inputs.catalog import StepSpec, Target
from probe.judge import residual as R
from probe.judge.classify import TargetView, classify_round, classify_target
from probe.judge.vantage import LossContext
from probe.model import failures as F
from probe.model.observation import (
    Attempt,
    Baseline,
    Observation,
    Role,
    RoundDraft,
    VantageIdentity,
    VantageNetwork,
)
from tests.unit.conftest import World, verdicts

T = F.GENERIC_TIMEOUT
ADDR, PORT = "149.154.167.51", 443
T0 = 1_764_936_000.0  # 2025-12-05 12:00:00 UTC
ONLINE = Baseline(ipv4=True, ipv6=True)
# the service's v4 attempts time out far more than the baseline's: the loss rule would
# call every target with an unexplained timeout ip_blocking
DROPS = LossContext(baseline={4: (0, 40)}, service={("telegram", 4): (60, 80)}, targets=32)


def site(lost: int = 0, n: int = 40, address: str = "198.18.2.10") -> Observation:
    """A baseline site's sample of `n` handshakes, `lost` of them timed out."""
    tries = [Attempt(T if i < lost else None, T0, 0.01) for i in range(n)]
    return Observation(None, "base-v4", "tls", F.TLS_HANDSHAKE, None, address, 443, T0, 0.01,
                       {}, "control", tries)


SITE = site()


def find(observations: list[Observation], earlier: dict[R.Key, R.Residual] | None = None,
         baseline: Observation = SITE) -> dict[R.Key, R.Residual]:
    """The round's residual drops, with a clean baseline sample beside the observations."""
    return R.find([*observations, baseline], earlier)


def dc(name: str = "dc2-v4:443") -> Target:
    return Target(messenger="telegram", name=name, group="datacenters", endpoint=name.split("-")[0],
                  family=4, port=PORT, address=ADDR, domain=None, url=None, sni=None, trust="system",
                  steps=(StepSpec(check="tcp"), StepSpec(check="mtproto", differentials=("http_post",)),
                         StepSpec(check="mtproto_plain", needs=("tcp",))))


def step(target: str, check: str, role: Role, *tries: tuple[float, str | None, float | None],
         retransmits: int = 0, **details: object) -> Observation:
    """An observation whose attempts are `tries` (start offset from T0, failure, connect
    time or None); the kept observation is the first attempt, or the success."""
    attempts = [Attempt(f, T0 + at, 0.5 if f is None else 2.0, c) for at, f, c in tries]
    kept = next((a for a in attempts if a.failure is None), attempts[0])
    info: dict[str, object] = dict(details)
    if check == "tcp" and kept.failure is None:
        info["tcp_retransmits"] = retransmits
    elif kept.connect_seconds is not None:
        info["connect_seconds"] = kept.connect_seconds
    operation = {"tcp": F.CONNECT, "mtproto": F.MTPROTO_HANDSHAKE, "http": F.HTTP_ROUND_TRIP,
                 "tls": F.TLS_HANDSHAKE}[check]
    duration = kept.connect_seconds if check == "tcp" and kept.connect_seconds else kept.duration_seconds
    return Observation("telegram", target, check, operation, kept.failure, ADDR, PORT, kept.started,
                       duration, info, role, attempts if len(attempts) > 1 else [])


def tcp_ok(target: str, at: float, retransmits: int = 0) -> Observation:
    return step(target, "tcp", "primary", (at, None, 0.001), retransmits=retransmits)


def dropped(target: str, check: str, role: Role, at: float, n: int = 4, **details: object) -> Observation:
    return step(target, check, role, *[(at + 0.5 * i, T, None) for i in range(n)], **details)


def fet_residual_round(target: str = "dc2-v4:443", at: float = 0.0) -> list[Observation]:
    """tcp connects; obfuscated2 connects and is silenced (the trigger); its retries, the
    HTTP differential and the plain transport are dropped at connect."""
    return [
        tcp_ok(target, at),
        step(target, "mtproto", "primary", (at + 0.01, T, 0.001), *[(at + 0.01 + 0.5 * i, T, None)
                                                                    for i in (1, 2, 3)],
             transport="obfuscated2"),
        dropped(target, "http", "differential", at + 2.1, n=1, purpose="protocol_differential"),
        dropped(target, "mtproto", "differential", at + 4.2, n=1, transport="intermediate"),
    ]


def judge(target: Target, observations: list[Observation],
          residuals: dict[R.Key, R.Residual] | None = None, loss: LossContext | None = DROPS):
    return classify_target(TargetView(target, observations, ONLINE, [SITE], loss=loss,
                                      residuals=residuals))


def test_obfuscated2_silenced_then_dropped_is_protocol_filtering() -> None:
    """The issue's case: the filter silences obfuscated2 and drops everything to the
    address and port for a minute; the differentials run into the drop. Not ip_blocking
    (loss_concentrated_on_service), which the service's timeouts alone would say."""
    observations = fet_residual_round()
    verdict = judge(dc(), observations)
    assert (verdict.verdict, verdict.rule) == ("protocol_filtering", "mtproto_silenced_then_drop")
    # the sequence with times: which step first, when the drop started
    assert "12:00:00.010 obfuscated2 (dc2-v4:443) connected to 149.154.167.51:443" in verdict.reason
    assert "every connect there dropped from 12:00:00.510 on" in verdict.reason
    assert "(5 connects in this round)" in verdict.reason
    assert verdict.residual is not None
    assert verdict.residual["trigger"]["transport"] == "obfuscated2"
    assert verdict.residual["drop_since"].startswith("2025-12-05T12:00:00.510")
    assert verdict.residual["trigger_round"] == "this"
    data = verdict.to_json()
    assert data["residual"]["dropped_this_round"] == 5
    json.dumps(data)


def test_an_ip_block_from_the_first_syn_stays_ip_blocking() -> None:
    """Every connect dropped from the first SYN on: no trigger, whatever came before."""
    observations = [dropped("dc2-v4:443", "tcp", "primary", 0.0)]
    verdict = judge(dc(), observations, loss=None)
    assert (verdict.verdict, verdict.rule) == ("ip_blocking", "connect_timeout")
    assert verdict.residual is None
    # and with a residual drop remembered from long ago (past the window): still an IP block
    old = find(fet_residual_round(at=0.0))
    later = [dropped("dc2-v4:443", "tcp", "primary", R.WINDOW + 5)]
    found = find(later, old)
    assert found == {}
    assert judge(dc(), later, found, loss=None).rule == "connect_timeout"


def test_a_drop_before_any_payload_is_no_residual_drop() -> None:
    """A connect dropped before the obfuscated2 payload went out: the drop did not wait for
    a trigger (an IP block beginning, or loss)."""
    observations = fet_residual_round(at=1.0)
    observations.insert(0, dropped("dc2-media-v4:443", "tcp", "primary", 0.0, n=1))
    assert find(observations) == {}


def test_a_retransmitted_syn_is_weighed_with_the_rest_of_the_loss() -> None:
    """The connect before the trigger needed a retransmitted SYN: that is loss, weighed with
    the round's other evidence of it (one resent SYN beside a clean baseline leaves five
    drops in a row no chance); on a baseline that loses a quarter of its handshakes the
    drops may be loss too, and nothing is read."""
    observations = fet_residual_round()
    observations[0] = tcp_ok("dc2-v4:443", 0.0, retransmits=1)
    assert find(observations) != {}
    assert find(observations, baseline=site(lost=10)) == {}
    assert judge(dc(), observations, find(observations, baseline=site(lost=10))).rule \
        != "mtproto_silenced_then_drop"


def test_random_loss_elsewhere_in_the_family_disables_the_reading() -> None:
    """An intermittent block (most packets to the DCs dropped at random) can make one target
    look like a trigger and its drop by chance. At the rate the round drops connects
    elsewhere in the family (the other DCs, the baseline) five drops in a row are no longer
    unlikely: no residual drop is read there. One unlucky connect elsewhere is not that."""
    observations = fet_residual_round()

    def intermittent(n: int, address: str) -> list[Observation]:
        out = []
        for i in range(n):
            obs = step(f"dc{i}-v4:443", "tcp", "primary", (0.0, T, None), (0.5, None, 0.001))
            obs.address = f"{address}{i + 10}"
            out.append(obs)
        return out

    assert find([*observations, *intermittent(1, "149.154.175.")]) != {}
    assert find([*observations, *intermittent(10, "149.154.175.")]) == {}
    # a lossy baseline says the same
    assert find(observations, baseline=site(lost=20)) == {}
    # IPv6 loss says nothing about IPv4
    assert find([*observations, *intermittent(10, "2001:b28:f23d:f001::")]) != {}


def test_a_connect_getting_through_after_the_trigger_ends_it() -> None:
    """A later connect completed: the drop is not sustained (a lucky exemption, loss)."""
    observations = fet_residual_round()
    observations[3] = step("dc2-v4:443", "mtproto", "differential", (4.2, None, 0.001),
                           transport="intermediate")
    assert find(observations) == {}
    verdict = judge(dc(), observations)
    assert verdict.rule != "mtproto_silenced_then_drop"


def test_a_target_sharing_the_address_is_dropped_from_its_first_syn() -> None:
    """dc2-media and dc2 share an address and port: dc2's obfuscated2 triggers the drop,
    dc2-media's TCP connect starts after it and is dropped. Both are protocol_filtering;
    dc2-media's verdict names dc2's trigger."""
    trigger = fet_residual_round()
    media = [dropped("dc2-media-v4:443", "tcp", "primary", 1.0)]
    found = find([*trigger, *media])
    verdict = judge(dc("dc2-media-v4:443"), media, found)
    assert (verdict.verdict, verdict.rule) == ("protocol_filtering", "mtproto_silenced_then_drop")
    assert "obfuscated2 (dc2-v4:443)" in verdict.reason
    assert trigger[1] in verdict.evidence  # the trigger's observation, from the other target
    # alone (no residual found for it), the same observations are an IP block
    assert judge(dc("dc2-media-v4:443"), media, {}, loss=None).rule == "connect_timeout"


def test_a_later_round_inside_the_window_is_the_same_drop() -> None:
    """`probe run`: the next rounds' connects are dropped from the first SYN, 30 and 150 s
    after the trigger: the drop remembered, protocol_filtering with the trigger's times;
    past the window (180 s and 20 s of slack) the same drops are ip_blocking."""
    memory = R.ResidualMemory()
    first = fet_residual_round()
    memory.learn(first, find(first, memory.recall(T0)), T0 + 5)
    for offset in (30.0, 150.0):
        later = [dropped("dc2-v4:443", "tcp", "primary", offset)]
        found = find(later, memory.recall(T0 + offset))
        memory.learn(later, found, T0 + offset + 2)
        verdict = judge(dc(), later, found)
        assert (verdict.verdict, verdict.rule) == ("protocol_filtering", "mtproto_silenced_then_drop")
        assert verdict.residual is not None and verdict.residual["trigger_round"] == "earlier"
        assert f"{offset + 1.5 - 0.011:.0f} s after the trigger" in verdict.reason
        assert "12:00:00.010 obfuscated2 (dc2-v4:443)" in verdict.reason
    past = [dropped("dc2-v4:443", "tcp", "primary", 210.0)]
    found = find(past, memory.recall(T0 + 210))
    assert found == {}
    assert judge(dc(), past, found, loss=None).rule == "connect_timeout"


def test_a_drop_ending_during_the_first_connects_and_armed_again() -> None:
    """The old drop ends between the TCP step's attempts: the first is dropped (inside the
    remembered window), the second connects, obfuscated2 arms the drop again. A drop before
    the trigger, but the earlier one's: still the residual drop, seen afresh."""
    memory = R.ResidualMemory()
    first = fet_residual_round()
    memory.learn(first, find(first), T0 + 5)
    at = 60.0
    again = fet_residual_round(at=at + 0.5)
    again[0] = step("dc2-v4:443", "tcp", "primary", (at, T, None), (at + 0.5, None, 0.001))
    found = find(again, memory.recall(T0 + at))
    assert found[(ADDR, PORT)].carried is False
    assert found[(ADDR, PORT)].triggered > T0 + at
    assert judge(dc(), again, found).rule == "mtproto_silenced_then_drop"
    # a round without the memory cannot tell: the drop before the payload is not excused
    assert find(again) == {}


def test_the_memory_forgets_a_drop_once_a_connect_gets_through() -> None:
    memory = R.ResidualMemory()
    first = fet_residual_round()
    memory.learn(first, find(first), T0 + 5)
    assert set(memory.known) == {(ADDR, PORT)}
    clean = [tcp_ok("dc2-v4:443", 40.0),
             step("dc2-v4:443", "mtproto", "primary", (40.01, None, 0.001), transport="obfuscated2")]
    memory.learn(clean, find(clean, memory.recall(T0 + 40)), T0 + 41)
    assert memory.known == {}
    # a round that did not reach the address keeps it, until the window is over
    memory.learn(first, find(first), T0 + 5)
    memory.learn([], {}, T0 + 100)
    assert set(memory.known) == {(ADDR, PORT)}
    memory.learn([], {}, T0 + 210)
    assert memory.known == {}


def test_a_plain_transport_trigger_leaves_the_apps_unjudged() -> None:
    """A filter on the plain transport's fixed bytes with a residual drop: the trigger
    target's obfuscated2 got resPQ (ok: only the plain transport fails); a target sharing
    the address whose connects came after the trigger is inconclusive, not ip_blocking."""
    a = [tcp_ok("dc2-v4:443", 0.0),
         step("dc2-v4:443", "mtproto", "primary", (0.01, None, 0.001), transport="obfuscated2"),
         step("dc2-v4:443", "mtproto", "differential", (0.1, T, 0.001), transport="intermediate")]
    b = [dropped("dc2-media-v4:443", "tcp", "primary", 0.6)]
    found = find([*a, *b])
    assert found[(ADDR, PORT)].transport == "intermediate"
    assert judge(dc(), a, found).rule == "mtproto_plain_only_filtered"
    verdict = judge(dc("dc2-media-v4:443"), b, found)
    assert (verdict.verdict, verdict.rule) == ("inconclusive", "residual_drop_other_transport")


def test_attempts_carry_their_connect_time_in_json() -> None:
    obs = fet_residual_round()[1]
    tries = obs.to_json()["attempts"]
    assert tries[0]["connect_seconds"] == 0.001
    assert all("connect_seconds" not in t for t in tries[1:])


async def test_a_silent_dcs_attempts_each_completed_their_connect(world: World) -> None:
    """On loopback: a DC that accepts and never answers. Every attempt of the confirmed
    MTProto step records its connect time (the payload, not the connect, went unanswered),
    so no residual drop is seen: the DC is silent to every protocol."""
    world.dcs[0].mode = "silent"
    result = await world.round()
    target = f"dc1-v4:{world.dc_port}"
    mtproto = next(o for o in result.observations
                   if o.target == target and o.check == "mtproto" and o.primary)
    assert len(mtproto.attempts) >= 2
    assert all(a.failure == T and a.connect_seconds is not None for a in mtproto.attempts)
    assert find(result.observations) == {}
    assert verdicts(result)[target].rule == "mtproto_failed"


def _round(observations: list[Observation], targets: list[Target]) -> RoundDraft:
    """A round of these observations with a clean 40-handshake IPv4 baseline."""
    draft = RoundDraft(VantageIdentity("sim", "IR", 64500, "sim", "subject"), targets, T0,
                       baseline=Baseline(True, False, 1e7),
                       network=VantageNetwork(online=True, online_ipv4=True, baseline_ok=True))
    draft.observations = [site(), *observations]
    for i, obs in enumerate(draft.observations):
        obs.id = i
    return draft


def test_a_residual_drops_timeouts_are_not_weighed_as_loss() -> None:
    """The loss test compares the service's timeouts with the baseline's. A residual
    drop's timeouts are the filter's answer: counted, they would make a web name with one
    unlucky connect and handshake `ip_blocking` (loss_concentrated_on_service)."""
    web = Target(messenger="telegram", name="web.telegram.org/v4", group="domains",
                 endpoint="web.telegram.org", family=4, port=443, address="149.154.167.99",
                 domain=None, url=None, sni="web.telegram.org", trust="system",
                 steps=(StepSpec(check="tcp"), StepSpec(check="tls")))
    unlucky = [step(web.name, "tcp", "primary", (0.0, T, None), (0.5, None, 0.001)),
               step(web.name, "tls", "primary", (1.0, T, 0.001), (1.5, None, 0.001))]
    for obs in unlucky:
        obs.address = "149.154.167.99"
    got = {v.target: v for v in classify_round(_round([*fet_residual_round(), *unlucky], [dc(), web]))}
    assert got["dc2-v4:443"].rule == "mtproto_silenced_then_drop"
    assert (got[web.name].verdict, got[web.name].rule) == ("ok", "all_checks_ok"), got[web.name].reason
