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

from probe import failures
from probe.checks.base import Env, Step
from probe.checks.net import Source, Stopwatch, converse
from probe.observation import Observation


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


async def _handshake_step(step: Step, env: Env, sni: str, context: ssl.SSLContext,
                          purpose: str | None = None) -> list[Observation]:
    assert step.address is not None
    watch = Stopwatch()
    failure, details = await handshake(step.address, step.port, sni, context, env.timeout,
                                       env.source)
    if purpose:
        details["purpose"] = purpose
    return [step.observe("tls", failures.TLS_HANDSHAKE, failure, watch, details)]


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
