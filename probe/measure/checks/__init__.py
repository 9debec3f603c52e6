"""The registry of checks, in the manner of blackbox_exporter's prober map: one record
(probe.model.checkspec.CheckSpec) and one function per check.

Every check is `async (step, env) -> list[Observation]` (probe.measure.checks.base): it returns
observations and never touches metrics or verdicts. A catalogue's plan names checks by
their record's name; a new check is one module plus one `register(CheckSpec(...), run)`
line here, and everything else (its timeout key, confirmation, the classifier's and the
vantage's view of it, its label on the status page) follows from the record.
"""

from __future__ import annotations

from probe.measure.checks import dns, fronting, http, mtproto, mtproxy, noise, tcp, tls
from probe.measure.checks.base import Check, Registered
from probe.model.checkspec import CheckSpec

REGISTRY: dict[str, Registered] = {}


def register(spec: CheckSpec, run: Check) -> Registered:
    """Add a check; a second record of the same name is refused, as is an observation kind
    (`records`) that names no record."""
    if spec.name in REGISTRY:
        raise ValueError(f"check {spec.name!r} is registered twice")
    if spec.records != spec.name and spec.records not in REGISTRY:
        raise ValueError(f"check {spec.name!r} records {spec.records!r} observations, "
                         "which no registered check is")
    shared = timeout_keys().get(spec.timeout)
    if shared is not None and (shared.timeout_default, shared.timeout_max) != (
            spec.timeout_default, spec.timeout_max):
        raise ValueError(f"check {spec.name!r}: timeout {spec.timeout!r} has default "
                         f"{shared.timeout_default} and at most {shared.timeout_max} in {shared.name!r}")
    REGISTRY[spec.name] = registered = Registered(spec, run)
    return registered


def spec_of(check: str) -> CheckSpec | None:
    """The record an observation's `check` names (None for one no check makes)."""
    registered = REGISTRY.get(check)
    return registered.spec if registered is not None else None


def timeout_keys() -> dict[str, CheckSpec]:
    """Each key of schedule.timeouts, with the first record that uses it (its default and
    its largest accepted value)."""
    keys: dict[str, CheckSpec] = {}
    for registered in REGISTRY.values():
        keys.setdefault(registered.spec.timeout, registered.spec)
    return keys


# The observation kinds first: the variants below record observations of these kinds.
register(CheckSpec(name="dns", timeout="dns", timeout_default=5.0, label="DNS",
                   needs_address=False, proves_online=True), dns.check)  # DoH replies prove
register(CheckSpec(name="tcp", timeout="connect", timeout_default=10.0, label="TCP",
                   connect_level=True), tcp.check)
# Primary and control handshakes are verified against the target's anchors; the tls
# differentials run unverified and prove nothing (probe.judge.vantage.proof).
register(CheckSpec(name="tls", timeout="tls", timeout_default=10.0, label="TLS",
                   authenticates=True, connect_level=True, proves_online=True,
                   proof_words="verified TLS {address}:{port} ({name})"), tls.check)
NONCE = "MTProto resPQ with our nonce from {address}:{port} ({target})"
register(CheckSpec(name="mtproto", timeout="mtproto", timeout_default=10.0, label="MTProto",
                   authenticates=True, connect_level=True, proves_online=True, proof_words=NONCE),
         mtproto.check)
# The resPQ relayed by an MTProxy echoes our nonce: a DC answered, through the proxy.
register(CheckSpec(name="mtproxy", timeout="mtproto", timeout_default=10.0, label="MTProxy",
                   authenticates=True, proves_online=True, proof_words=NONCE), mtproxy.check)
# A ServerHello keyed to our ephemeral key, its chain verified to WhatsApp's root.
register(CheckSpec(name="noise", timeout="tls", timeout_default=10.0, label="Noise",
                   authenticates=True, connect_level=True, proves_online=True,
                   proof_words="WhatsApp Noise certificate chain from {address}:{port} ({target})"),
         noise.check)
# A transfer's failure only ever says "inconclusive": it is not confirmed.
register(CheckSpec(name="http", timeout="http", timeout_default=15.0, timeout_max=300.0,
                   label="HTTP", confirmed=False, transfer=True), http.check)
register(CheckSpec(name="tls_neutral_sni", timeout="tls", timeout_default=10.0, records="tls"),
         tls.neutral_sni)
register(CheckSpec(name="tls_certificate", timeout="tls", timeout_default=10.0, records="tls"),
         tls.rejected_certificate)
register(CheckSpec(name="mtproto_plain", timeout="mtproto", timeout_default=10.0,
                   records="mtproto"), mtproto.plain)
register(CheckSpec(name="mtproxy_neutral_sni", timeout="mtproto", timeout_default=10.0,
                   records="mtproxy"), mtproxy.neutral_sni)
register(CheckSpec(name="http_post", timeout="mtproto", timeout_default=10.0, records="http"),
         mtproto.plain_http)
# Signal's domain fronting: an HTTPS request through a front, an http observation.
register(CheckSpec(name="fronted", timeout="http", timeout_default=15.0, timeout_max=300.0,
                   records="http"), fronting.check)
