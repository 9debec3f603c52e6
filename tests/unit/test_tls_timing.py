"""The TLS check's reported time is the handshake's, not the event loop's.

A handshake's answer that waits in a busy loop's queue must not be counted: the check adds
up the kernel-stamped wire time of each flight and OpenSSL's CPU time (probe/measure/checks/tls.py).
Here every read comes late on purpose, as on a saturated loop, while the server's flight
is already in the socket.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from probe.measure.checks import tls
from probe.measure.checks.tls import handshake
from probe.measure.wire.net import Source, recv_stamped

SNI = "timing.reach.test"
BLOCK = 0.5  # seconds the loop is kept busy while the answer waits


@contextlib.contextmanager
def tls_server(ca: trustme.CA, connections: int) -> Iterator[int]:
    """A blocking TLS server on loopback answering `connections` handshakes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(SNI).configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(connections):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                with contextlib.suppress(OSError):
                    tls.recv(1)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_busy_loop_is_not_counted(ca: trustme.CA, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(cafile=str(ca_file))
    with tls_server(ca, connections=2) as port:
        idle_failure, idle = await handshake("127.0.0.1", port, SNI, context, 5.0, Source())
        assert idle_failure is None, idle

        def late(sock: socket.socket, size: int) -> tuple[bytes, int]:
            time.sleep(BLOCK)  # the loop was busy elsewhere: the answer waited in the socket
            return recv_stamped(sock, size)

        monkeypatch.setattr(tls, "recv_stamped", late)
        started = time.perf_counter()
        failure, details = await handshake("127.0.0.1", port, SNI, context, 5.0, Source())
        elapsed = time.perf_counter() - started
    assert failure is None, details
    assert elapsed >= BLOCK
    reported = details["handshake_seconds"]
    assert isinstance(reported, float)
    assert 0 < reported <= elapsed - 0.8 * BLOCK, (reported, elapsed, idle["handshake_seconds"])
    assert details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert isinstance(details["connect_seconds"], float)
