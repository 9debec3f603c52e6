"""One scrubber for every output: the vantage's own addresses never leave the probe.

A probe in a hostile network must not expose its operator. Observations name only the
remote side, but a remote side can echo the client's address back (a `Location` header,
a blockpage that prints "your IP is ...", an MTProto peer that sends it back as bytes), and
an error message can quote a local socket. So every output -- the evidence log,
`/api/status`, the status page, `/metrics`, the service's own log lines and `probe once`
-- passes through `Scrubber`, which replaces the vantage's own addresses by `[vantage]`:

- the configured source addresses (`vantage.source_address`, `source_address6`);
- every address of the host's own interfaces that Linux lists cheaply
  (/proc/net/fib_trie's LOCAL entries, /proc/net/if_inet6), re-read at most once a minute
  (DHCP and SLAAC change them), except loopback: 127.0.0.1 identifies nobody, and tests
  and private deployments put their targets there.

An echo comes in many spellings, and all of these are recognised (for 198.18.0.2):
dotted `198.18.0.2`, zero-padded `198.018.000.002`, with other separators
(`ip-198-18-0-2`, `198_18_0_2`, percent-encoded `198%2E18%2E0%2E2`), reversed
(`2.0.18.198.in-addr.arpa`), decimal `3323068418`, hex `0xc6120002` or `c6120002`, dotted
hex `0xc6.0x12.0x0.0x2`, the hex of any textual form (a reply head stored as hex),
base64 of the four bytes or of the dotted text at any alignment, and the IPv6 forms: any
spelling of an own IPv6 address (compressed, exploded, zero-padded groups, upper case,
`%3A` for the colons) and the v4-mapped ones (`::ffff:198.18.0.2`, `::ffff:c612:2`).
Bytes from the network go through `raw()` before they are encoded for an output (hex,
latin-1): it also replaces the address's packed 4 or 16 bytes.

A NAT's public address is unknown to the probe and cannot be scrubbed; it is not recorded
unless a server echoes it, which is why a NATed vantage should not point checks at servers
it does not trust to stay quiet (docs/reliability.md).

Decimal, dotted and reversed forms are matched whole (198.18.0.5 is not scrubbed inside
198.18.0.50); hex and base64 forms (32 bits or more of the address) inside longer runs too.
"""

from __future__ import annotations

import base64
import builtins
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
    """The canonical textual forms of an address (for `addresses`, and the hex of text)."""
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


