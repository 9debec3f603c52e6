"""The probe's config: its schema and defaults, and the checks across keys and files that
the schema alone cannot make (catalogue groups and checks, trust anchors, files that must
exist, at most MAX_TARGETS targets). Reading the YAML is probe.inputs.yamlfile's: every
error is one line naming file, line and key, the line the CLI prints.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, field_validator, model_validator

from probe.inputs import prefixes
from probe.inputs.catalog import (
    Catalog,
    Datacenter,
    Domain,
    Endpoint,
    Group,
    Steps,
    available,
    is_file_reference,
    load,
)
from probe.inputs.schema import ConfigError as ConfigError
from probe.inputs.schema import IPAddress, IPNetwork, Ports
from probe.inputs.schema import Strict as Strict
from probe.inputs.yamlfile import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from probe.inputs.yamlfile import key_path, line_at, read_text, validate_yaml
from probe.measure.checks import REGISTRY, timeout_keys
from probe.measure.checks.base import TrustStore
from probe.model.observation import VantageIdentity

MAX_TARGETS = 50_000


class Vantage(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    country: str = Field(default="ZZ", pattern=r"^[A-Z]{2}$")
    asn: int = Field(default=0, ge=0, le=4294967295)
    network: str = ""
    role: Literal["subject", "control"] = "subject"
    source_address: ipaddress.IPv4Address | None = None
    source_address6: ipaddress.IPv6Address | None = None

    @field_validator("asn", mode="before")
    @classmethod
    def _strip_as_prefix(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"(?i)AS\d+", value.strip()):
            return int(value.strip()[2:])
        return value

    def identity(self) -> VantageIdentity:
        """What a round records of the vantage (its addresses only to judge and scrub)."""
        own = tuple(str(a) for a in (self.source_address, self.source_address6) if a is not None)
        return VantageIdentity(self.name, self.country, self.asn, self.network, self.role, own)


class GroupOverrides(Strict):
    """Changes to one endpoint group of a catalogue: replace or extend its endpoints, its
    ports, or its steps."""

    endpoints: list[Endpoint] | None = None
    extra_endpoints: list[Endpoint] = []
    ports: Ports | None = None
    steps: Steps | None = None
    trust: str | None = None


class Proxy(Strict):
    """An MTProxy to check (Telegram's messengers only). The secret is never in the config:
    it is read when the check runs, from `secret_file` or the variable `secret_env`, so that
    a config can be shared, logged and shown without exposing the proxy."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    address: IPAddress
    port: int = Field(default=443, gt=0, lt=65536)
    secret_file: Path | None = None
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    sni: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,253}$")  # else the ee secret's
    dc: int = Field(default=2, ge=-1000, le=1000)  # the DC the proxy is asked to reach
    protocol: Literal["intermediate", "abridged", "padded"] | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> Proxy:
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret_file and secret_env")
        return self


