"""From a config to the round's targets: each catalogue merged with the config's overrides.

Every endpoint, address family and port is its own target with its own verdict (never
"reachable because one endpoint answered"). Target names are stable identifiers people
grep for and Prometheus keeps: `dc1-v4:443` for fixed addresses (a letter after the family
for a second address), `web.telegram.org/v4` for a domain on one port, and
`e1.whatsapp.net/v4:5222` for a domain on several (in one group, or in two groups:
`web.whatsapp.com/v4:443` and `web.whatsapp.com/v4:80`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from probe.inputs import prefixes
from probe.inputs.catalog import Group, StepSpec, Target, load
from probe.inputs.config import (
    BaselineTarget,
    Config,
    Confirm,
    Proxy,
    Timeouts,
    WhatsappProxy,
)
from probe.inputs.schema import ConfigError, IPNetwork
from probe.measure.checks import REGISTRY


@dataclass(frozen=True, slots=True)
class MessengerPlan:
    """Everything a round needs to know about one messenger."""

    messenger: str
    targets: tuple[Target, ...]
    address_space: tuple[IPNetwork, ...]

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]


def _domain_ports(groups: dict[str, Group]) -> dict[str, set[int]]:
    """Every port each domain is checked on, across groups (web.whatsapp.com: 443 and 80)."""
    ports: dict[str, set[int]] = {}
    for group in groups.values():
        for endpoint in group.endpoints:
            if not endpoint.addresses:
                ports.setdefault(endpoint.name, set()).update(
                    [endpoint.port] if endpoint.port is not None else group.ports)
    return ports


def _group_targets(messenger: str, group_name: str, group: Group,
                   space: tuple[IPNetwork, ...], domain_ports: dict[str, set[int]]) -> list[Target]:
    targets: list[Target] = []
    steps = tuple(group.steps)
    for endpoint in group.endpoints:
        ports = [endpoint.port] if endpoint.port is not None else group.ports
        trust = endpoint.trust or group.trust
        if endpoint.addresses:
            seen: dict[int, int] = {}
            for address in endpoint.addresses:
                index = seen.get(address.version, 0)
                seen[address.version] = index + 1
                suffix = "" if index == 0 else chr(ord("a") + index)
                for port in ports:
                    targets.append(Target(messenger=messenger,
                                          name=f"{endpoint.name}-v{address.version}{suffix}:{port}",
                                          group=group_name, endpoint=endpoint.name,
                                          family=address.version, port=port, address=str(address),
                                          domain=None, url=endpoint.url, sni=endpoint.sni, trust=trust,
                                          steps=steps, address_space=space,
                                          circumvention=group.circumvention))
            continue
        for family in (4, 6):
            for port in ports:
                # The port is part of the name when the domain is checked on more than
                # one port, in this group or another.
                several = len(domain_ports[endpoint.name]) > 1
                name = f"{endpoint.name}/v{family}" + (f":{port}" if several else "")
                targets.append(Target(messenger=messenger, name=name, group=group_name,
                                      endpoint=endpoint.name, family=family, port=port, address=None,
                                      domain=endpoint.name, url=endpoint.url,
                                      sni=endpoint.sni or endpoint.name, trust=trust, steps=steps,
                                      address_space=space, circumvention=group.circumvention))
    return targets


def plan_messenger(name: str, config: Config) -> MessengerPlan:
    """Merge a built-in catalogue with the config's overrides into a list of targets."""
    overrides = config.messengers[name]
    catalog = load(overrides.catalog or name)
    if overrides.address_space is not None:
        base: list[IPNetwork] = list(overrides.address_space)
        verified = True  # the operator's own list
    elif overrides.address_space_file is not None:
        base = list(prefixes.from_file(overrides.address_space_file))
        verified = prefixes.is_verified(prefixes.file_provenance(overrides.address_space_file))
    else:
        base = catalog.networks()
        verified = catalog.space_verified()
    space = tuple([*base, *overrides.extra_address_space])
    neutral = overrides.neutral_sni or catalog.neutral_sni
    targets: list[Target] = []
    groups = overrides.merged(catalog)
    domain_ports = _domain_ports(groups)
    for group_name, group in groups.items():
        if group.circumvention and not overrides.circumvention:
            continue
        with_neutral = group.model_copy(update={"steps": [
            s.model_copy(update={"options": {"neutral_sni": neutral, **s.options}})
            for s in group.steps]})
        targets += _group_targets(name, group_name, with_neutral, space, domain_ports)
    targets = [replace(t, space_verified=verified, path=groups[t.group].path) for t in targets]
    targets += [_proxy_target(name, proxy, neutral, space) for proxy in overrides.proxies]
    targets += [_whatsapp_proxy_target(name, proxy, space) for proxy in overrides.whatsapp_proxies]
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ConfigError(f"messengers.{name}: two endpoints make the target "
                              f"{target.name!r}: a target name is its own verdict and series; "
                              "give one of them another port or name")
        seen.add(target.name)
    return MessengerPlan(name, tuple(targets), space)


