"""What a round costs: bytes counted at the sockets, and a baseline sized to the question."""

from __future__ import annotations

from probe.judge.vantage import samples_needed
from probe.measure.round import Round, _unsteady, run_round
from probe.measure.wire.net import TCP_HEADERS, UDP_HEADERS
from probe.model.observation import Attempt, Observation
from probe.sinks.metrics import Metrics
from probe.sinks.report import round_json
from tests.unit.conftest import WEB, World


async def test_bytes_are_counted_per_messenger_and_check(world: World) -> None:
    result = await world.round()
    traffic = result.traffic
    assert set(traffic) == {"telegram", "baseline"}
    sent, received = traffic["telegram"]
    tls = next(o for o in result.observations if o.check == "tls" and o.target == f"{WEB}/v4"
               and o.role == "primary")
    # a TLS handshake: a ClientHello of a few hundred bytes out, a certificate in, and at
    # least the SYN, its answer and the close as frames on the link
    assert tls.details["bytes_sent"] > 200 + 3 * TCP_HEADERS[4]
    assert tls.details["bytes_received"] > 500
    dns = next(o for o in result.observations if o.check == "dns" and o.role == "primary"
               and o.target == f"{WEB}/v4")
    assert dns.details["bytes_sent"] >= 2 * (len(WEB) + 16 + UDP_HEADERS[4])  # two resolvers
    per_step = sum(o.details.get("bytes_sent", 0) for o in result.observations
                   if o.messenger == "telegram")
    # the messenger's total is its steps' (and what attempts cut short by a success sent)
    assert 0.9 * sent <= per_step <= sent
    assert tls.details["bytes_received"] > tls.details["bytes_sent"]  # the certificate came in
    assert received > 0
    out = round_json(result)["traffic"]
    assert out["bytes_sent"] == sent + traffic["baseline"][0]
    metrics = Metrics()
    metrics.record_round(result)
    metrics.record_round(result)
    text = metrics.render().decode()
    assert (f'reach_bytes_total{{vantage="unit",messenger="telegram",direction="sent"}} {2 * sent}'
            in text)


async def test_baseline_one_handshake_when_everything_answers(world: World) -> None:
    result = await world.round()
    site = next(o for o in result.observations if o.messenger is None and o.target == "site")
    assert site.ok and len(site.tries()) == 1
    assert result.network.loss_ratio == 0.0


async def test_baseline_sampled_when_a_step_timed_out(world: World) -> None:
    world.resolver.set_behaviour("silent")
    result = await run_round(world.config())
    site = next(o for o in result.observations if o.messenger is None and o.target == "site")
    assert len(site.tries()) == 40  # the loss test has something to decide: a full sample
    assert len(site.details["samples"]) == 40
    # and the verdict is the one the full sample gives (the control resolver answered)
    verdict = next(v for v in result.verdicts if v.target == f"{WEB}/v4")
    assert (verdict.verdict, verdict.rule) == ("dns_blocking", "dns_failure_control_ok")


def _handshake(seconds: float, rtt: float | None, retransmits: int = 0,
               messenger: str | None = None) -> Observation:
    figures = {"tcp_retransmits": retransmits, **({} if rtt is None else {"tcp_rtt_seconds": rtt})}
    if messenger is not None:  # a target's step: its figures in its details
        return Observation(messenger, "t", "tls", "tls_handshake", None, "198.18.2.1", 443,
                           duration_seconds=seconds, details=figures)
    return Observation(None, "site", "tls", "tls_handshake", None, "198.18.2.10", 443,
                       duration_seconds=seconds, details={"samples": [figures]},
                       role="control", attempts=[Attempt(None, 0.0, seconds)])


def test_a_handshake_slowed_by_a_retransmission_timer_asks_for_the_sample() -> None:
    """Loss on the downlink only: the server resends a lost SYN-ACK or flight before the
    client's own timer fires, so the client counts no retransmission, but its handshake
    took a retransmission timer (200 ms at least) longer than its RTT explains (lab L25:
    one handshake per site left 3 of 5 lossy rounds without a sample, never degraded)."""
    assert _unsteady(_handshake(0.23, rtt=0.002))  # the baseline's one handshake
    assert _unsteady(_handshake(1.02, rtt=0.001, messenger="telegram"))  # a target's
    assert _unsteady(_handshake(0.004, rtt=0.001, retransmits=1))
    assert not _unsteady(_handshake(0.004, rtt=0.001))
    # a far server is not slow: 4 round trips of 300 ms and a little
    assert not _unsteady(_handshake(1.25, rtt=0.3, messenger="telegram"))
    assert not _unsteady(_handshake(0.5, rtt=None))  # no kernel figures: nothing to compare


async def test_the_full_sample_grows_with_the_rounds_targets(world: World) -> None:
    """`baseline.samples` per site, or more when the round has so many targets that a
    target whose every attempt timed out could not stand out from that sample."""
    round_ = Round(world.config())
    assert round_._sample_sizes() == {"site": 40}
    round_.targets = round_.targets * 50  # the grown catalogues' scale (150-200 targets)
    assert round_._sample_sizes() == {"site": samples_needed(len(round_.targets), 4)} != {"site": 40}
