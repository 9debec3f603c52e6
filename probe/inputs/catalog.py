"""Built-in service catalogues: what to check for each messenger, as data.

A catalogue (probe/catalogs/NAME.yaml) lists endpoint groups. Each group says which
endpoints it has (domain names to resolve, or fixed addresses), on which ports, and which
steps run on each of them in which order, with the differentials that explain a failed
step. Adding a messenger is one YAML file here (plus a check module in probe/measure/checks/ if it
has a protocol of its own); nothing in the code knows a service's addresses.

Groups named `datacenters` and `domains` are what the config's older override keys
(`datacenters`, `domains`, `ports`, their `extra_` forms) replace or extend.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from probe.inputs import prefixes
from probe.inputs.schema import ConfigError, IPAddress, IPNetwork, Ports, Strict
from probe.inputs.yamlfile import read_text, validate_yaml


class Endpoint(Strict):
    """A domain to resolve (no `addresses`), or a named host with fixed addresses."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,253}$")
    addresses: list[IPAddress] = []
    url: str | None = Field(default=None, pattern=r"^https?://")
    port: int | None = Field(default=None, gt=0, lt=65536)  # instead of the group's ports
    sni: str | None = None  # the TLS name for fixed addresses (a domain is its own)
    trust: str | None = None  # the trust anchors for TLS, instead of the group's
    location: str = ""


class Datacenter(Strict):
    """The config's `datacenters` override: a named set of fixed addresses."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    addresses: list[IPAddress] = Field(min_length=1)
    location: str = ""

    def endpoint(self) -> Endpoint:
        return Endpoint(name=self.name, addresses=self.addresses, location=self.location)


class Domain(Strict):
    """The config's `domains` override: a name to resolve, an optional URL and port."""

    name: str = Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")
    url: str | None = Field(default=None, pattern=r"^https?://")
    port: int = Field(default=443, gt=0, lt=65536)  # where the tcp and tls checks go

    def endpoint(self) -> Endpoint:
        return Endpoint(name=self.name, url=self.url, port=self.port)


class StepSpec(Strict):
    """One step of a group's plan: a check from the registry (probe/measure/checks), what it needs,
    and which differentials run when it fails."""

    check: str
    # Checks of this plan that must have succeeded first; default: every earlier step.
    needs: list[str] | None = None
    differentials: list[str] = []
    # Run before the step itself, whatever its outcome (a neutral-SNI handshake that a
    # post-trigger drop would otherwise swallow, for example).
    before: list[str] = []
    options: dict[str, Any] = {}


