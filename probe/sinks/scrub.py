"""One scrubber for every output: the vantage's own addresses never leave the probe.

A probe in a hostile network must not expose its operator. Observations name only the
remote side, but a remote side can echo the client's address back (a `Location` header,
a blockpage that prints "your IP is ..."), and an error message can quote a local socket.
So every output -- the evidence log, `/api/status`, the status page, `/metrics`, the
service's own log lines and `probe once --format json` -- passes through `Scrubber`,
which replaces the vantage's own addresses by `[vantage]`:

- the configured source addresses (`vantage.source_address`, `source_address6`);
- every address of the host's own interfaces that Linux lists cheaply
  (/proc/net/fib_trie's LOCAL entries, /proc/net/if_inet6), re-read at most once a minute
  (DHCP and SLAAC change them), except loopback: 127.0.0.1 identifies nobody, and tests
  and private deployments put their targets there.

A NAT's public address is unknown to the probe and cannot be scrubbed; it is not recorded
unless a server echoes it, which is why a NATed vantage should not point checks at servers
it does not trust to stay quiet (docs/reliability.md).

Matching is textual and whole-address only (198.18.0.5 is not scrubbed inside
198.18.0.50), in the compressed and exploded IPv6 forms; a cheap substring test comes
first, so outputs without any own address (nearly all) cost one scan.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path

SCRUBBED = "[vantage]"
HOST_REFRESH_SECONDS = 60.0
FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def host_addresses(fib_trie: Path = FIB_TRIE, if_inet6: Path = IF_INET6) -> set[str]:
    """The host's own non-loopback addresses, from /proc (empty where /proc says nothing)."""
    found: set[str] = set()
    try:
        previous = ""
        for line in fib_trie.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("|--"):
                previous = stripped[3:].strip()
            elif stripped.startswith("/32 host LOCAL") and previous:
                found.add(previous)
    except OSError:
        pass
    try:
        for line in if_inet6.read_text().splitlines():
            hexa = line.split()[0] if line.split() else ""
            if len(hexa) == 32:
                found.add(str(ipaddress.IPv6Address(int(hexa, 16))))
    except (OSError, ValueError):
        pass
    own = set()
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified):
            own.add(str(address))
    return own


def _forms(address: str) -> set[str]:
    """The textual forms an address can take in an output."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return {address} if address else set()
    forms = {str(parsed)}
    if isinstance(parsed, ipaddress.IPv6Address):
        forms |= {parsed.exploded, parsed.compressed}
        if parsed.ipv4_mapped is not None:
            forms.add(str(parsed.ipv4_mapped))
    return forms


def _pattern(needles: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for needle in sorted(set(needles), key=len, reverse=True):
        if ":" in needle:
            parts.append(r"(?<![0-9A-Fa-f:])" + re.escape(needle) + r"(?![0-9A-Fa-f]|:[0-9A-Fa-f])")
        else:
            parts.append(r"(?<![0-9.])" + re.escape(needle) + r"(?![0-9]|\.[0-9])")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class Scrubber:
    """Replaces the vantage's own addresses in text, bytes and log records."""

    def __init__(self, configured: Iterable[str] = (), host: bool = True) -> None:
        self.host = host
        self._configured: frozenset[str] = frozenset()
        self._host: frozenset[str] = frozenset()
        self._host_read = -HOST_REFRESH_SECONDS
        self._needles: tuple[str, ...] = ()
        self._text: re.Pattern[str] | None = None
        self._bytes: re.Pattern[bytes] | None = None
        self.configure(configured)

    @classmethod
    def for_vantage(cls, vantage: object, host: bool = True) -> Scrubber:
        """From a config's `vantage` section (its source addresses)."""
        return cls(vantage_addresses(vantage), host)

    def configure(self, configured: Iterable[str]) -> None:
        """Apply a (re)loaded config's own addresses."""
        self._configured = frozenset(f for a in configured for f in _forms(str(a)))
        self._build()

    @property
    def addresses(self) -> frozenset[str]:
        self._refresh()
        return self._configured | self._host

    def _refresh(self) -> None:
        if not self.host or time.monotonic() - self._host_read < HOST_REFRESH_SECONDS:
            return
        self._host_read = time.monotonic()
        host = frozenset(f for a in host_addresses() for f in _forms(a))
        if host != self._host:
            self._host = host
            self._build()

    def _build(self) -> None:
        needles = self._configured | self._host
        self._needles = tuple(sorted(needles))
        self._text = _pattern(needles)
        self._bytes = re.compile(self._text.pattern.encode(), re.IGNORECASE) if self._text else None

    def text(self, text: str) -> str:
        self._refresh()
        if self._text is None:
            return text
        lowered = text.lower() if any(":" in n for n in self._needles) else text
        if not any(n.lower() in lowered for n in self._needles):
            return text
        return self._text.sub(SCRUBBED, text)

    def bytes(self, data: bytes) -> bytes:
        self._refresh()
        if self._bytes is None:
            return data
        lowered = data.lower() if any(":" in n for n in self._needles) else data
        if not any(n.lower().encode() in lowered for n in self._needles):
            return data
        return self._bytes.sub(SCRUBBED.encode(), data)


def vantage_addresses(vantage: object) -> list[str]:
    """A config vantage's configured source addresses, as text."""
    return [str(a) for a in (getattr(vantage, "source_address", None),
                             getattr(vantage, "source_address6", None)) if a is not None]


class ScrubFilter(logging.Filter):
    """A log filter: the message and any traceback, scrubbed (formatted once, here)."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what there is, never lose the record
            message = str(record.msg)
        record.msg, record.args = self.scrubber.text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.scrubber.text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install_log_filter(scrubber: Scrubber, logger: logging.Logger | None = None) -> ScrubFilter:
    """Put the scrubber on every handler of `logger` (the root logger by default)."""
    flt = ScrubFilter(scrubber)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(flt)
    return flt