class WhatsappProxy(Strict):
    """A WhatsApp proxy (github.com/WhatsApp/proxy) to check as WhatsApp's circumvention
    path. No default: a proxy's address is whatever its operator shares. Its :443 wraps the
    chat protocol in TLS (a self-signed certificate), :80 and :5222 carry it plain."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    address: IPAddress
    port: int = Field(default=443, gt=0, lt=65536)
    tls: bool | None = None  # default: TLS on 443, plain otherwise


class MessengerOverrides(Strict):
    """Per-messenger changes to a built-in catalogue (replace, or extend with extra_)."""

    # The catalogue to use: a built-in one's name (default: the messenger's key), or a
    # catalogue file (ending .yaml/.yml, relative to the config file).
    catalog: str | None = None
    datacenters: list[Datacenter] | None = None
    extra_datacenters: list[Datacenter] = []
    domains: list[Domain] | None = None
    extra_domains: list[Domain] = []
    ports: Ports | None = None
    address_space: list[IPNetwork] | None = None
    # A prefix file (`probe prefixes ASN --from ripestat.json --output FILE`) instead of the
    # catalogue's space: refreshed AS prefixes without a new image.
    address_space_file: Path | None = None
    extra_address_space: list[IPNetwork] = []
    neutral_sni: str | None = None
    groups: dict[str, GroupOverrides] = {}
    proxies: list[Proxy] = []  # MTProxy targets: their own group, `mtproxy`
    # WhatsApp proxies: circumvention targets of group `proxy` (Noise through the proxy)
    whatsapp_proxies: list[WhatsappProxy] = []
    # The catalogue's circumvention groups (Signal's domain fronting): off by default, as
    # they contact third parties' CDNs (the fronts) every round and add their own targets.
    circumvention: bool = False

    @model_validator(mode="after")
    def _one_space(self) -> MessengerOverrides:
        if self.address_space is not None and self.address_space_file is not None:
            raise ValueError("give at most one of address_space and address_space_file")
        return self

    def merged(self, catalog: Catalog) -> dict[str, Group]:
        """The catalogue's groups with these changes applied (groups left without endpoints
        dropped): what probe.inputs.plan builds targets from, and what the config's size
        check counts."""
        overrides = self
        groups = dict(catalog.groups)
        legacy: dict[str, tuple[list[Endpoint] | None, list[Endpoint], list[int] | None]] = {
            "datacenters": (
                None if overrides.datacenters is None else [d.endpoint() for d in overrides.datacenters],
                [d.endpoint() for d in overrides.extra_datacenters], overrides.ports),
            "domains": (
                None if overrides.domains is None else [d.endpoint() for d in overrides.domains],
                [d.endpoint() for d in overrides.extra_domains], None),
        }
        for name, (endpoints, extra, ports) in legacy.items():
            if name in groups and (endpoints is not None or extra or ports is not None):
                group = groups[name]
                groups[name] = group.model_copy(update={
                    "endpoints": [*(group.endpoints if endpoints is None else endpoints), *extra],
                    "ports": group.ports if ports is None else ports,
                })
        for name, change in overrides.groups.items():
            group = groups[name]
            groups[name] = group.model_copy(update={
                "endpoints": [*(group.endpoints if change.endpoints is None else change.endpoints),
                              *change.extra_endpoints],
                "ports": group.ports if change.ports is None else change.ports,
                "steps": group.steps if change.steps is None else change.steps,
                "trust": change.trust or group.trust,
            })
        return {name: group for name, group in groups.items() if group.endpoints}


class Resolver(Strict):
    """A plain DNS resolver (address) or a DNS-over-HTTPS one (url)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    address: IPAddress | None = None
    port: int = Field(default=53, gt=0, lt=65536)
    protocol: Literal["udp", "tcp"] = "udp"
    url: str | None = Field(default=None, pattern=r"^https://")

    @model_validator(mode="after")
    def _address_or_url(self) -> Resolver:
        if (self.address is None) == (self.url is None):
            raise ValueError("a resolver needs exactly one of 'address' or 'url'")
        return self


class Resolvers(Strict):
    system: bool = True
    resolv_conf: Path = Path("/etc/resolv.conf")
    servers: list[Resolver] = []
    control: list[Resolver] = []
    race_window: float = Field(default=0.3, ge=0, le=5)
    # Networks that count as public although IANA reserves them (a lab's 198.18.0.0/15):
    # answers in them are judged by the address-space check, not flagged as bogons.
    public_networks: list[IPNetwork] = []


