"""Address space by AS number, for services that publish no address ranges.

WhatsApp (Facebook/Meta, AS32934) publishes no list of its addresses, so a DNS answer is
judged against the prefixes its AS announces: probe/data/prefixes/AS<N>.txt, one CIDR per
line, with a header naming the source and the date. A catalogue says
`address_space_asn: [32934]` to use that file. Announcements change, so the file has a
refresh path that needs no code: `probe prefixes AS32934 --from ripestat.json` rewrites it
from RIPEstat's announced-prefixes data call (fetched by the operator, never by the probe).

Every file records where it came from: `# source:`, `# date:` and `# verified:`. A list
rebuilt from a RIPEstat answer the operator fetched is verified; one copied from a
third-party aggregation, or written by hand, is not, and until it is, an answer outside it
is not enough to call a DNS answer forged (probe/judge/classify.py).
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from probe.inputs.schema import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RIPESTAT_URL = "https://stat.ripe.net/data/announced-prefixes/data.json?resource=AS{asn}"


def parse_asn(text: str) -> int:
    """`AS32934` or `32934` -> 32934; anything else is a ConfigError."""
    match = re.fullmatch(r"(?i)(?:AS)?(\d{1,10})", text.strip())
    if match is None or int(match.group(1)) > 4294967295:
        raise ConfigError(f"{text!r} is not an AS number (like AS32934)")
    return int(match.group(1))


def bundled_path(asn: int) -> Path:
    """Where the shipped prefix file of an AS lives (it may not exist)."""
    return Path(str(resources.files("probe") / "data" / "prefixes" / f"AS{asn}.txt"))


def parse(text: str, source: str) -> tuple[Network, ...]:
    """The networks of a prefix file; a bad line is a ConfigError naming file and line."""
    networks: list[Network] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            networks.append(ipaddress.ip_network(line))
        except ValueError:
            raise ConfigError(f"{source}:{number}: {line!r} is not a network in CIDR "
                              "notation") from None
    return tuple(networks)


def provenance(text: str) -> dict[str, str]:
    """The header fields of a prefix file (`# source: ...`, `# date: ...`, `# verified: ...`)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"#\s*(source|date|verified):\s*(.*)", line.strip())
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2).strip()
    return fields


def is_verified(fields: dict[str, str]) -> bool:
    """`# verified: yes ...` (or a date): checked against the AS's announcements by whoever
    made the file. No field, or `no ...`, is unverified."""
    value = fields.get("verified", "").lower()
    return bool(value) and not value.startswith("no")


@cache
def bundled_provenance(asn: int) -> dict[str, str]:
    """Source, date and verification of the shipped prefix file of an AS ({} if none)."""
    try:
        return provenance(bundled_path(asn).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def file_provenance(path: Path) -> dict[str, str]:
    """Source, date and verification of an operator's prefix file."""
    try:
        return provenance(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


@cache
def load(asn: int) -> tuple[Network, ...]:
    """The shipped prefixes of an AS (cached: package data does not change at run time)."""
    path = bundled_path(asn)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no prefix file for AS{asn} (probe/data/prefixes/AS{asn}.txt); "
                          f"make one with `probe prefixes AS{asn} --from ripestat.json`") from None
    return parse(text, str(path))


def bundled_asns() -> list[int]:
    """The ASes with a shipped prefix list."""
    folder = resources.files("probe") / "data" / "prefixes"
    return sorted(int(p.name[2:-4]) for p in folder.iterdir()
                  if re.fullmatch(r"AS\d+\.txt", p.name))


def describe(asn: int) -> str:
    """One line for `probe prefixes`: the list's size and where it came from."""
    fields = bundled_provenance(asn)
    if not fields and not bundled_path(asn).exists():
        raise ConfigError(f"no prefix file for AS{asn} (probe/data/prefixes/AS{asn}.txt)")
    state = ("verified" if is_verified(fields)
             else "NOT verified (outside-the-space answers alone are inconclusive)")
    return (f"AS{asn}: {len(load(asn))} prefixes, {state}; source: {fields.get('source', 'unknown')}; "
            f"date: {fields.get('date', 'unknown')}; verified: {fields.get('verified', 'no')}")


def from_file(path: Path) -> tuple[Network, ...]:
    """A prefix file of the operator's (`probe prefixes ... --output FILE`), read again only
    when it changes."""
    try:
        return _file(path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


@cache
def _file(path: Path, mtime_ns: int) -> tuple[Network, ...]:
    return parse(path.read_text(encoding="utf-8"), str(path))


def from_ripestat(data: Any, asn: int) -> list[Network]:
    """The prefixes in a RIPEstat announced-prefixes answer for `asn`, collapsed and sorted
    (IPv4 first). Refuses an answer for another AS, a failed call, or one without prefixes:
    rewriting the file from it would silently empty the service's address space."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise ConfigError("not a RIPEstat answer (no 'data' object)")
    if data.get("status", "ok") != "ok":
        raise ConfigError(f"RIPEstat call failed (status {data.get('status')!r})")
    body = data["data"]
    resource = str(body.get("resource", "")).upper().removeprefix("AS")
    if resource != str(asn):
        raise ConfigError(f"the RIPEstat answer is for resource {body.get('resource')!r}, "
                          f"not AS{asn}")
    entries = body.get("prefixes")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"the RIPEstat answer lists no prefixes for AS{asn}")
    networks: list[Network] = []
    for entry in entries:
        prefix = entry.get("prefix") if isinstance(entry, dict) else None
        try:
            networks.append(ipaddress.ip_network(str(prefix)))
        except ValueError:
            raise ConfigError(f"the RIPEstat answer has a bad prefix {prefix!r}") from None
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return [*v4, *v6]


def render(asn: int, networks: list[Network], source: str, date: str,
           verified: str = "no") -> str:
    """A prefix file: the header (source, date, verification, how to refresh), then one CIDR
    per line."""
    header = [
        f"# AS{asn}: announced prefixes ({len(networks)}).",
        f"# source: {source}",
        f"# date: {date}",
        f"# verified: {verified}",
        "# These go stale: refresh from RIPEstat's announced-prefixes data call, e.g.",
        f"#   curl -o ripestat.json '{RIPESTAT_URL.format(asn=asn)}'",
        f"#   probe prefixes AS{asn} --from ripestat.json",
    ]
    return "\n".join([*header, *(str(n) for n in networks)]) + "\n"


def refresh(asn: int, ripestat_file: Path, output: Path | None = None) -> tuple[Path, int]:
    """Rewrite an AS's prefix file from a saved RIPEstat answer; (file written, count)."""
    try:
        data = json.loads(ripestat_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{ripestat_file}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{ripestat_file}: not JSON: {exc}") from None
    try:
        networks = from_ripestat(data, asn)
    except ConfigError as exc:
        raise ConfigError(f"{ripestat_file}: {exc}") from None
    body = data["data"]
    when = str(data.get("time") or body.get("query_endtime") or
               datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    target = output or bundled_path(asn)
    target.write_text(render(asn, networks, f"RIPEstat announced-prefixes "
                                            f"({RIPESTAT_URL.format(asn=asn)}), saved as "
                                            f"{ripestat_file.name}", when,
                             f"yes (RIPEstat's own answer for AS{asn}, {when})"),
                      encoding="utf-8")
    return target, len(networks)
