"""Opening TCP connections with a deadline, optionally from a configured source address.

Raw non-blocking sockets on the event loop: a connect is the hot path of a round with
thousands of targets, and stream objects would be built and thrown away for nothing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Source:
    """Where outgoing connections come from: the vantage's optional bind addresses."""

    ipv4: str | None = None
    ipv6: str | None = None

    def for_version(self, version: int) -> str | None:
        """The bind address for IP version 4 or 6."""
        return self.ipv6 if version == 6 else self.ipv4


async def open_socket(address: str, port: int, timeout: float, source: Source) -> socket.socket:
    """Connect a non-blocking TCP socket; raise OSError/TimeoutError as the kernel reports."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        bind = source.for_version(6 if family == socket.AF_INET6 else 4)
        if bind:
            sock.bind((bind, 0))
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class Stopwatch:
    """Wall-clock start for the record, monotonic clock for durations."""

    __slots__ = ("_t0", "started")

    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0
