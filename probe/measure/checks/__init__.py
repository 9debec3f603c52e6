"""The registry of checks, in the manner of blackbox_exporter's prober map.

Every check is `async (step, env) -> list[Observation]` (probe.measure.checks.base): it returns
observations and never touches metrics or verdicts. A catalogue's plan names checks by
their registry key; a new check is one module plus one line here.
"""

from __future__ import annotations

from probe.measure.checks import dns, fronting, http, mtproto, mtproxy, noise, tcp, tls
from probe.measure.checks.base import Registered

REGISTRY: dict[str, Registered] = {
    "dns": Registered(dns.check, "dns", needs_address=False),
    "tcp": Registered(tcp.check, "connect"),
    "tls": Registered(tls.check, "tls"),
    "tls_neutral_sni": Registered(tls.neutral_sni, "tls"),
    "tls_certificate": Registered(tls.rejected_certificate, "tls"),
    "mtproto": Registered(mtproto.check, "mtproto"),
    "mtproto_plain": Registered(mtproto.plain, "mtproto"),
    "mtproxy": Registered(mtproxy.check, "mtproto"),
    "mtproxy_neutral_sni": Registered(mtproxy.neutral_sni, "mtproto"),
    "http_post": Registered(mtproto.plain_http, "mtproto"),
    "http": Registered(http.check, "http"),
    "noise": Registered(noise.check, "tls"),
    "fronted": Registered(fronting.check, "http"),
}
