"""HTTP: one GET of a service URL, read with a cap, matched against blockpage fingerprints.

The request goes to the address the round resolved (not a fresh lookup), so the HTTP step
tests the same path as the DNS/TCP/TLS steps before it. Reading stops at `max_bytes` or
after `transfer_seconds`; what was read in that time gives the throughput that tells
throttling apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from probe.measure.checks.base import Blockpage, Env, Step
from probe.measure.wire.net import MeteredSocket, Stopwatch, metered_socket_factory
from probe.model import failures
from probe.model.observation import Observation
from probe.sinks import scrub

FINGERPRINT_WINDOW = 65536  # blockpages are small: match the first 64 KiB only
USER_AGENT = "reach-probe (+https://github.com/reach-probe)"
#: `options: {user_agent: browser}`: what a desktop browser sends. Some services answer an
#: unknown client with 4xx (WhatsApp Web, ooni/spec ts-018), or a blockpage only to browsers.
BROWSER_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                      "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")


def user_agent(option: object) -> str:
    """The User-Agent a step asks for: `browser`, a literal string, or the probe's own."""
    if option == "browser":
        return BROWSER_USER_AGENT
    return str(option) if isinstance(option, str) and option else USER_AGENT


if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver


@cache
def _pinned_resolver_class() -> Callable[[str], AbstractResolver]:
    """The resolver class, made on first use: aiohttp (several MB of modules) is loaded
    only by the rounds that make HTTP requests."""
    from aiohttp.abc import AbstractResolver, ResolveResult

    class PinnedResolver(AbstractResolver):
        """Answers every lookup with one address: the one the DNS step chose."""

        def __init__(self, address: str) -> None:
            self._address = address
            self._family = socket.AF_INET6 if ":" in address else socket.AF_INET

        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
            return [ResolveResult(hostname=host, host=self._address, port=port,
                                  family=self._family, proto=0, flags=0)]

        async def close(self) -> None:
            return None

    return PinnedResolver


def PinnedResolver(address: str) -> AbstractResolver:  # used like the class it makes
    """A resolver that answers every lookup with ``address``."""
    return _pinned_resolver_class()(address)


@contextlib.asynccontextmanager
async def _settled(sockets: list[MeteredSocket]) -> AsyncIterator[None]:
    """Count the request's sockets before they are released (probe.measure.wire.net)."""
    try:
        yield
    finally:
        for sock in sockets:
            sock.settle()


def match_blockpage(text: str, blockpages: tuple[Blockpage, ...]) -> str | None:
    return next((b.name for b in blockpages if b.pattern in text), None)


async def fetch(
    url: str,
    *,
    address: str | None,
    context: ssl.SSLContext,
    timeout: float,
    max_bytes: int,
    transfer_seconds: float,
    blockpages: tuple[Blockpage, ...],
    source: str | None = None,
    headers: Mapping[str, str] | None = None,
    capture: tuple[str, ...] = (),
    agent: str = USER_AGENT,
) -> tuple[str | None, dict[str, Any]]:
    """GET `url` (pinned to `address` if given); return (failure, evidence). `headers` are
    sent besides the usual ones (a fronted request's Host); the response headers named in
    `capture` go into the evidence (under `headers`, lower-case names)."""
    import aiohttp

    details: dict[str, Any] = {"url": url}
    created: list[MeteredSocket] = []

    def factory(addr_info: tuple[Any, ...]) -> MeteredSocket:
        # a receive buffer no larger than what is read: the kernel would otherwise take in
        # megabytes past max_bytes (the window was open) before the socket is closed
        sock = metered_socket_factory(addr_info, receive_buffer=min(max_bytes, 1 << 20))
        created.append(sock)
        return sock

    # Not force_close: a connection released at the end of its body stays open in the
    # session's pool until it is counted (_settled); the session is closed right after.
    connector = aiohttp.TCPConnector(
        ssl=context, resolver=PinnedResolver(address) if address else None,
        local_addr=(source, 0) if source else None, limit=1, socket_factory=factory,
    )
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": agent},
        ) as session, session.get(url, allow_redirects=False,
                                  headers=dict(headers or {})) as response, _settled(created):
            details["status"] = response.status
            if capture:
                details["headers"] = {name.lower(): response.headers[name][:200]
                                      for name in capture if name in response.headers}
            details["server"] = response.headers.get("Server", "")
            location = response.headers.get("Location", "")
            if location:  # where it sent us; not the query a portal may echo us in
                details["location"] = scrub.shared.text(location.split("?", 1)[0].split("#", 1)[0][:512])
            body = bytearray()
            first_byte = time.perf_counter()
            deadline = first_byte + transfer_seconds
            # The measurement ends at max_bytes, at the end of the body, or at the deadline:
            # a throttled (or stalled) transfer is cut by time, never left hanging.
            while len(body) < max_bytes:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        chunk = await response.content.read(min(65536, max_bytes - len(body)))
                except TimeoutError:
                    break
                if not chunk:
                    break
                body += chunk
            elapsed = max(time.perf_counter() - first_byte, 1e-6)
            details["cut_by_time"] = len(body) < max_bytes and not response.content.at_eof()
            details["bytes"] = len(body)
            details["complete"] = response.content.at_eof()
            details["throughput_bps"] = round(len(body) * 8 / elapsed, 1)
            window = bytes(body[:FINGERPRINT_WINDOW]).decode("utf-8", "replace") + location
            blockpage = match_blockpage(window, blockpages)
            if blockpage:
                details["blockpage"] = blockpage
            if response.status >= 400:
                raise failures.UnexpectedStatus(f"HTTP {response.status}")
        return None, details
    except Exception as exc:
        details["error"] = scrub.shared.text(str(exc)[:200])
        return failures.classify(exc), details


async def check(step: Step, env: Env) -> list[Observation]:
    """One GET of the target's URL, pinned to the address the round resolved."""
    url = step.options.get("url") or step.target.url
    if not url:
        return []
    watch = Stopwatch()
    failure, details = await fetch(
        url, address=step.address, context=env.trust.context(step.target.trust),
        timeout=env.timeout, max_bytes=env.http_max_bytes,
        transfer_seconds=env.http_transfer_seconds, blockpages=env.blockpages,
        source=env.source.for_version(step.target.family),
        agent=user_agent(step.options.get("user_agent")),
    )
    expect = step.options.get("expect")
    if expect == "any_status" and failure == failures.HTTP_UNEXPECTED_STATUS:
        # An API that answers a bare GET with 4xx (a registration endpoint without its
        # parameters) has proven the path: TLS was verified, the server spoke HTTP.
        failure = None
    if failure is None and expect == "https_redirect":
        location = str(details.get("location", ""))
        if not (300 <= int(details.get("status", 0)) < 400 and location.startswith("https://")):
            details["error"] = "plain HTTP did not redirect to https"
            failure = failures.HTTP_UNEXPECTED_STATUS
    port = 443 if url.startswith("https:") else 80
    return [step.observe("http", failures.HTTP_ROUND_TRIP, failure, watch, details, port=port)]
