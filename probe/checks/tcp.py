"""TCP connect: tells a silent drop (timeout) from a reset, a refusal and unreachability."""

from __future__ import annotations

from probe import failures
from probe.checks.net import Source, Stopwatch, open_socket
from probe.observation import Observation


async def check_tcp(
    messenger: str | None, target: str, address: str, port: int, timeout: float, source: Source
) -> Observation:
    """Connect to address:port within `timeout` and close at once."""
    watch = Stopwatch()
    failure = None
    try:
        sock = await open_socket(address, port, timeout, source)
    except Exception as exc:
        failure = failures.classify(exc)
    else:
        sock.close()
    return Observation(
        messenger, target, "tcp", failures.CONNECT, failure, address, port,
        watch.started, watch.elapsed(),
    )