class BaselineTarget(Strict):
    """A site unrelated to the service. With `sni`, reaching it means a verified TLS
    handshake, which a transparent proxy or captive portal cannot fake, and proves the
    vantage online; without, a TCP connect, which counts for the baseline but proves nothing.
    `kind` says whether it is hosted abroad (`international`) or in the vantage's country
    (`domestic`): a censor rarely blocks its own country's large sites."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    address: IPAddress
    port: int = Field(default=443, gt=0, lt=65536)
    sni: str | None = None
    kind: Literal["international", "domestic"] = "international"


def _site(name: str, address: str, sni: str) -> BaselineTarget:
    return BaselineTarget(name=name, address=ipaddress.ip_address(address), sni=sni)


class Baseline(Strict):
    """Sites that tell whether the vantage's own network works (probe.judge.vantage).

    The defaults are three operators' anycast resolvers, reached by verified TLS on fixed
    addresses, per family: stable and global, but of one kind, and public resolvers are
    what censors block first. An operator adds sites of other kinds, domestic ones above
    all (docs/engine-contract.md, "Choosing baseline sites").
    """

    targets: list[BaselineTarget] = [
        _site("cloudflare-dns", "1.1.1.1", "one.one.one.one"),
        _site("quad9-dns", "9.9.9.9", "dns.quad9.net"),
        _site("google-dns", "8.8.8.8", "dns.google"),
        _site("cloudflare-dns-v6", "2606:4700:4700::1111", "one.one.one.one"),
        _site("quad9-dns-v6", "2620:fe::fe", "dns.quad9.net"),
        _site("google-dns-v6", "2001:4860:4860::8888", "dns.google"),
    ]
    # any: a family's baseline answers when one of its sites does; majority: when more
    # than half do (probe.judge.vantage.baseline_up)
    require: Literal["any", "majority"] = "any"
    throughput_url: str | None = Field(default=None, pattern=r"^https?://")
    # Handshakes per site and round (concurrent, slightly staggered): the sample the
    # vantage's own loss is measured on and the service's failures are compared with.
    # Taken in full only when something timed out or was retransmitted (one handshake per
    # site otherwise), and then at least as many as the round's targets need
    # (probe.judge.vantage.samples_needed); 1: never more than one.
    samples: int = Field(default=20, ge=1, le=100)

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[BaselineTarget]) -> list[BaselineTarget]:
        names = [t.name for t in targets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"baseline site names must be unique ({', '.join(twice)} twice): "
                             "each is a metric label")
        return targets


Seconds = Annotated[float, Field(gt=0)]


class Timeouts(RootModel[dict[str, Seconds]]):
    """Seconds per timeout key of the check records (probe/measure/checks/__init__.py): a key
    no record uses is refused, a key not set takes its record's default."""

    root: dict[str, Seconds] = {}

    @model_validator(mode="after")
    def _known_keys(self) -> Timeouts:
        keys = timeout_keys()
        for key, value in self.root.items():
            spec = keys.get(key)
            if spec is None:
                close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
                hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(keys))})"
                raise ValueError(f"{key}: no check has this timeout{hint}")
            if value > spec.timeout_max:
                raise ValueError(f"{key}: {value:g} is too large: must be at most {spec.timeout_max:g}")
        self.root = {key: self.root.get(key, spec.timeout_default) for key, spec in keys.items()}
        return self

    def __getitem__(self, key: str) -> float:
        return self.root[key]

    def of(self, check: str) -> float:
        """The timeout a registered check runs under."""
        spec = REGISTRY[check].spec
        return self.root.get(spec.timeout, spec.timeout_default)


class Confirm(Strict):
    """How a failed step is confirmed before it can count as a block: repeated up to
    `attempts` times in all, `spacing` seconds apart, stopping at the first success (a
    real client retries too; one lost packet must not read as censorship)."""

    attempts: int = Field(default=4, ge=1, le=10)
    spacing: float = Field(default=1.0, ge=0, le=60)


class Schedule(Strict):
    # 30 s: with the shipped rules, onset -> page stays within 3 minutes (docs/fleet.md)
    interval: float = Field(default=30.0, ge=1, le=86400)
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    concurrency: int = Field(default=64, ge=1, le=10000)
    # uvloop (pip install 'reach-probe[fast]') cuts CPU per check by 20-30% (docs/benchmark.md);
    # auto = uvloop when installed. Read at start-up: a reload does not switch loops.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts.model_validate({}))
    confirm: Confirm = Confirm()
    # Tiers (probe.serve.schedule): every `interval` a few sentinel targets per messenger;
    # every endpoint at least once per `sweep` seconds (a slice each interval); transfer
    # checks at most once per `transfers` seconds, and on suspicion. A change seen by a
    # sentinel or a sweep runs that messenger's full round at once.
    sweep: float = Field(default=600.0, ge=1, le=7 * 86400)
    transfers: float = Field(default=6 * 3600.0, ge=1, le=30 * 86400)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(value: Any) -> int | None:
    """'30MB', '500 kB', '1.5GB', '2GiB' or a number of bytes; 'unlimited' is None.
    ValueError with what was expected otherwise."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a size like 30MB, or unlimited")
    if isinstance(value, int | float):
        number, unit, binary = float(value), "", ""
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"expected a size like 30MB, or unlimited (got {str(value)[:40]!r})")
        number, unit, binary = float(match[1]), match[2].lower(), match[3]
    size = int(number * (1024 ** "kmgt".index(unit) * 1024 if binary and unit else _UNITS[unit]))
    if size < 100_000:
        raise ValueError(f"{size} bytes a day is less than one round needs (at least 100kB)")
    return size


class Budget(Strict):
    """What the vantage may spend on the wire a day (probe.serve.schedule): work is shed
    in a stated order when it runs short, transfers and sweeps first, sentinels last."""

    bytes_per_day: int | None = 30_000_000  # None: unlimited

    @field_validator("bytes_per_day", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        return parse_size(value)


class TLS(Strict):
    ca_file: Path | None = None
    # Trust anchors by name, instead of the ones shipped in probe/data/trust/NAME.pem: a
    # catalogue group that pins its own CA (Signal) names it with `trust: NAME`.
    trust: dict[str, Path] = {}


class HTTP(Strict):
    max_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    transfer_seconds: float = Field(default=3.0, gt=0, le=60)


class Evidence(Strict):
    directory: Path | None = None
    retention_days: float = Field(default=14, gt=0, le=36500)
    # rotate evidence.jsonl when the next line would make it larger than this
    max_file_bytes: int = Field(default=64 << 20, ge=4096, le=1 << 40)
    # delete the oldest rotated files while the directory holds more than this
    max_directory_bytes: int = Field(default=1 << 30, ge=8192, le=1 << 50)


class Web(Strict):
    """The probe's own HTTP port (`probe run`)."""

    # Host names the status page and the API answer to, besides IP literals and localhost:
    # a browser tricked by DNS rebinding sends an attacker's name (docs/reliability.md).
    allowed_hosts: list[str] = Field(default=[], max_length=256)

    @field_validator("allowed_hosts")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,253}", name):
                raise ValueError(f"{name[:40]!r} is not a host name (letters, digits, '.', '-', '_')")
        return [name.lower().rstrip(".") for name in value]


