"""TLS: a handshake with the service's SNI, verified against the target's trust anchors,
and the two differentials that explain a failed one.

`tls_neutral_sni`: when the handshake with the service's name fails without a certificate
problem, the same address is tried with a neutral SNI and no verification; if that one
completes, the name in the ClientHello is what was filtered (SNI filtering), not the
address. `tls_certificate`: when the certificate is what failed, an unverified handshake
with the same name records the certificate the peer showed (its SHA-256), the evidence of
an interception.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time

from probe.measure.checks.base import Env, Step
from probe.measure.wire.net import Source, Stopwatch, converse, recv_stamped, stamp_receives, tcp_stats
from probe.model import failures
from probe.model.observation import Observation

_cpu_clock = time.thread_time  # CPU time: preemption by other processes is not the handshake's
_time_ns = time.time_ns
_WantRead = ssl.SSLWantReadError
_READ_SIZE = 1 << 16


class _Handshake:
    """One client handshake driven from the event loop's I/O callbacks: OpenSSL through a
    memory BIO, the socket read and written here (no transport, protocol or stream objects
    per connection, and no copy through asyncio's SSL buffers).

    Why not time around the await: with a hundred handshakes in flight on one core, a flight
    that has arrived waits in the loop's queue behind the others' certificate checks, and
    that wait is the loop's, not the network's. So the time is added up from its parts:
    for each of our flights, from when it left (the clock right after the send) to when the
    last byte of the answer reached the socket (the kernel's receive stamp), plus the CPU
    time (thread CPU clock) of the OpenSSL calls that processed each answer. Neither moves
    with the loop's load.
    """

    __slots__ = ("_fd", "_future", "_incoming", "_loop", "_outgoing", "_pending", "_received_ns",
                 "_sent_ns", "_sock", "_tls", "cpu", "wire")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, sni: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        # A fresh SSLObject without `session`: a full handshake, never a resumption.
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=sni)
        self._loop = loop
        self._fd = sock.fileno()
        self._future: asyncio.Future[ssl.SSLObject] = loop.create_future()
        self._pending = b""
        self._sent_ns = 0
        self._received_ns = 0
        self.wire = 0.0  # seconds between our flights leaving and their answers arriving
        self.cpu = 0.0  # seconds in the OpenSSL calls that answered

    async def run(self) -> ssl.SSLObject:
        stamp_receives(self._sock)
        self._advance()
        if not self._future.done():
            self._loop.add_reader(self._fd, self._on_readable)
        try:
            return await self._future
        finally:
            self._loop.remove_reader(self._fd)
            if self._pending:
                self._loop.remove_writer(self._fd)

    def _advance(self) -> None:
        """One step of OpenSSL; send what it wrote. Exceptions end the handshake."""
        started = _cpu_clock()
        try:
            self._tls.do_handshake()
            done = True
        except _WantRead:
            done = False
        except Exception as exc:
            self._future.set_exception(exc)
            return
        spent = _cpu_clock() - started
        if self._outgoing.pending or done:
            # This call answered the peer's last flight (or opened the handshake).
            if self._received_ns:
                self.wire += max(0, self._received_ns - self._sent_ns) / 1e9
                self._received_ns = 0
            self.cpu += spent
        if self._outgoing.pending and not self._send(self._outgoing.read()):
            return
        if done:
            self._future.set_result(self._tls)

    def _send(self, data: bytes) -> bool:
        """Send a flight; False if the socket failed (the future has the error)."""
        try:
            sent = self._sock.send(self._pending + data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._future.set_exception(exc)
            return False
        left = (self._pending + data)[sent:]
        if left and not self._pending:
            self._loop.add_writer(self._fd, self._on_writable)
        elif not left and self._pending:
            self._loop.remove_writer(self._fd)
        self._pending = left
        self._sent_ns = _time_ns()
        return True

    def _on_writable(self) -> None:
        if not self._future.done():
            self._send(b"")

    def _on_readable(self) -> None:
        if self._future.done():
            return
        try:
            data, self._received_ns = recv_stamped(self._sock, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._future.set_exception(exc)
            return
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()  # OpenSSL then raises SSLEOFError: an eof_error
        self._advance()


async def handshake(
    address: str, port: int, sni: str, context: ssl.SSLContext, timeout: float, source: Source
) -> tuple[str | None, dict[str, object]]:
    """Connect and complete a TLS handshake; return (failure, details).

    `handshake_seconds` is the handshake's own time, measured as `_Handshake` says.
    """

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        driver = _Handshake(sock, context, sni, asyncio.get_running_loop())
        ssl_object = await driver.run()
        details.update(tcp_stats(sock))  # the vantage's loss and RTT (probe.judge.vantage)
        details["handshake_seconds"] = round(driver.wire + driver.cpu, 6)
        details["tls_version"] = ssl_object.version()
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            details["peer_certificate_sha256"] = hashlib.sha256(der).hexdigest()

    failure, details, _ = await converse(address, port, timeout, source, talk)
    return failure, {"sni": sni, **details}


async def _handshake_step(step: Step, env: Env, sni: str, context: ssl.SSLContext,
                          purpose: str | None = None) -> list[Observation]:
    assert step.address is not None
    watch = Stopwatch()
    failure, details = await handshake(step.address, step.port, sni, context, env.timeout,
                                       env.source)
    if purpose:
        details["purpose"] = purpose
    # A completed handshake takes the kernel's connect time plus its own, which a busy loop
    # does not inflate; a failed one the time until the failure was seen.
    connect, own = details.get("connect_seconds"), details.get("handshake_seconds")
    duration = connect + own if isinstance(connect, float) and isinstance(own, float) else None
    return [step.observe("tls", failures.TLS_HANDSHAKE, failure, watch, details,
                         duration=duration)]


async def check(step: Step, env: Env) -> list[Observation]:
    """The handshake with the service's name, verified against the target's anchors."""
    sni = step.sni or step.target.endpoint
    return await _handshake_step(step, env, sni, env.trust.context(step.target.trust))


async def neutral_sni(step: Step, env: Env) -> list[Observation]:
    """A neutral name to the same address, unverified: explains a failure that is not the
    certificate's (before the service's name, or after its failure)."""
    explains = step.explains
    if explains is not None and explains.failure in failures.CERTIFICATE_FAILURES:
        return []
    sni = str(step.options.get("neutral_sni") or "www.example.com")
    return await _handshake_step(step, env, sni, env.trust.unverified(), "neutral_sni_differential")


async def rejected_certificate(step: Step, env: Env) -> list[Observation]:
    """The certificate the peer showed, fetched unverified, when verification failed."""
    explains = step.explains
    if explains is None or explains.failure not in failures.CERTIFICATE_FAILURES:
        return []
    sni = step.sni or step.target.endpoint
    return await _handshake_step(step, env, sni, env.trust.unverified(), "fetch_rejected_certificate")
