"""Opening TCP connections with a deadline, optionally from a configured source address.

Raw non-blocking sockets on the event loop: a connect is the hot path of a round with
thousands of targets, and stream objects would be built and thrown away for nothing.

The connect time is the kernel's: on Linux, TCP_INFO's RTT sample of the SYN / SYN-ACK
exchange, which is what a connect takes on the wire, whatever the event loop was busy with
meanwhile. With many checks in flight the loop runs a queue of other tasks between the
SYN-ACK arriving and the check seeing it; timing around the await would add that queue
(event-loop lag) to the reported latency. When the kernel has no clean sample (the SYN was
retransmitted, so Karn's rule leaves the RTT to the last attempt, or no TCP_INFO on this
platform), the time is taken in the writability callback itself, before the waiting task
is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import socket
import struct
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from probe.model import failures

_perf_counter = time.perf_counter
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_SOCK_STREAM = socket.SOCK_STREAM
_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY})
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux
_IPPROTO_TCP = socket.IPPROTO_TCP
# struct tcp_info (linux/tcp.h): tcpi_rtt (us) at offset 68, tcpi_total_retrans at 100.
_TCP_INFO_LEN = 104
_unpack_rtt = struct.Struct("<I").unpack_from
# Kernel receive timestamps (Linux SO_TIMESTAMPNS, 35 in asm-generic/socket.h; Python does
# not name it): each recvmsg says when the last segment it returned reached the socket.
_SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TIMESPEC = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec (the non-y2038 form)
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


def kernel_rtt(sock: socket.socket) -> float | None:
    """The kernel's RTT of a just-established connection (the SYN / SYN-ACK sample), in
    seconds; None if unavailable or if anything was retransmitted."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(_IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < _TCP_INFO_LEN or _unpack_rtt(info, 100)[0]:
        return None
    rtt: int = _unpack_rtt(info, 68)[0]
    return rtt / 1e6 if rtt else None