class Config(Strict):
    vantage: Vantage
    messengers: dict[str, MessengerOverrides] = {"telegram": MessengerOverrides()}
    resolvers: Resolvers = Resolvers()
    baseline: Baseline = Baseline()
    schedule: Schedule = Schedule()
    tls: TLS = TLS()
    http: HTTP = HTTP()
    evidence: Evidence = Evidence()
    web: Web = Web()
    budget: Budget = Budget()


def _resolve_relative(config: Config, base: Path) -> Config:
    """Make file paths in the config relative to the config file, as users expect."""
    def fix(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else (base / path)

    def messenger(overrides: MessengerOverrides) -> MessengerOverrides:
        ref = overrides.catalog
        return overrides.model_copy(update={
            "catalog": str(fix(Path(ref))) if ref is not None and is_file_reference(ref) else ref,
            "address_space_file": fix(overrides.address_space_file),
            "proxies": [p.model_copy(update={"secret_file": fix(p.secret_file)})
                        for p in overrides.proxies],
        })

    return config.model_copy(update={
        "messengers": {name: messenger(o) for name, o in config.messengers.items()},
        "tls": config.tls.model_copy(update={
            "ca_file": fix(config.tls.ca_file),
            "trust": {name: fix(path) for name, path in config.tls.trust.items()},
        }),
        "evidence": config.evidence.model_copy(update={"directory": fix(config.evidence.directory)}),
    })


def _check_no_secrets(text: str, source: str, config: Config) -> None:
    """A value that looks like a secret, anywhere in the config, is refused naming its key
    only: secrets live in the file `secret_file` names or the variable `secret_env` names,
    and a config is shared, logged and shown (an MTProxy secret put in `secret_env` used to
    pass check-config and reach the evidence and /api/status in every round's error)."""
    from probe.inputs.config_errors import looks_secret

    def walk(value: Any, at: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*at, key))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, (*at, index))
        elif isinstance(value, Path):
            walk(value.name, at)
        elif looks_secret(value):
            raise ConfigError(
                f"{source}:{line_at(text, at)}: {key_path(at)}: looks like a secret (an MTProxy "
                "secret or a key): put it in a file named by secret_file or a variable named by "
                "secret_env, never in the config (the value is not shown)")

    walk(config.model_dump(), ())


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Parse and validate config text; raise ConfigError naming the source, line and key."""
    config = validate_yaml(text, source, Config,
                           empty="the config must be a YAML mapping with a 'vantage' key")
    _check_no_secrets(text, source, config)
    config = _resolve_relative(config, base or Path.cwd())
    catalogues: dict[str, Catalog] = {}
    for name, overrides in config.messengers.items():
        ref = overrides.catalog or name
        where: tuple[str, ...] = ("messengers", name) + (("catalog",) if overrides.catalog else ())
        if not is_file_reference(ref) and ref not in available():
            line = line_at(text, where)
            raise ConfigError(f"{source}:{line}: {key_path(where)}: unknown messenger catalogue "
                              f"{ref!r} (built in: {', '.join(available())}, or a .yaml file)")
        # read once: built in or the operator's file, its own errors name its own lines
        catalogue = catalogues[name] = load(ref)
        _check_groups(text, source, name, overrides, catalogue)
        _check_trust(text, source, name, overrides, catalogue, config.tls.trust)
    _check_size(config, source, catalogues)
    files: list[tuple[tuple[str | int, ...], Path | None]] = [(("tls", "ca_file"), config.tls.ca_file)]
    files += [(("tls", "trust", name), path) for name, path in config.tls.trust.items()]
    files += [(("messengers", name, "proxies", i, "secret_file"), proxy.secret_file)
              for name, m in config.messengers.items() for i, proxy in enumerate(m.proxies)]
    spaces = [(("messengers", name, "address_space_file"), m.address_space_file)
              for name, m in config.messengers.items()]
    for at, path in [*files, *spaces]:
        if path is not None and not path.is_file():
            line = line_at(text, at)
            raise ConfigError(f"{source}:{line}: {key_path(at)}: no such file: {path}")
    for _, path in spaces:
        if path is not None:
            prefixes.parse(read_text(path), str(path))  # its errors name its own lines
    return config


def _check_groups(text: str, source: str, name: str, overrides: MessengerOverrides,
                  catalogue: Catalog) -> None:
    """Group overrides must name a group of the catalogue and checks of the registry."""
    for group, change in overrides.groups.items():
        where: tuple[str | int, ...] = ("messengers", name, "groups", group)
        if group not in catalogue.groups:
            raise ConfigError(f"{source}:{line_at(text, where)}: {key_path(where)}: no such "
                              f"group in the {catalogue.messenger} catalogue "
                              f"(groups: {', '.join(catalogue.groups)})")
        for index, step in enumerate(change.steps or []):
            for check in (step.check, *step.differentials, *step.before):
                if check not in REGISTRY:
                    at = (*where, "steps", index)
                    raise ConfigError(f"{source}:{line_at(text, at)}: {key_path(at)}: unknown "
                                      f"check {check!r} (known: {', '.join(sorted(REGISTRY))})")


def _targets_of(group: Group) -> int:
    """Targets a group gives (as probe/inputs/plan.py builds them): each address, or both
    families of a name, times its port or the group's ports."""
    return sum((len(e.addresses) or 2) * (1 if e.port is not None else max(1, len(group.ports)))
               for e in group.endpoints)


