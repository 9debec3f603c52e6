"""Domain fronting: Signal's censorship-circumvention route, as libsignal takes it.

When Signal's own names are blocked, the apps (libsignal `rust/net/src/env.rs`,
`ProxyConfig`) connect to a large CDN under an innocuous name: DNS and the TLS SNI are the
front's (`github.githubassets.com`, `www.google.com`, ...), the certificate is the front's
(verified by the system store), and only inside the encrypted session does the HTTP `Host`
name Signal's reflector on that CDN (`reflector-signal.global.ssl.fastly.net`,
`reflector-nrgwuv7kwq-uc.a.run.app`), with a path prefix (`/service` for the chat service)
that the reflector forwards to Signal. A censor that blocks Signal's names but not the CDN
cannot see the difference without blocking the CDN.

Proof that the fronted request reached Signal, not the CDN's own error page or a censor:
Signal's chat service stamps its answers with `x-signal-timestamp` (libsignal's
`TIMESTAMP_HEADER_NAME`, the header it requires as confirmation of a fronted connection).
Any HTTP status is accepted (a bare GET of the WebSocket path is refused by the service);
an answer without the header is `http_unexpected_status`.

Options (the catalogue's `fronting` groups): `host` (the reflector), `path`, `confirm` (the
header; empty: any answer over verified TLS counts).
"""

from __future__ import annotations

from probe.measure.checks.base import Env, Step
from probe.measure.checks.http import fetch
from probe.measure.wire.net import Stopwatch
from probe.model import failures
from probe.model.observation import Observation

CONFIRM_HEADER = "x-signal-timestamp"


async def check(step: Step, env: Env) -> list[Observation]:
    """One fronted GET: SNI and certificate of the front, Host of the reflector."""
    host = str(step.options.get("host") or "")
    if not host or step.target.domain is None:
        return []
    path = str(step.options.get("path") or "/")
    confirm = str(step.options.get("confirm", CONFIRM_HEADER))
    port = "" if step.port == 443 else f":{step.port}"
    url = f"https://{step.target.domain}{port}{path}"
    watch = Stopwatch()
    failure, details = await fetch(
        url, address=step.address, context=env.trust.context(step.target.trust),
        timeout=env.timeout, max_bytes=4096, transfer_seconds=env.http_transfer_seconds,
        blockpages=env.blockpages, source=env.source.for_version(step.target.family),
        headers={"Host": host}, capture=(confirm,) if confirm else (),
    )
    details.update({"purpose": "domain_fronting", "front": step.target.domain, "host": host})
    if failure == failures.HTTP_UNEXPECTED_STATUS and "blockpage" not in details:
        failure = None  # the service refusing a bare GET still answered
    if failure is None and confirm and confirm not in details.get("headers", {}):
        details["error"] = f"no {confirm} header: the answer is not Signal's service"
        failure = failures.HTTP_UNEXPECTED_STATUS
    return [step.observe("http", failures.HTTP_ROUND_TRIP, failure, watch, details)]
