"""TLS: a handshake with the service's SNI, verified against the system store plus an
optional CA file, and the SNI differential.

When the handshake with the service's name fails without a certificate problem, the same
address is tried again with a neutral SNI and no verification: if that one completes, the
name in the ClientHello is what was filtered (SNI filtering), not the address. When the
certificate is what failed, an unverified handshake with the same name records the
certificate the peer showed (its SHA-256), the evidence of an interception.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from pathlib import Path

from probe import failures
from probe.checks.net import Source, Stopwatch, converse
from probe.observation import Observation


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: system store, plus the config's extra CA."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def unverified_context() -> ssl.SSLContext:
    """For the differential and for fetching a rejected certificate, never for trust."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def handshake(
    address: str, port: int, sni: str, context: ssl.SSLContext, timeout: float, source: Source
) -> tuple[str | None, dict[str, object]]:
    """Connect and complete a TLS handshake; return (failure, details)."""

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        _reader, writer = await asyncio.open_connection(
            sock=sock, ssl=context, server_hostname=sni, ssl_handshake_timeout=timeout)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None:
                details["tls_version"] = ssl_object.version()
                der = ssl_object.getpeercert(binary_form=True)
                if der:
                    details["peer_certificate_sha256"] = hashlib.sha256(der).hexdigest()
        finally:
            writer.transport.abort()

    failure, details, _ = await converse(address, port, timeout, source, talk)
    return failure, {"sni": sni, **details}


async def check_tls(
    messenger: str | None,
    target: str,
    address: str,
    port: int,
    sni: str,
    neutral_sni: str,
    *,
    context: ssl.SSLContext,
    timeout: float,
    source: Source,
    explain: bool = True,
) -> list[Observation]:
    """The handshake with `sni`, and (if `explain`) when it fails, the step that explains why."""
    watch = Stopwatch()
    failure, details = await handshake(address, port, sni, context, timeout, source)
    observations = [Observation(
        messenger, target, "tls", failures.TLS_HANDSHAKE, failure, address, port,
        watch.started, watch.elapsed(), details,
    )]
    if failure is None or not explain:
        return observations
    second_sni = sni if failure in failures.CERTIFICATE_FAILURES else neutral_sni
    watch = Stopwatch()
    second_failure, second_details = await handshake(
        address, port, second_sni, unverified_context(), timeout, source
    )
    second_details["purpose"] = (
        "fetch_rejected_certificate" if second_sni == sni else "neutral_sni_differential"
    )
    observations.append(Observation(
        messenger, target, "tls", failures.TLS_HANDSHAKE, second_failure, address, port,
        watch.started, watch.elapsed(), second_details, aux=True,
    ))
    return observations
