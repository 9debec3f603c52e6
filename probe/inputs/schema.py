"""Shared schema types for the config and the catalogues: strict models, IP types, and the
one-line error both raise. A module of its own so that the catalogue and the config can
each import it without importing each other.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, PlainValidator


def _ip_address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value if isinstance(value, int) else str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def _ip_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a network in CIDR notation (like 192.0.2.0/24)") from None


IPAddress = Annotated[
    ipaddress.IPv4Address | ipaddress.IPv6Address, PlainValidator(_ip_address), PlainSerializer(str)
]
IPNetwork = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network, PlainValidator(_ip_network), PlainSerializer(str)
]


MAX_MESSAGE = 400  # characters: a hostile config must not produce a megabyte "line"


def _valid_ports(ports: list[int]) -> list[int]:
    for port in ports:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not between 1 and 65535")
    return ports


#: A list of TCP ports, each 1-65535 (catalogue groups and the config's overrides).
Ports = Annotated[list[int], AfterValidator(_valid_ports)]


class ConfigError(Exception):
    """A config that cannot be used; str() is one line naming file, line and key (at most
    MAX_MESSAGE characters, whitespace runs and newlines folded)."""

    def __init__(self, message: object = "") -> None:
        one = " ".join(str(message).split())
        super().__init__(one if len(one) <= MAX_MESSAGE else one[: MAX_MESSAGE - 3] + "...")


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