def _check_size(config: Config, source: str, catalogues: dict[str, Catalog]) -> None:
    """At most MAX_TARGETS targets, counted from the catalogue groups with the config's
    changes (the plan's own merge, MessengerOverrides.merged, counting only): no target is
    built, so a small file asking for a million targets is refused at once."""
    count = 0
    for name, overrides in config.messengers.items():
        count += sum(_targets_of(group) for group in overrides.merged(catalogues[name]).values()
                     if overrides.circumvention or not group.circumvention)  # as the plan
        count += len(overrides.proxies) + len(overrides.whatsapp_proxies)
    if count > MAX_TARGETS:
        raise ConfigError(f"{source}:1: messengers: {count:,} targets; the limit is "
                          f"{MAX_TARGETS:,} (split the targets over several probes)")


def _check_trust(text: str, source: str, name: str, overrides: MessengerOverrides,
                 catalogue: Catalog, files: dict[str, Path]) -> None:
    """Every trust name of the messenger's groups and endpoints names an anchor: a bundled
    probe/data/trust/NAME.pem or a `tls.trust` entry (joined by `+` for a union)."""
    uses: list[tuple[tuple[str, ...], str]] = []
    for group in catalogue.groups.values():
        uses += [(("messengers", name), t) for t in
                 (group.trust, *(e.trust for e in group.endpoints if e.trust))]
    for group_name, change in overrides.groups.items():
        where: tuple[str, ...] = ("messengers", name, "groups", group_name)
        endpoints = [*(change.endpoints or []), *change.extra_endpoints]
        uses += [(where, t) for t in (change.trust, *(e.trust for e in endpoints)) if t]
    for at, trust in uses:
        unknown = TrustStore.unknown(trust, files)
        if unknown:
            raise ConfigError(f"{source}:{line_at(text, at)}: {key_path(at)}: unknown trust "
                              f"anchor {unknown[0]!r} (no probe/data/trust/{unknown[0]}.pem and no "
                              f"tls.trust entry)")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a one-line ConfigError."""
    path = Path(path)
    return parse_config(read_text(path), str(path), path.parent)
