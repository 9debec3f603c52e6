"""Running one registered check by hand, as the round would, for tests of a single check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from probe.inputs.catalog import StepSpec, Target
from probe.measure.checks import REGISTRY
from probe.measure.checks.base import AnswerPolicy, Blockpage, Env, ResolverSpec, Step, TrustStore
from probe.measure.wire.net import Source
from probe.model.observation import Observation, Role


def target(address: str | None, port: int, *, name: str = "t/v4", domain: str | None = None,
           family: int = 4, url: str | None = None, sni: str | None = None,
           messenger: str | None = "telegram", trust: str = "system",
           in_space: bool = True) -> Target:
    space: tuple[Any, ...] = ()
    if in_space:
        import ipaddress

        space = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    return Target(messenger=messenger, name=name, group="test", endpoint=domain or name, family=family,
                  port=port, address=address, domain=domain, url=url, sni=sni or domain, trust=trust,
                  steps=(StepSpec(check="tcp"),), address_space=space)


def env(timeout: float, *, ca_file: Path | None = None, trust: Mapping[str, Path] | None = None,
        resolvers: tuple[ResolverSpec, ...] = (), policy: AnswerPolicy | None = None,
        race_window: float = 0.0, blockpages: tuple[Blockpage, ...] = (),
        source: Source | None = None, **http: Any) -> Env:
    base = Env(source or Source(), TrustStore(ca_file, trust or {}), timeout, resolvers,
               policy or AnswerPolicy({}), race_window, blockpages)
    return replace(base, **http) if http else base


async def run(check: str, where: Target, environment: Env, *, role: Role = "primary",
              options: Mapping[str, Any] | None = None,
              explains: Observation | None = None) -> list[Observation]:
    step = Step(where, check, role, where.address, dict(options or {}), explains)
    return await REGISTRY[check].run(step, environment)
