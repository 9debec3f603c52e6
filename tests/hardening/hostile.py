"""Hostile peers on loopback: they answer whatever a test scripts, however broken.

`ScriptedTCP` runs a script per connection: send bytes, sleep, drip, stall, close, reset.
`ScriptedUDP` answers each datagram with what a function of the query returns. Both cap
what they read, and stop() drops every connection, so a test never leaves tasks behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support._common import abort_with_reset

Action = tuple[str, Any]  # ("send", bytes) ("sleep", s) ("drip", (bytes, s)) ("stall", None)
# ("close", None) ("reset", None) ("read", n) ("forever", bytes: send repeatedly)


@dataclass
class Counter:
    connections: int = 0


class ScriptedTCP:
    """A TCP server that plays `script` (or script(first_bytes)) to every client."""

    def __init__(self, script: Sequence[Action] | Callable[[bytes], Sequence[Action]],
                 host: str = "127.0.0.1", read_first: int = 0) -> None:
        self.script = script
        self.host = host
        self.port = 0
        self.read_first = read_first
        self.count = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.count.connections += 1
        try:
            first = b""
            if self.read_first:
                with contextlib.suppress(asyncio.TimeoutError, OSError):
                    first = await asyncio.wait_for(reader.read(self.read_first), 2)
            script = self.script(first) if callable(self.script) else self.script
            for action, arg in script:
                if action == "send":
                    writer.write(arg)
                    await writer.drain()
                elif action == "read":
                    await reader.read(arg)
                elif action == "sleep":
                    await asyncio.sleep(arg)
                elif action == "drip":
                    data, pause = arg
                    for i in range(len(data)):
                        writer.write(data[i:i + 1])
                        await writer.drain()
                        await asyncio.sleep(pause)
                elif action == "forever":
                    for _ in range(1_000_000):  # bounded: ~forever for any test deadline
                        writer.write(arg)
                        await writer.drain()
                elif action == "stall":
                    await asyncio.sleep(3600)
                elif action == "close":
                    writer.close()
                    return
                elif action == "reset":
                    abort_with_reset(writer)
                    return
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a stopped server ends its connections quietly
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> ScriptedTCP:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ScriptedUDP(asyncio.DatagramProtocol):
    """A UDP server: reply(query) -> list of datagrams to send back (empty: stay silent)."""

    def __init__(self, reply: Callable[[bytes], Sequence[bytes]], host: str = "127.0.0.1") -> None:
        self.reply = reply
        self.host = host
        self.port = 0
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.queries += 1
        assert self.transport is not None
        for datagram in self.reply(data):
            with contextlib.suppress(OSError):
                self.transport.sendto(datagram[:65507], addr)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        assert self.transport is not None
        self.port = self.transport.get_extra_info("sockname")[1]
        return self.port

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def __aenter__(self) -> ScriptedUDP:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def dns_answer(query: bytes, address: str = "198.18.64.1") -> bytes:
    """A well-formed reply to `query` with one A record."""
    import dns.message
    import dns.rrset

    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", address))
    return r.to_wire()


async def within(seconds: float, step: Awaitable[Any]) -> Any:
    """Await `step`, failing the test (not hanging it) if it outlives `seconds`."""
    return await asyncio.wait_for(step, seconds)
