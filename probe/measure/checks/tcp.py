"""TCP connect: tells a silent drop (timeout) from a reset, a refusal and unreachability."""

from __future__ import annotations

from probe.measure.checks.base import Env, Step
from probe.measure.wire.net import Stopwatch, connect, tcp_stats
from probe.model import failures
from probe.model.observation import Observation


async def check(step: Step, env: Env) -> list[Observation]:
    """Connect to the step's address and port within the timeout, and close at once.

    A successful check's duration is the connect time taken at completion (see
    probe.measure.wire.net), so a busy event loop does not inflate it; a failed one's is the
    time until the failure was seen (the timeout, the refusal).
    """
    assert step.address is not None
    watch = Stopwatch()
    failure = None
    details: dict[str, object] = {}
    try:
        sock, duration = await connect(step.address, step.port, env.timeout, env.source)
    except Exception as exc:
        failure = failures.classify(exc)
        duration = watch.elapsed()
    else:
        details.update(tcp_stats(sock))  # the SYN retransmissions, for the vantage's loss
        sock.close()
    return [step.observe("tcp", failures.CONNECT, failure, watch, details, duration=duration)]
