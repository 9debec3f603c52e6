"""The check interface: every check is `async (step, env) -> list[Observation]`.

A `Step` is one planned step of one target (which check, in which role, on which address,
with the catalogue's options); an `Env` is what the round gives every check (source
addresses, trust anchors, resolvers, the check's own timeout). Observations are made with
`Step.observe`, so that no check repeats the target's identity in ten positional arguments.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from probe.inputs.catalog import Target
from probe.measure.wire.net import Source, Stopwatch
from probe.model.checkspec import CheckSpec
from probe.model.observation import Attempt, Observation, Role

if TYPE_CHECKING:  # imported by the rounds that make HTTP requests only
    import aiohttp


@dataclass(frozen=True, slots=True)
class ResolverSpec:
    """A resolver as the dns check sees it; `control` ones are believed untampered."""

    name: str
    protocol: str  # udp | tcp | doh
    address: str | None = None
    port: int = 53
    url: str | None = None
    control: bool = False

    @property
    def where(self) -> str:
        return self.url or f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    """What makes a DNS answer suspicious: fingerprints and bogons."""

    fingerprints: Mapping[str, str]  # address -> fingerprint name
    public_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def is_bogon(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True
        if any(ip.version == n.version and ip in n for n in self.public_networks):
            return False
        return not ip.is_global or ip.is_multicast or ip.is_reserved  # ::/8 holds Iran's d0::11


@dataclass(frozen=True, slots=True)
class Blockpage:
    name: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Retry:
    """How a failing step is confirmed: up to `attempts` tries, `spacing` seconds apart."""

    attempts: int = 1
    spacing: float = 0.0


class TrustStore:
    """Verifying TLS contexts by trust-anchor name, built once per round.

    `system` is the system store plus the config's extra CA file; any other name is a
    bundled anchor (probe/data/trust/NAME.pem) or the file the config names for it
    (`tls.trust: {NAME: FILE}`). Names joined by `+` are the union: `system+signal` accepts
    a chain to either, for a host behind a public CDN whose CA is not certain. A service
    that pins its own CA (Signal) is verified against that CA only, per host, so a change
    of one host's CA is a config line, not months of false "blocked" results.
    """

    def __init__(self, ca_file: Path | None, files: Mapping[str, Path]) -> None:
        self._ca_file = ca_file
        self._files = dict(files)
        self._contexts: dict[str, ssl.SSLContext] = {}

    def context(self, name: str) -> ssl.SSLContext:
        context = self._contexts.get(name)
        if context is None:
            context = self._contexts[name] = self._shared(name)
        return context

    def _shared(self, name: str) -> ssl.SSLContext:
        """The process's context for this name and these files as they are now: a store is
        made per round, a context only when its files changed (the system store alone took
        ~10 ms and ~1 MB to load in every round). Contexts hold no session."""
        parts = name.split("+")
        system = "system" in parts
        anchors = [self._anchor(part) for part in parts if part != "system"]
        files = ([_system_cafile()] if system else []) + (
            [self._ca_file] if system and self._ca_file is not None else []) + anchors
        key = (name, tuple((str(f), _stamp(f)) for f in files))
        context = _CONTEXTS.get(key)
        if context is None:
            if system:
                context = ssl.create_default_context()
                if self._ca_file is not None:
                    context.load_verify_locations(cafile=str(self._ca_file))
            else:
                context = ssl.create_default_context(cafile=str(anchors[0]))
            for anchor in anchors[0 if system else 1:]:
                context.load_verify_locations(cafile=str(anchor))
            if len(_CONTEXTS) >= _MAX_CONTEXTS:
                _CONTEXTS.pop(next(iter(_CONTEXTS)))
            _CONTEXTS[key] = context
        return context

    def anchor_path(self, name: str) -> Path:
        """The file of one anchor (not a union): the config's, else the bundled one. Checks
        that verify something other than X.509 (WhatsApp's Noise root key) read it."""
        return self._anchor(name)

    def _anchor(self, name: str) -> Path:
        if name in self._files:
            return self._files[name]
        return bundled_anchor(name)

    @staticmethod
    def unknown(name: str, files: Mapping[str, Path]) -> list[str]:
        """The parts of a trust name that name no anchor (for the config's validation)."""
        return [part for part in name.split("+") if part != "system" and part not in files
                and not bundled_anchor(part).is_file()]

    @staticmethod
    def unverified() -> ssl.SSLContext:
        """For differentials and for fetching a rejected certificate, never for trust.
        One context for the process (a context per handshake cost a context's setup each
        time); it holds no session, so every handshake stays a full one."""
        return _unverified_context()


def lazy_module(name: str) -> ModuleType:
    """A module that is imported on its first attribute access: a check whose module is
    large (its dependencies) costs nothing in a process whose rounds never run it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_CONTEXTS: dict[tuple[str, tuple[tuple[str, tuple[int, int, int] | None], ...]], ssl.SSLContext] = {}
_MAX_CONTEXTS = 32


def _system_cafile() -> Path:
    paths = ssl.get_default_verify_paths()
    return Path(paths.cafile or paths.openssl_cafile)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file: inode, size and modification time (None: unreadable, so
    the context is made and fails as it did before)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@cache
def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def bundled_anchor(name: str) -> Path:
    """Where a shipped trust anchor lives: probe/data/trust/NAME.pem."""
    return Path(str(resources.files("probe") / "data" / "trust" / f"{name}.pem"))


@dataclass(frozen=True, slots=True)
class Env:
    """What a round gives every check. `timeout` is the running check's own."""

    source: Source
    trust: TrustStore
    timeout: float
    resolvers: tuple[ResolverSpec, ...] = ()
    policy: AnswerPolicy = AnswerPolicy({})
    race_window: float = 0.3
    blockpages: tuple[Blockpage, ...] = ()
    http_max_bytes: int = 1 << 20
    http_transfer_seconds: float = 3.0
    retry: Retry = Retry()
    session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        # A round that asks resolvers loads dnspython now, before its checks run: imported
        # by the first DNS check it stalled the event loop for ~0.1-0.5 s mid-round (other
        # checks' timeouts and timings with it). A round without resolvers never loads it.
        if self.resolvers and "dns.asyncquery" not in sys.modules:
            _load_dnspython()

    def with_timeout(self, timeout: float) -> Env:
        return replace(self, timeout=timeout)


def _load_dnspython() -> None:
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rdatatype
    import dns.resolver  # noqa: F401


@dataclass(frozen=True, slots=True)
class Step:
    """One planned step of one target, as a check receives it."""

    target: Target
    check: str
    role: Role = "primary"
    address: str | None = None  # where to connect: fixed, or what the dns step chose
    options: Mapping[str, Any] = field(default_factory=dict)
    explains: Observation | None = None  # for a differential: the failed step it explains

    @property
    def port(self) -> int:
        return self.target.port

    @property
    def sni(self) -> str | None:
        return self.options.get("sni") or self.target.sni

    def observe(
        self,
        check: str,
        operation: str,
        failure: str | None,
        watch: Stopwatch,
        details: dict[str, Any] | None = None,
        *,
        address: str | None = None,
        port: int | None = None,
        role: Role | None = None,
        duration: float | None = None,
        attempts: list[Attempt] | None = None,
    ) -> Observation:
        """The one way a check makes an observation of this step."""
        return Observation(
            self.target.messenger, self.target.name, check, operation, failure,
            address if address is not None else self.address,
            port if port is not None else self.target.port,
            watch.started, watch.elapsed() if duration is None else duration,
            details if details is not None else {},
            role or self.role, attempts or [],
        )


Check = Callable[[Step, Env], Awaitable[list[Observation]]]


@dataclass(frozen=True, slots=True)
class Registered:
    """A check in the registry: its record and the function that runs it."""

    spec: CheckSpec
    run: Check

    @property
    def needs_address(self) -> bool:
        return self.spec.needs_address
