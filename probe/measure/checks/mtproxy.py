"""MTProxy: Telegram's own proxy, what users in censored countries connect through.

A proxy is reachable when it relays resPQ (with our nonce) back from a data centre: that
proves the whole path, client -> proxy -> DC, carries MTProto. The secret decides the
transport (probe.measure.wire.obfs2): 16 bytes = obfuscated2 with the secret in the keys; `dd` =
the same with padded intermediate (random packet sizes); `ee` = "fake TLS", a ClientHello
keyed with the secret, the proxy's greeting checked against it, then the obfuscated stream
in TLS application-data records.

The secret is read when the check runs, from the file or environment variable the config
names; it never enters an observation, a log line or an error message. Only its kind and
the SNI (which is on the wire for anyone to see anyway) are evidence.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import probe.measure.wire.obfs2 as obfs2
from probe.measure.checks.base import Env, Step
from probe.measure.checks.mtproto import Channel, dc_id, exchange, tag_of
from probe.measure.wire.net import Stopwatch, converse
from probe.model import failures
from probe.model.observation import Observation

MAX_SECRET_FILE = 4096


class SecretUnavailable(Exception):
    """The secret's file or variable cannot be read: a deployment fault, not the network."""

    failure = failures.UNKNOWN_FAILURE


def _read_secret_file(path: Path) -> str:
    """A secret file's text. Opened without blocking (a FIFO swapped in must not freeze the
    probe in open()), a regular file only, at most MAX_SECRET_FILE bytes; errors name the
    file and what is wrong, never a byte of what it holds."""
    def refuse(reason: str) -> SecretUnavailable:
        return SecretUnavailable(f"cannot read the MTProxy secret file {path}: {reason}")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise refuse(exc.strerror or type(exc).__name__) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refuse("not a regular file (a FIFO, device, socket or directory)")
        data = os.read(fd, MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise refuse(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE:
        raise refuse(f"larger than {MAX_SECRET_FILE} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise refuse("not ASCII text") from None


def read_secret(options: Mapping[str, Any]) -> obfs2.ProxySecret:
    """The proxy secret from `secret_file` or `secret_env` (never from the config itself).
    Errors name where the secret should be, never what it is."""
    if options.get("secret_file"):
        path = Path(str(options["secret_file"]))
        text = _read_secret_file(path)
        where = f"file {path}"
    else:
        name = str(options.get("secret_env", ""))
        text = os.environ.get(name, "")
        if not text:
            raise SecretUnavailable(f"the MTProxy secret variable {name or '(none)'} is not set")
        where = f"variable {name}"
    try:
        return obfs2.parse_secret(text)
    except ValueError as exc:
        raise SecretUnavailable(f"MTProxy secret in {where}: {exc}") from None


async def _record(channel: Channel) -> bytes:
    header = await channel.recv_raw(5)
    (length,) = struct.unpack(">H", header[3:5])
    if header[1:3] != b"\x03\x03" or length > obfs2.MAX_RECORD:
        raise failures.ProtocolError(f"fake TLS: {header.hex()} is not a TLS record header")
    return header + await channel.recv_raw(length)


async def fake_tls_greeting(channel: Channel, key: bytes, sni: str) -> None:
    """Send the keyed ClientHello; read ServerHello, ChangeCipherSpec and the first
    application-data record, and require the HMAC that proves the proxy holds the secret."""
    hello = obfs2.client_hello(key, sni)
    await channel.send_raw(hello)
    greeting = b""
    for kind in (obfs2.TLS_HANDSHAKE, obfs2.TLS_CHANGE_CIPHER, obfs2.TLS_APPLICATION_DATA):
        rec = await _record(channel)
        if rec[0] != kind:
            raise failures.ProtocolError(f"fake TLS: record type {rec[0]:#04x}, expected {kind:#04x}")
        greeting += rec
    if not obfs2.server_hello_ok(key, hello, greeting):
        raise failures.ProtocolError("fake TLS: the server's greeting is not keyed with the secret")


async def _probe(step: Step, env: Env, sni: str | None) -> list[Observation]:
    assert step.address is not None
    secret = read_secret(step.options)
    nonce = os.urandom(16)
    # dd and ee secrets mean padded intermediate (TDLib: random padding for secrets >= 17 bytes)
    protocol, tag = tag_of(step, "intermediate" if secret.kind == "plain" else "padded")
    dc = dc_id(step)
    server_name = sni or str(step.options.get("sni") or secret.domain or "")

    async def talk(sock: socket.socket, details: dict[str, object]) -> None:
        init = obfs2.ObfuscatedInit.make(tag, dc, secret.key)
        if secret.kind == "ee":
            channel = Channel(sock, records=True, preamble=obfs2.CHANGE_CIPHER_SPEC)
            await fake_tls_greeting(channel, secret.key, server_name)
            details["fake_tls"] = "greeting verified"
            channel.use(init.encrypt, init.decrypt)
        else:
            channel = Channel(sock, init.encrypt, init.decrypt)
        await exchange(channel, init.header, tag, nonce, details)

    failure, details, watch = await converse(step.address, step.port, env.timeout, env.source, talk)
    evidence: dict[str, object] = {"transport": "mtproxy", "secret_kind": secret.kind,
                                   "protocol": protocol, "dc": dc, "nonce": nonce.hex()}
    if secret.kind == "ee":
        evidence["sni"] = server_name
    return [step.observe("mtproxy", failures.MTPROTO_HANDSHAKE, failure, watch,
                         {**evidence, **details})]


async def check(step: Step, env: Env) -> list[Observation]:
    """Through the proxy to its DC: resPQ with our nonce relayed back."""
    try:
        return await _probe(step, env, None)
    except SecretUnavailable as exc:
        return [step.observe("mtproxy", failures.MTPROTO_HANDSHAKE, failures.UNKNOWN_FAILURE,
                             Stopwatch(), {"transport": "mtproxy", "error": str(exc)})]


async def neutral_sni(step: Step, env: Env) -> list[Observation]:
    """The differential of a fake-TLS proxy: the same exchange with the catalogue's
    neutral SNI. It working where the configured SNI failed means the name is filtered.
    Not applicable (no observation) to dd and plain secrets, which carry no name."""
    neutral = str(step.options.get("neutral_sni") or "")
    try:
        if not neutral or read_secret(step.options).kind != "ee":
            return []
    except SecretUnavailable:
        return []
    return await _probe(step, env, neutral)
