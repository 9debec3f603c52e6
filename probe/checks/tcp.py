"""TCP connect: tells a silent drop (timeout) from a reset, a refusal and unreachability."""

from __future__ import annotations

from probe import failures
from probe.checks.net import Source, Stopwatch, connect
from probe.observation import Observation


async def check_tcp(
    messenger: str | None, target: str, address: str, port: int, timeout: float, source: Source
) -> Observation:
    """Connect to address:port within `timeout` and close at once.

    A successful check's duration is the connect time taken at completion (see
    probe.checks.net), so a busy event loop does not inflate it; a failed one's is the
    time until the failure was seen (the timeout, the refusal).
    """
    watch = Stopwatch()
    failure = None
    try:
        sock, duration = await connect(address, port, timeout, source)
    except Exception as exc:
        failure = failures.classify(exc)
        duration = watch.elapsed()
    else:
        sock.close()
    return Observation(
        messenger, target, "tcp", failures.CONNECT, failure, address, port,
        watch.started, duration,
    )
