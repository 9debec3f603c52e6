"""Noise: WhatsApp's chat handshake, as far as the server proves who it is.

What the apps send first on a chat connection (e*.whatsapp.net, g.whatsapp.net on 443 and
5222): the `WA` prologue and a ClientHello carrying a fresh X25519 key, in one segment. The
real server answers a ServerHello whose static key and certificate chain are encrypted to
that key; the chain is signed by WhatsApp's root key, and its leaf names the static key
the server just used. Decrypting both and verifying the chain proves a WhatsApp chat
server is at the other end (or relays to one: a WhatsApp proxy). A censor that resets or
silences the connection after the prologue, a middlebox answering anything else, or an
interceptor with a key of its own all fail it, each at its own stage. The bytes and their
sources: probe.measure.wire.noise and docs/messengers.md.

We stop after the server's message: no ClientFinish, no static key of ours, no login; the
server sees a client that went away mid-handshake.

The root key is a trust anchor like Signal's CA (`trust: whatsapp` in the catalogue,
probe/data/trust/whatsapp.pem, replaced with `tls.trust: {whatsapp: FILE}`), so a lab runs
the same check against a test root. Option `tls: true` wraps the exchange in TLS without
verification, as the apps reach a WhatsApp proxy on port 443 (its certificate is
self-signed; the Noise chain inside is what is verified).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.measure.checks.base import Env, Step, lazy_module
from probe.measure.checks.mtproto import Channel
from probe.measure.wire.net import Stopwatch, converse
from probe.model import failures
from probe.model.observation import Observation

if TYPE_CHECKING:
    from probe.measure.wire import noise as wire
else:  # loaded on the first Noise handshake: it brings cryptography (~8 MB resident)
    wire = lazy_module("probe.measure.wire.noise")

DEFAULT_ANCHOR = "whatsapp"


class RootUnavailable(Exception):
    """The root key file cannot be read: a deployment fault, not the network."""

    failure = failures.UNKNOWN_FAILURE


@functools.lru_cache(maxsize=8)
def _root_of(path: str, mtime_ns: int) -> bytes:
    del mtime_ns  # part of the cache key: a replaced file is read again
    try:
        return wire.load_root(Path(path).read_bytes()[:4096])
    except (OSError, ValueError) as exc:
        raise RootUnavailable(f"WhatsApp root key {path}: {exc}") from None


def root_key(step: Step, env: Env) -> bytes:
    """The root key of the target's trust anchor (`whatsapp` unless the catalogue or the
    config names another)."""
    name = step.target.trust if step.target.trust not in ("", "system") else DEFAULT_ANCHOR
    path = env.trust.anchor_path(name.split("+")[-1])
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise RootUnavailable(f"WhatsApp root key {path}: {exc.strerror}") from None
    return _root_of(str(path), mtime)


async def _wrap_tls(sock: socket.socket,
                    server_name: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # no name of ours to send (an empty server_hostname: no SNI) unless the config gives one
    return await asyncio.open_connection(sock=sock, ssl=context, server_hostname=server_name or "")


Send = Callable[[bytes], Awaitable[None]]
Recv = Callable[[int], Awaitable[bytes]]


async def handshake(channel: Channel, root: bytes, details: dict[str, Any],
                    send: Send | None = None, recv: Recv | None = None) -> None:
    """Prologue and ClientHello out, ServerHello in, chain verified; evidence in `details`.
    `send`/`recv` replace the channel's raw socket I/O (for a TLS-wrapped proxy)."""
    noise = wire.Handshake()
    opening = wire.intro() + wire.frame(wire.client_hello(noise.public))
    details["stage"] = "prologue"
    details["sent_bytes"] = len(opening)
    if send is not None:
        await send(opening)
    else:
        await channel.send_raw(opening)
    read = recv if recv is not None else channel.recv_raw
    details["stage"] = "server_hello"
    header = await read(wire.FRAME_LENGTH_BYTES)
    message = await read(wire.frame_length(header))
    details["received_bytes"] = wire.FRAME_LENGTH_BYTES + len(message)
    hello = wire.parse_server_hello(message)
    static, payload = noise.read_server_hello(hello)
    details["server_static_key"] = static.hex()
    details["stage"] = "certificate"
    details.update(wire.verify_chain(payload, static, root))
    details["stage"] = "verified"


async def check(step: Step, env: Env) -> list[Observation]:
    """The chat handshake up to the server's verified certificate chain."""
    assert step.address is not None
    evidence: dict[str, Any] = {"prologue": wire.PROLOGUE.hex()}
    try:
        root = root_key(step, env)
    except RootUnavailable as exc:
        return [step.observe("noise", failures.NOISE_HANDSHAKE, failures.UNKNOWN_FAILURE,
                             Stopwatch(), {**evidence, "error": str(exc)})]
    use_tls = bool(step.options.get("tls"))

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        channel = Channel(sock)
        if not use_tls:
            try:
                await handshake(channel, root, details)
            except Exception:
                channel.top_up_head()
                raise
            finally:
                if channel.raw_head and details.get("stage") != "verified":
                    details["reply_head"] = bytes(channel.raw_head).hex()
            return
        reader, writer = await _wrap_tls(sock, step.sni)
        details["tls"] = "unverified (proxy)"

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await handshake(channel, root, details, send, reader.readexactly)
        finally:
            writer.close()

    failure, details, watch = await converse(step.address, step.port, env.timeout, env.source, talk)
    return [step.observe("noise", failures.NOISE_HANDSHAKE, failure, watch, {**evidence, **details})]