def stamp_receives(sock: socket.socket) -> bool:
    """Ask the kernel to timestamp what this socket receives (see `recv_stamped`)."""
    if _SO_TIMESTAMPNS is None or not _STAMP_SPACE:
        return False
    try:
        sock.setsockopt(_SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def recv_stamped(sock: socket.socket, size: int) -> tuple[bytes, int]:
    """Read up to `size` bytes; return them and when the last of them arrived, in ns of the
    realtime clock (`time.time_ns`): the kernel's stamp when the socket has them (see
    `stamp_receives`), else now. A busy event loop delays the read, never the stamp."""
    if not _STAMP_SPACE:
        return sock.recv(size), time.time_ns()
    data, ancillary, _flags, _address = sock.recvmsg(size, _STAMP_SPACE)
    for level, kind, payload in ancillary:
        if level == _SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            return data, seconds * 1_000_000_000 + nanoseconds
    return data, time.time_ns()


# tcpi_segs_out (u32) at offset 136: needs the longer struct (Linux >= 4.2).
_TCP_INFO_SEGS_LEN = 140
# tcpi_dsack_dups (u32) at offset 216 (Linux >= 4.19): segments the peer reported receiving
# twice (D-SACK), i.e. retransmissions that were not needed (the answer, not the request,
# was lost).
_TCP_INFO_DSACK_LEN = 220


def tcp_stats(sock: socket.socket) -> dict[str, float | int]:
    """What the kernel knows of a connection's path so far: its smoothed RTT (seconds), the
    segments it retransmitted and the segments it sent, and of the retransmissions those
    the peer reported as duplicates (D-SACK: the request had arrived, the answer was lost).
    Empty where TCP_INFO is missing. Read before the socket is closed; the vantage's loss
    and RTT, and the service's retransmissions, are measured with it."""
    if _TCP_INFO is None:
        return {}
    try:
        info = sock.getsockopt(_IPPROTO_TCP, _TCP_INFO, _TCP_INFO_DSACK_LEN)
    except OSError:
        return {}
    if len(info) < _TCP_INFO_LEN:
        return {}
    stats: dict[str, float | int] = {"tcp_rtt_seconds": _unpack_rtt(info, 68)[0] / 1e6,
                                     "tcp_retransmits": _unpack_rtt(info, 100)[0]}
    if len(info) >= _TCP_INFO_SEGS_LEN:
        stats["tcp_segments_out"] = _unpack_rtt(info, 136)[0]
    if len(info) >= _TCP_INFO_DSACK_LEN and stats["tcp_retransmits"]:
        stats["tcp_dsack_dups"] = _unpack_rtt(info, 216)[0]
    return stats


@dataclass(frozen=True, slots=True)
class Source:
    """Where outgoing connections come from: the vantage's optional bind addresses."""

    ipv4: str | None = None
    ipv6: str | None = None

    def for_version(self, version: int) -> str | None:
        """The bind address for IP version 4 or 6."""
        return self.ipv6 if version == 6 else self.ipv4


def _connect_error(err: int, address: tuple[str, int]) -> OSError:
    # The same exception (subclass by errno) and message as loop.sock_connect raises.
    return OSError(err, f"Connect call failed {address}")


def _on_writable(future: asyncio.Future[float], sock: socket.socket, address: tuple[str, int]) -> None:
    """Writability callback: the connect finished; stamp the time before anything else."""
    now = _perf_counter()
    if future.done():
        return
    err = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
    if err in _IN_PROGRESS:
        return  # spurious wake-up: keep waiting
    if err:
        future.set_exception(_connect_error(err, address))
    else:
        future.set_result(now)


def _expire(future: asyncio.Future[float]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _connected() -> None:
    meter = METER.get()
    if meter is not None:
        meter.connected = True


async def connect(
    address: str, port: int, timeout: float, source: Source
) -> tuple[socket.socket, float]:
    """Connect a non-blocking TCP socket within `timeout`; return it and the connect time.

    Raises OSError (ConnectionRefusedError, ...) or TimeoutError as the kernel reports.
    """
    family = _AF_INET6 if ":" in address else _AF_INET
    sock = MeteredSocket(family, _SOCK_STREAM)
    try:
        sock.setblocking(False)
        bind = source.ipv6 if family == _AF_INET6 else source.ipv4
        if bind:
            sock.bind((bind, 0))
        peer = (address, port)
        t0 = _perf_counter()
        err = sock.connect_ex(peer)
        if err == 0:
            t1 = _perf_counter()
            rtt = kernel_rtt(sock)
            _connected()
            return sock, t1 - t0 if rtt is None else rtt
        if err not in _IN_PROGRESS:
            raise _connect_error(err, peer)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, _on_writable, future, sock, peer)
        timer = loop.call_later(timeout, _expire, future)
        try:
            t1 = await future
        finally:
            timer.cancel()
            loop.remove_writer(fd)
        rtt = kernel_rtt(sock)
        _connected()
        return sock, t1 - t0 if rtt is None else rtt
    except BaseException:
        sock.close()
        raise


async def open_socket(address: str, port: int, timeout: float, source: Source) -> socket.socket:
    """Connect a non-blocking TCP socket; raise OSError/TimeoutError as the kernel reports."""
    sock, _ = await connect(address, port, timeout, source)
    return sock


Conversation = Callable[[socket.socket, dict[str, object]], Awaitable[None]]


async def converse(
    address: str, port: int, timeout: float, source: Source, talk: Conversation
) -> tuple[str | None, dict[str, object], Stopwatch]:
    """Connect and let `talk` speak (filling in evidence, raising on a bad answer), all
    within `timeout`; whatever goes wrong becomes a failure string. The socket is closed
    afterwards (a transport that took it over has closed it already: closing is idempotent).
    `connect_seconds` is the kernel's connect time (see `connect`), not the loop's."""
    watch = Stopwatch()
    details: dict[str, object] = {}
    failure = None
    sock = None
    try:
        async with asyncio.timeout(timeout):
            sock, connect_time = await connect(address, port, timeout, source)
            details["connect_seconds"] = round(connect_time, 6)
            await talk(sock, details)
    except Exception as exc:
        failure = failures.classify(exc)
        details["error"] = str(exc)[:200]
    finally:
        if sock is not None:
            sock.close()
    return failure, details, watch


class Stopwatch:
    """Wall-clock start for the record, monotonic clock for durations."""

    __slots__ = ("_t0", "started")

    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = _perf_counter()

    def elapsed(self) -> float:
        return _perf_counter() - self._t0





# ---------------------------------------------------------------- bytes on the wire
#
# What a probe costs its volunteer is bytes on the link, so every socket a check opens is
# counted: TCP from the kernel's own figures (TCP_INFO, read just before the socket is
# closed), UDP from the datagrams sent and received. The figure is the frame as the
# interface counts it (`ip -s link`): payload plus one TCP/IP and Ethernet header per
# segment (the kernel counts segments too), plus the segments of the close that happen
# after the socket is gone (FIN out and its ACK, the peer's FIN in).

# struct tcp_info (linux/tcp.h), u64 at 120: tcpi_bytes_acked, 128: tcpi_bytes_received;
# u32 at 136/140: tcpi_segs_out/in; u64 at 200: tcpi_bytes_sent (Linux >= 4.19, counts
# retransmitted payload too).
_TCP_INFO_BYTES_LEN = 208
_U64 = struct.Struct("<Q").unpack_from
ETHERNET = 14
# IPv4 20 / IPv6 40, TCP 20 plus 12 of timestamp option (Linux sends it by default)
TCP_HEADERS = {4: 14 + 20 + 32, 6: 14 + 40 + 32}
UDP_HEADERS = {4: 14 + 20 + 8, 6: 14 + 40 + 8}
# the close's segments after the socket is gone, by the state it was closed in. We close
# first (ESTABLISHED): our FIN and the ACK of theirs out; in, the ACK of our FIN and then
# their FIN (their application closes once it reads the end: two segments, not one; a
# screening's bare connect made the difference visible, ~13% of its bytes). They closed
# first (CLOSE_WAIT, their FIN already counted): our FIN out, its ACK in.
CLOSE_SEGMENTS = {1: (2, 2), 8: (1, 1)}


class Ledger:
    """Bytes on the wire per label (a messenger, or "baseline") and direction, for a round."""

    __slots__ = ("totals",)

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}

    def add(self, label: str, sent: int, received: int) -> None:
        pair = self.totals.setdefault(label, [0, 0])
        pair[0] += sent
        pair[1] += received

    @property
    def sent(self) -> int:
        return sum(p[0] for p in self.totals.values())

    @property
    def received(self) -> int:
        return sum(p[1] for p in self.totals.values())