def _base64_pieces(data: bytes) -> set[str]:
    """The base64 characters that encode `data` alone, at each of the three alignments it
    can have inside a longer base64 text (standard and URL-safe alphabets)."""
    pieces = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data + bytes(2)).decode()
        first = -(-8 * shift // 6)
        last = (8 * (shift + len(data))) // 6
        piece = encoded[first:last]
        if len(piece) >= 5:
            pieces |= {piece, piece.replace("+", "-").replace("/", "_")}
    return pieces


_SEPARATOR = r"(?:\.|-|_|%2[eE])"
# a whole address: not a part of a longer number or dotted run (198.18.0.5 in 198.18.0.50,
# 1198.18.0.5 or 198.18.0.5.1)
_WHOLE_BEFORE = r"(?:(?<![0-9])|(?<=%[0-9A-Fa-f]{2}))(?<![0-9][.\-_])"  # %20 before: whole
_WHOLE_AFTER = r"(?![0-9]|[.\-_][0-9])"


Rule = tuple[tuple[str, ...], str, bool]  # (any of these literals present, pattern, ignore case)


def _whole(pattern: str) -> str:
    return _WHOLE_BEFORE + pattern + _WHOLE_AFTER


def _prefilter(pattern: str) -> str | None:
    """For a pattern that starts with `_WHOLE_BEFORE`: the same without it. Python's re
    tries a leading look-behind at every position of the text (about five times slower
    than the bare pattern); the bare one matches wherever the whole one does, so a text
    it finds nothing in is skipped without the slow scan."""
    return pattern[len(_WHOLE_BEFORE):] if pattern.startswith(_WHOLE_BEFORE) else None


def _v4_rules(address: ipaddress.IPv4Address) -> list[Rule]:
    """The rules for an IPv4 address: each pattern is tried only when one of its literals is
    in the (lower-cased) text, so the scan of an output that holds none costs a few
    substring searches (a 6 MB exposition is scrubbed once a second)."""
    octets = [str(o) for o in address.packed]
    longest = (max(octets, key=len),)
    forward = _SEPARATOR.join("0*" + o for o in octets)
    backward = r"(?:\.|-)".join("0*" + o for o in reversed(octets))
    hexa = address.packed.hex()
    texts = [t.encode().hex() for t in (str(address), f"::ffff:{address}")]
    pieces = tuple(sorted(_base64_pieces(address.packed) | _base64_pieces(str(address).encode())))
    return [
        (longest, _whole(forward), True),
        (longest, _whole(backward), True),
        ((str(int(address)),), _WHOLE_BEFORE + str(int(address)) + r"(?![0-9])", True),
        (("0x",), r"\.".join(f"0x0*{o:x}" for o in address.packed) + r"(?![0-9a-fA-F])", True),
        ((hexa, *texts), "|".join(["(?:0x)?" + hexa, *texts]), True),
        (pieces, "|".join(re.escape(p) for p in pieces), False),
    ]


def _v6_rules(address: ipaddress.IPv6Address) -> list[Rule]:
    """An IPv6 address's hex and base64 forms (its textual spellings: the token rule)."""
    texts = [address.packed.hex(), *(t.encode().hex() for t in {address.compressed, address.exploded})]
    pieces = tuple(sorted(_base64_pieces(address.packed) | _base64_pieces(address.compressed.encode())))
    return [(tuple(texts), "|".join(texts), True), (pieces, "|".join(re.escape(p) for p in pieces), False)]


_V6_TOKEN = re.compile(r"(?:[0-9A-Fa-f]{0,4}(?::|%3[aA])){2,}(?:[0-9.]{7,15}|[0-9A-Fa-f]{1,4})?")


class Scrubber:
    """Replaces the vantage's own addresses in text, bytes and log records."""

    def __init__(self, configured: Iterable[str] = (), host: bool = True) -> None:
        self.host = host
        self._configured: frozenset[str] = frozenset()
        self._host: frozenset[str] = frozenset()
        self._host_read = -HOST_REFRESH_SECONDS
        self._own: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()
        self._text: re.Pattern[str] | None = None  # set when there is anything to scrub
        # (literals, pattern, prefilter): a pattern runs only when one of its literals is in
        # the text and its prefilter (when it has one) finds something
        self._rules: tuple[tuple[tuple[str, ...], re.Pattern[str], re.Pattern[str] | None], ...] = ()
        self._packed: tuple[bytes, ...] = ()
        self.configure(configured)

    @classmethod
    def for_vantage(cls, vantage: object, host: bool = True) -> Scrubber:
        """From a config's `vantage` section (its source addresses)."""
        return cls(vantage_addresses(vantage), host)

    def configure(self, configured: Iterable[str]) -> None:
        """Apply a (re)loaded config's own addresses."""
        self._configured = frozenset(str(a) for a in configured if a)
        self._build()

    @property
    def addresses(self) -> frozenset[str]:
        self._refresh()
        return frozenset(f for a in self._configured | self._host for f in _forms(a))

    def _refresh(self) -> None:
        if not self.host or time.monotonic() - self._host_read < HOST_REFRESH_SECONDS:
            return
        self._host_read = time.monotonic()
        host = frozenset(host_addresses())
        if host != self._host:
            self._host = host
            self._build()

    def _build(self) -> None:
        own: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for text in self._configured | self._host:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            own.add(address)
        rules: list[Rule] = []
        packed: list[bytes] = []
        v6_literals = {"%3a"}
        for address in own:
            packed.append(address.packed)
            if isinstance(address, ipaddress.IPv4Address):
                rules += _v4_rules(address)
                packed.append(ipaddress.IPv6Address(f"::ffff:{address}").packed)
                v6_literals.add("ffff")
            else:
                rules += _v6_rules(address)
                groups = [g.lstrip("0") for g in address.exploded.split(":")]
                v6_literals.add(max(groups, key=len) or "::")
        if own:  # any spelling of an own IPv6 address, or a v4-mapped one: parsed in _replace
            rules.append((tuple(sorted(v6_literals)), _V6_TOKEN.pattern, True))
        self._own = frozenset(own)
        def compiled(pattern: str | None, fold: bool) -> re.Pattern[str] | None:
            return None if pattern is None else re.compile(pattern, re.IGNORECASE if fold else 0)

        self._rules = tuple((literals, re.compile(pattern, re.IGNORECASE if fold else 0),
                             compiled(_prefilter(pattern), fold))
                            for literals, pattern, fold in rules)
        self._text = self._rules[0][1] if self._rules else None
        self._packed = tuple(sorted(set(packed), key=len, reverse=True))

    def _replace(self, match: re.Match[str]) -> str:
        token = match.group(0)
        if ":" not in token and "%3" not in token.lower():
            return SCRUBBED
        candidate = token.replace("%3A", ":").replace("%3a", ":")
        # an IPv6-looking run: scrub it only if it spells an own address; its head may be
        # the end of something else ("%20::ffff:..." gives "20::ffff:...")
        first_colon = candidate.find(":")
        for cut in range(max(0, first_colon) + 1):
            for text in (candidate[cut:], candidate[cut:].rstrip(":.")):
                try:
                    address = ipaddress.IPv6Address(text)
                except ValueError:
                    continue
                mapped = address.ipv4_mapped
                if address in self._own or (mapped is not None and mapped in self._own):
                    return (candidate[:cut] + SCRUBBED + candidate[cut + len(text):]
                            if cut or len(text) != len(candidate) else SCRUBBED)
        if match.start() == match.end():
            return token
        # not an own address; its tail may still hold an own IPv4 (::ffff:198.18.0.2)
        tail = token.rsplit(":", 1)[-1]
        inner = self._scan(tail) if tail != token else tail
        return token[: len(token) - len(tail)] + inner

    def _scan(self, text: str) -> str:
        lowered = text.lower()
        for literals, pattern, prefilter in self._rules:
            if any(literal in lowered or literal in text for literal in literals) and (
                    prefilter is None or prefilter.search(text)):
                replaced = pattern.sub(self._replace, text)
                if replaced != text:
                    text, lowered = replaced, replaced.lower()
        return text

    def text(self, text: str) -> str:
        self._refresh()
        if self._text is None:
            return text
        return self._scan(text)

    def bytes(self, data: bytes) -> bytes:
        """Text already encoded (UTF-8 or ASCII): the textual forms."""
        self._refresh()
        if self._text is None:
            return data
        return self.text(data.decode("latin-1")).encode("latin-1")

    def raw(self, data: builtins.bytes) -> builtins.bytes:
        """Bytes from the network, before they are encoded for any output: the packed
        address (4 or 16 bytes) as well as every textual form."""
        self._refresh()
        if self._text is None:
            return data
        for packed in self._packed:
            data = data.replace(packed, SCRUBBED.encode())
        return self.bytes(data)


# The process's scrubber for bytes from the network (checks call `raw` before encoding);
# configured by whoever owns the running config (the service, `probe once`).
shared = Scrubber()


def raw(data: bytes) -> bytes:
    """`shared.raw(data)`: a network peer's bytes, own addresses replaced."""
    return shared.raw(bytes(data))


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
