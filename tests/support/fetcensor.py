"""A censor box that blocks fully encrypted traffic, as the Great Firewall of China does.

Why: obfuscated2 (what Telegram's apps send) opens with a first packet that looks fully
random. Wu et al., "How the Great Firewall of China Detects and Blocks Fully Encrypted
Traffic" (USENIX Security 2023), infer the rule: a connection is blocked when its first
client data packet is exempted by none of
  Ex1  popcount per byte <= 3.4 or >= 4.6 (random bytes average 4),
  Ex2  the first 6 bytes are printable ASCII (0x20-0x7e),
  Ex3  more than 50% of the bytes are printable,
  Ex4  more than 20 contiguous printable bytes,
  Ex5  the start matches TLS ([\\x16-\\x17]\\x03[\\x00-\\x09]) or HTTP (GET, PUT, POST, HEAD).
iptables cannot compute a popcount, so this is a userspace TCP relay in the censor's
namespace: the lab REDIRECTs the subject's connections to it (nat PREROUTING), it reads the
first data, looks up the original destination (SO_ORIGINAL_DST) and either relays the
connection there or blocks it the GFW's way: every later client packet is dropped (the
client sees silence), server-bound data never leaves. Unlike the GFW, every connection is
judged (the GFW blocks ~26% of them), so a lab run is deterministic except for the chance
that a random first packet is exempt (Ex2 for about 1 in 400), which the log below records.

Residual blocking (``--residual NAME``): on each block the relay adds the destination
address to the xt_recent list ``NAME<port>`` (/proc/net/xt_recent of its namespace), where
a rule of the scenario's (tests/lab/scenarios_residual.py) drops every packet from the
subject to that address and port for as long as it says, the GFW's up-to-180 s penalty
(Iran's protocol filter: 60 s, the timer reset on every trigger, as writing the entry again
does). Without such a rule the list does not exist and nothing more happens.

Each decision is one JSON line in ``--log``: client, destination, verdict ("blocked" or
"exempt:<rule>"), popcount per byte, first-packet length and its first 8 bytes (hex), the
time (unix seconds) and whether a residual drop was armed.

Standalone (in the censor namespace)::

  python -m tests.support.fetcensor --listen 0.0.0.0:7000 --listen [::]:7000 --log FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from pathlib import Path

from tests.support._common import StreamServer, add_listen_argument, listen_addresses, run_standalone

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
HTTP_STARTS = (b"GET ", b"PUT ", b"POST", b"HEAD")
FIRST_PACKET_WAIT = 5.0


def _printable(byte: int) -> bool:
    return 0x20 <= byte <= 0x7E


def judge(data: bytes) -> tuple[str, float]:
    """The GFW's rule for a first data packet: ("blocked" | "exempt:<rule>", popcount/byte)."""
    if not data:
        return "exempt:empty", 0.0
    popcount = sum(bin(b).count("1") for b in data) / len(data)
    if popcount <= 3.4 or popcount >= 4.6:
        return "exempt:popcount", popcount
    if len(data) >= 6 and all(_printable(b) for b in data[:6]):
        return "exempt:first-six-printable", popcount
    if sum(_printable(b) for b in data) * 2 > len(data):
        return "exempt:half-printable", popcount
    run = longest = 0
    for b in data:
        run = run + 1 if _printable(b) else 0
        longest = max(longest, run)
    if longest > 20:
        return "exempt:printable-run", popcount
    if (len(data) >= 3 and data[0] in (0x16, 0x17) and data[1] == 0x03 and data[2] <= 0x09) \
            or data.startswith(HTTP_STARTS):
        return "exempt:protocol", popcount
    return "blocked", popcount


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the client meant to connect before the REDIRECT."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


class FetCensor(StreamServer):
    """The relay; ``decisions`` holds what it decided (also appended to ``log``)."""

    kind = "fetcensor"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, log: Path | None = None,
                 destination: tuple[str, int] | None = None, residual: str | None = None) -> None:
        super().__init__(host, port)
        self.log = log
        self.residual = residual  # xt_recent list prefix (NAME<port>), see the module's doc
        self.destination = destination  # tests without REDIRECT: where to relay to
        self.decisions: list[dict[str, object]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        client = writer.get_extra_info("peername")
        host, port = self.destination or original_destination(sock)
        try:
            first = await asyncio.wait_for(reader.read(65536), FIRST_PACKET_WAIT)
        except TimeoutError:
            first = b""
        verdict, popcount = judge(first)
        armed = verdict == "blocked" and self._arm(host, port)
        decision = {"client": f"{client[0]}", "destination": f"{host}:{port}", "verdict": verdict,
                    "popcount": round(popcount, 3), "length": len(first), "head": first[:8].hex(),
                    "time": round(time.time(), 3), "residual": armed}
        self.decisions.append(decision)
        if self.log is not None:
            with self.log.open("a") as out:
                out.write(json.dumps(decision) + "\n")
        if verdict == "blocked":
            while await reader.read(65536):
                pass  # drop everything the client sends; never answer
            return
        up_reader, up_writer = await asyncio.open_connection(host, port)
        try:
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


    def _arm(self, host: str, port: int) -> bool:
        """Start (or restart) the residual drop to host:port; False when no rule keeps one."""
        if self.residual is None:
            return False
        path = Path("/proc/net/xt_recent") / f"{self.residual}{port}"
        try:
            path.write_text(f"+{host}\n")
        except OSError:
            return False
        return True


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fetcensor",
                                     description=__doc__.split("\n\n")[0])
    add_listen_argument(parser)
    parser.add_argument("--log", type=Path, default=None, help="append each decision (JSON lines)")
    parser.add_argument("--residual", default=None, metavar="NAME",
                        help="on a block, add the destination to the xt_recent list NAME<port>")
    args = parser.parse_args(argv)
    return run_standalone([FetCensor(h, p, log=args.log, residual=args.residual)
                           for h, p in listen_addresses(args)])


if __name__ == "__main__":
    sys.exit(main())