class Meter:
    """What one check's sockets sent and received (wire bytes), also added to its round's
    ledger under the check's label. A socket closed after its check ended (a pooled DoH
    connection) still reaches the ledger."""

    __slots__ = ("connected", "label", "ledger", "received", "sent")

    def __init__(self, label: str, ledger: Ledger | None = None) -> None:
        self.label = label
        self.ledger = ledger
        self.sent = 0
        self.received = 0
        # whether one of the check's TCP connects completed (`connect`): an attempt still
        # connecting when a later one succeeded lost its SYN or SYN-ACK; one that connected
        # and still waited was slowed by its server (probe.measure.round `_confirmed`)
        self.connected = False

    def add(self, sent: int, received: int) -> None:
        self.sent += sent
        self.received += received
        if self.ledger is not None:
            self.ledger.add(self.label, sent, received)


METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("reach_meter", default=None)


def _family(sock: Any) -> int:
    return 6 if sock.family == _AF_INET6 else 4


def tcp_wire_bytes(sock: Any, closing: bool = True) -> tuple[int, int] | None:
    """(sent, received) of a TCP socket so far (plus its close, when `closing`), as frames
    on the link; None where TCP_INFO is missing."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(_IPPROTO_TCP, _TCP_INFO, _TCP_INFO_BYTES_LEN)
    except OSError:
        return None
    if len(info) < _TCP_INFO_SEGS_LEN + 4:
        return None
    sent_payload = _U64(info, 200)[0] if len(info) >= _TCP_INFO_BYTES_LEN else _U64(info, 120)[0]
    received_payload = _U64(info, 128)[0]
    segs_out, segs_in = _unpack_rtt(info, 136)[0], _unpack_rtt(info, 140)[0]
    header = TCP_HEADERS[_family(sock)]
    # ESTABLISHED or CLOSE_WAIT: a close follows; a refused or unanswered connect has none
    close_out, close_in = CLOSE_SEGMENTS.get(info[0], (0, 0)) if closing else (0, 0)
    return (sent_payload + (segs_out + close_out) * header,
            received_payload + (segs_in + close_in) * header)


def count(sent: int = 0, received: int = 0) -> None:
    """Add wire bytes to the running check's meter (nothing outside a metered check)."""
    meter = METER.get()
    if meter is not None:
        meter.add(sent, received)


def count_udp(payload: int, family: int, *, received: bool = False) -> None:
    """One UDP datagram of `payload` bytes, as a frame on the link."""
    size = payload + UDP_HEADERS[family]
    count(0, size) if received else count(size, 0)


class MeteredSocket(socket.socket):
    """A socket that adds its TCP bytes to the meter of the check that opened it: when it
    is closed, or earlier by `settle` (uvloop takes a socket over and closes its fd without
    calling close(), so a connection an event loop owns is settled while it is open)."""

    __slots__ = ("_counted", "_meter")

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        super().__init__(family, type, proto, fileno)
        self._meter = METER.get()
        self._counted = (0, 0)  # what was counted so far
        if self._meter is not None:
            _LIVE.add(self)

    def settle(self, closing: bool = True) -> None:
        """Count what the connection carried since it was last counted."""
        meter = getattr(self, "_meter", None)
        if meter is None or self.fileno() < 0 or self.type != _SOCK_STREAM:
            return
        got = tcp_wire_bytes(self, closing)
        if got is None:
            return
        before, self._counted = self._counted, got
        meter.add(max(0, got[0] - before[0]), max(0, got[1] - before[1]))

    def close(self) -> None:
        self.settle()
        self._meter = None
        super().close()


_LIVE: weakref.WeakSet[MeteredSocket] = weakref.WeakSet()


def settle_all() -> None:
    """Settle every metered socket still open (a connection pool about to be closed)."""
    for sock in list(_LIVE):
        sock.settle()


def metered_socket_factory(addr_info: tuple[Any, ...], receive_buffer: int | None = None) -> MeteredSocket:
    """aiohttp's `socket_factory`: its connections are counted like the checks' own; with
    `receive_buffer`, the kernel takes in no more than that ahead of the reader."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = MeteredSocket(family, kind, proto)
    if receive_buffer is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(_SOL_SOCKET, socket.SO_RCVBUF, max(4096, receive_buffer // 2))
    return sock