def _short_steps(value: Any) -> Any:
    """`- tcp` is short for `- check: tcp`."""
    return [{"check": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


#: A plan's steps, in the short form or the long one.
Steps = Annotated[list[StepSpec], BeforeValidator(_short_steps)]


#: What a user loses when a group's targets are blocked: the per-messenger answer names
#: these ("partly blocked: media, calls").
UserPath = Literal["chat", "media", "registration", "web", "calls"]
PATHS: tuple[str, ...] = ("chat", "media", "registration", "web", "calls")


class Group(Strict):
    endpoints: list[Endpoint] = Field(min_length=1)
    ports: Ports = [443]
    steps: Steps = Field(min_length=1)
    trust: str = "system"
    description: str = ""
    # A circumvention path (`domain_fronting`, `whatsapp_proxy`): the way the apps get
    # around a block. Its targets answer "does circumvention work?" and never count toward
    # the messenger's own status (a working detour does not make a block `ok`).
    circumvention: str = Field(default="", pattern=r"^[a-z_]{0,32}$")
    path: UserPath = "chat"


class Source(Strict):
    """One upstream a catalogue was checked against: where (URL), which version (a commit
    or, for a page without versions, the date it was read), and what it gave."""

    url: str = Field(pattern=r"^https?://")
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,40}$")
    date: dt.date | None = None
    what: str = ""

    @model_validator(mode="after")
    def _pinned(self) -> Source:
        if self.commit is None and self.date is None:
            raise ValueError("a source needs a commit or a date: an unpinned source cannot "
                             "be diffed at the next review")
        return self


class Catalog(Strict):
    messenger: str
    description: str = ""
    # Where the service's addresses are: DNS answers outside this space are suspect.
    address_space: list[IPNetwork] = []
    address_space_source: str = ""
    # For services that publish no ranges: the prefixes their AS announces, shipped as
    # data (probe/data/prefixes/AS<N>.txt, refreshed with `probe prefixes`).
    address_space_asn: list[int] = []
    neutral_sni: str = "www.example.com"
    groups: dict[str, Group] = Field(min_length=1)
    # Freshness: what the entries were checked against, when, and when to check again.
    sources: list[Source] = []
    reviewed: dt.date | None = None
    review_by: dt.date | None = None

    def overdue(self, today: dt.date | None = None) -> bool:
        """Past its review date: still used (a stale entry is better than none), but shown."""
        return self.review_by is not None and (today or dt.date.today()) > self.review_by

    def networks(self) -> list[IPNetwork]:
        """The service's address space: the listed networks and its ASes' prefixes."""
        return [*self.address_space, *(n for asn in self.address_space_asn for n in prefixes.load(asn))]

    def space_verified(self) -> bool:
        """Whether every AS prefix list behind the address space is verified (a list the
        catalogue writes out itself counts as its authors' statement)."""
        return all(prefixes.is_verified(prefixes.bundled_provenance(asn))
                   for asn in self.address_space_asn)


#: Where the built-in catalogues are (the package's catalogs/ folder).
BUILTIN = Path(str(resources.files("probe") / "catalogs"))


def available() -> list[str]:
    """Names of the built-in catalogues."""
    return sorted(p.name.removesuffix(".yaml") for p in BUILTIN.iterdir() if p.name.endswith(".yaml"))


@cache
def builtin(name: str) -> Catalog:
    """Load a built-in catalogue by messenger name, read as a config is: a fault in it is
    one ConfigError naming its file, line and key."""
    if name not in available():
        raise ConfigError(f"unknown messenger catalogue {name!r} (built in: {', '.join(available())})")
    path = BUILTIN / f"{name}.yaml"
    return validate_yaml(read_text(path), str(path), Catalog)


def is_file_reference(ref: str) -> bool:
    """A config's `catalog:` names a built-in catalogue, or a file when it ends in .yaml/.yml."""
    return ref.endswith((".yaml", ".yml"))


@cache
def _from_file(path: Path, mtime_ns: int) -> Catalog:
    return validate_yaml(read_text(path), str(path), Catalog)


def load(ref: str) -> Catalog:
    """A built-in catalogue by name, or a catalogue file by path: the fourth messenger can
    be one YAML file next to the config, without a new image. Read once per file version
    (cached by path and modification time); its errors name its own file and lines."""
    if not is_file_reference(ref):
        return builtin(ref)
    path = Path(ref)
    try:
        return _from_file(path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"{ref}: cannot read the catalogue: {exc.strerror or exc}") from None


def describe(name: str) -> dict[str, Any]:
    """A catalogue as plain data, for `probe catalog`."""
    return builtin(name).model_dump(mode="json", exclude_defaults=True)


def provenance_lines(name: str, today: dt.date | None = None) -> str:
    """A catalogue's sources and review dates as text, for `probe catalog --sources`."""
    cat = builtin(name)
    review = (f"reviewed {cat.reviewed or 'never'}, review by {cat.review_by or 'unset'}"
              + (" (OVERDUE: diff the sources below, docs/messengers.md)"
                 if cat.overdue(today) else ""))
    lines = [f"{name}: {review}"]
    for source in cat.sources:
        pin = f"commit {source.commit}" if source.commit else f"read {source.date}"
        lines.append(f"  {source.url} ({pin})" + (f": {source.what}" if source.what else ""))
    if not cat.sources:
        lines.append("  no sources recorded")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One endpoint in one address family on one port: the unit of a verdict.

    `address` is fixed for endpoints with addresses (a data centre); for a domain it is
    None and the plan's dns step finds it. Baseline sites are targets too, with no
    messenger. Built by keyword only: fourteen fields by position are a bug waiting.
    """

    messenger: str | None
    name: str
    group: str
    endpoint: str
    family: int
    port: int
    address: str | None = None
    domain: str | None = None
    url: str | None = None
    sni: str | None = None
    trust: str = "system"
    steps: tuple[StepSpec, ...] = ()
    address_space: tuple[IPNetwork, ...] = ()
    circumvention: str = ""  # the circumvention path this target measures, if any
    # False while the prefix list behind address_space is not verified: an answer outside
    # it is then no evidence of forgery by itself.
    space_verified: bool = True
    # What a user loses when this target is blocked (the group's `path`).
    path: str = "chat"

    def in_address_space(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.address_space)