def _proxy_target(messenger: str, proxy: Proxy, neutral_sni: str,
                  space: tuple[IPNetwork, ...]) -> Target:
    """An MTProxy as a target of group `mtproxy`: TCP, then MTProto through the proxy (with
    the neutral-SNI differential for fake TLS). The step options name where the secret is,
    never the secret itself."""
    options = {k: v for k, v in (
        ("secret_file", str(proxy.secret_file) if proxy.secret_file else None),
        ("secret_env", proxy.secret_env), ("sni", proxy.sni), ("dc", proxy.dc),
        ("protocol", proxy.protocol), ("neutral_sni", neutral_sni)) if v is not None}
    steps = (StepSpec(check="tcp"),
             StepSpec(check="mtproxy", differentials=["mtproxy_neutral_sni"], options=options))
    version = proxy.address.version
    return Target(messenger=messenger, name=f"{proxy.name}-v{version}:{proxy.port}", group="mtproxy",
                  endpoint=proxy.name, family=version, port=proxy.port, address=str(proxy.address),
                  domain=None, url=None, sni=proxy.sni, trust="system", steps=steps,
                  address_space=space)


def _whatsapp_proxy_target(messenger: str, proxy: WhatsappProxy,
                           space: tuple[IPNetwork, ...]) -> Target:
    """A WhatsApp proxy (github.com/WhatsApp/proxy) as a circumvention target of group
    `proxy`: TCP, then WhatsApp's Noise handshake through it, the chain verified to the root
    key (TLS-wrapped, unverified, where the proxy wraps: its :443 by default)."""
    tls = proxy.tls if proxy.tls is not None else proxy.port == 443
    steps = (StepSpec(check="tcp"), StepSpec(check="noise", options={"tls": tls}))
    version = proxy.address.version
    return Target(messenger=messenger, name=f"{proxy.name}-v{version}:{proxy.port}", group="proxy",
                  endpoint=proxy.name, family=version, port=proxy.port, address=str(proxy.address),
                  domain=None, url=None, sni=None, trust="whatsapp", steps=steps, address_space=space,
                  circumvention="whatsapp_proxy")


def plan(config: Config) -> list[MessengerPlan]:
    """The plan of every configured messenger."""
    return [plan_messenger(name, config) for name in config.messengers]


def baseline_targets(config: Config) -> list[Target]:
    """Baseline sites as targets of no messenger: a verified TLS handshake where an SNI is
    configured (a transparent proxy cannot fake one), a TCP connect otherwise."""
    return [_baseline_target(site) for site in config.baseline.targets]


# One plan per kind of baseline site, shared by all of them (a model per site is ~1 KB).
_BASELINE_STEPS = {check: (StepSpec(check=check),) for check in ("tls", "tcp")}


def _baseline_target(site: BaselineTarget) -> Target:
    return Target(messenger=None, name=site.name, group="baseline", endpoint=site.name,
                  family=site.address.version, port=site.port, address=str(site.address), domain=None,
                  url=None, sni=site.sni, trust="system",
                  steps=_BASELINE_STEPS["tls" if site.sni else "tcp"])


def step_seconds(step: StepSpec, timeouts: Timeouts, confirm: Confirm | None = None) -> float:
    """The longest a step with its differentials can take: the step itself is repeated to
    confirm a failure (`confirm.attempts` tries started `spacing` apart), the others run
    once."""
    attempts, spacing = (confirm.attempts, confirm.spacing) if confirm else (1, 0.0)
    if not REGISTRY[step.check].spec.confirmed:
        attempts, spacing = 1, 0.0
    once = sum(timeouts.of(c) for c in (*step.before, *step.differentials))
    # attempts overlap (probe.measure.round): the last starts (attempts - 1) spacings after the first
    return once + timeouts.of(step.check) + (attempts - 1) * spacing


def worst_case_seconds(targets: list[Target], timeouts: Timeouts,
                       confirm: Confirm | None = None) -> float:
    """The longest any one target's steps can take: what a round adds to its schedule."""
    plans = {id(t.steps): t.steps for t in targets}  # targets of a group share their steps
    return max((sum(step_seconds(s, timeouts, confirm) for s in steps)
                for steps in plans.values()), default=0.0)


def transfers_seconds(targets: list[Target], timeouts: Timeouts) -> float:
    """Transfers run one at a time (a shared bottleneck must not read as throttling): the
    longest they can take together, the baseline's (an http transfer) included."""
    return timeouts.of("http") + sum(timeouts.of(s.check) for t in targets for s in t.steps
                                     if REGISTRY[s.check].spec.transfer)
