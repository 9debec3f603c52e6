"""Built-in service catalogues and the plan of targets a round checks.

A catalogue is data (probe/catalogs/NAME.yaml, linked from configs/catalogs/). The config
may replace or extend every part of it, which is how the lab and private deployments point
the probe at their own hosts; nothing else in the code knows a real Telegram address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from probe.config import Config, ConfigError, Datacenter, Domain, IPAddress, IPNetwork, Strict


class Catalog(Strict):
    messenger: str
    description: str = ""
    datacenters: list[Datacenter]
    ports: list[int]
    domains: list[Domain]
    address_space: list[IPNetwork]
    neutral_sni: str


def available() -> list[str]:
    """Names of the built-in catalogues."""
    folder = resources.files("probe") / "catalogs"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@cache
def builtin(name: str) -> Catalog:
    """Load a built-in catalogue by messenger name."""
    if name not in available():
        raise ConfigError(f"unknown messenger catalogue {name!r} (built in: {', '.join(available())})")
    text = (resources.files("probe") / "catalogs" / f"{name}.yaml").read_text(encoding="utf-8")
    return Catalog.model_validate(yaml.safe_load(text))


@dataclass(frozen=True, slots=True)
class DCTarget:
    """One address of one data centre on one port: checked with tcp and mtproto."""

    messenger: str
    name: str
    datacenter: str
    address: IPAddress
    port: int

    @property
    def family(self) -> int:
        return self.address.version


@dataclass(frozen=True, slots=True)
class DomainTarget:
    """One domain in one address family: checked with dns, tcp, tls and (with a url) http."""

    messenger: str
    name: str
    domain: str
    family: int
    url: str | None
    neutral_sni: str
    port: int = 443


@dataclass(frozen=True, slots=True)
class MessengerPlan:
    """Everything a round needs to know about one messenger."""

    messenger: str
    dc_targets: tuple[DCTarget, ...]
    domain_targets: tuple[DomainTarget, ...]
    address_space: tuple[IPNetwork, ...]

    def in_address_space(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.address_space)

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.dc_targets] + [t.name for t in self.domain_targets]


def _dc_targets(messenger: str, datacenters: list[Datacenter], ports: list[int]) -> list[DCTarget]:
    targets = []
    for dc in datacenters:
        seen: dict[int, int] = {}
        for address in dc.addresses:
            index = seen.get(address.version, 0)
            seen[address.version] = index + 1
            suffix = "" if index == 0 else chr(ord("a") + index)
            for port in ports:
                name = f"{dc.name}-v{address.version}{suffix}:{port}"
                targets.append(DCTarget(messenger, name, dc.name, address, port))
    return targets


def plan_messenger(name: str, config: Config) -> MessengerPlan:
    """Merge a built-in catalogue with the config's overrides into a list of targets."""
    overrides = config.messengers[name]
    catalog = builtin(overrides.catalog or name)
    datacenters = [*(overrides.datacenters if overrides.datacenters is not None
                     else catalog.datacenters), *overrides.extra_datacenters]
    domains = [*(overrides.domains if overrides.domains is not None else catalog.domains),
               *overrides.extra_domains]
    space = [*(overrides.address_space if overrides.address_space is not None
               else catalog.address_space), *overrides.extra_address_space]
    ports = overrides.ports if overrides.ports is not None else catalog.ports
    neutral = overrides.neutral_sni or catalog.neutral_sni
    domain_targets = [
        DomainTarget(name, f"{d.name}/v{family}", d.name, family, d.url, neutral, d.port)
        for d in domains for family in (4, 6)
    ]
    return MessengerPlan(name, tuple(_dc_targets(name, datacenters, ports)),
                         tuple(domain_targets), tuple(space))


def plan(config: Config) -> list[MessengerPlan]:
    """The plan of every configured messenger."""
    return [plan_messenger(name, config) for name in config.messengers]


def describe(name: str) -> dict[str, Any]:
    """A catalogue as plain data, for `probe catalog`."""
    return builtin(name).model_dump(mode="json")
