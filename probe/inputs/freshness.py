"""How old the probe's knowledge is: catalogues past their review date, trust anchors near
expiry, prefix lists nobody verified.

All of it is a warning, never an error: a catalogue past `review_by` still describes the
service better than none, and an anchor that expires in 60 days still verifies today.
`probe check-config` prints these lines, the status page shows them, and the metrics carry
each anchor's expiry so that the fleet's ticket alert fires 90 days ahead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from cryptography import x509

from probe.inputs import catalog
from probe.inputs.config import Config
from probe.inputs.schema import ConfigError

#: A ticket, not a page: time enough to ship the next anchor before the old one expires.
ANCHOR_WARNING_DAYS = 90


@dataclass(frozen=True, slots=True)
class Anchor:
    """One certificate of a trust anchor file: which file, whose, valid from when to when."""

    name: str  # the anchor's name (`signal`): what catalogues' `trust:` says
    path: Path
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str  # hex, of the DER certificate

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def bundled_anchor_files() -> dict[str, Path]:
    """The shipped anchors: probe/data/trust/NAME.pem."""
    folder = resources.files("probe") / "data" / "trust"
    return {p.name.removesuffix(".pem"): Path(str(p)) for p in folder.iterdir()
            if p.name.endswith(".pem")}


@cache
def _read(path: Path, mtime_ns: int) -> tuple[tuple[str, dt.datetime, dt.datetime, str], ...]:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return ()  # a bare key (WhatsApp's Noise root) has no validity to watch
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM certificate file: {exc}") from None
    from cryptography.hazmat.primitives.serialization import Encoding
    return tuple((c.subject.rfc4514_string(), c.not_valid_before_utc, c.not_valid_after_utc,
                  hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest()) for c in certificates)


def anchors(files: dict[str, Path]) -> list[Anchor]:
    """Every certificate of the given anchor files, with its validity (files that hold a
    bare public key instead of certificates have none)."""
    out: list[Anchor] = []
    for name, path in sorted(files.items()):
        try:
            stat = path.stat()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        out += [Anchor(name, path, *entry) for entry in _read(path, stat.st_mtime_ns)]
    return out


def config_anchor_files(config: Config) -> dict[str, Path]:
    """The anchors a config uses: the shipped ones, with the config's `tls.trust` instead."""
    return {**bundled_anchor_files(), **config.tls.trust}


def anchor_warnings(found: list[Anchor], now: dt.datetime) -> list[str]:
    """An anchor certificate that expires within ANCHOR_WARNING_DAYS, or has expired. A file
    with a newer certificate of the same subject still valid past the window is fine: the
    rotation is already shipped."""
    lines = []
    for anchor in found:
        left = anchor.days_left(now)
        if left > ANCHOR_WARNING_DAYS:
            continue
        successor = any(o.name == anchor.name and o.sha256 != anchor.sha256
                        and o.days_left(now) > ANCHOR_WARNING_DAYS for o in found)
        if successor:
            continue
        when = anchor.not_after.date().isoformat()
        state = "expired" if left <= 0 else f"expires in {int(left)} days"
        lines.append(f"trust anchor {anchor.name!r} ({anchor.path}): {anchor.subject} {state} "
                     f"({when}); ship its successor")
    return lines


def catalogue_warnings(config: Config, today: dt.date) -> list[str]:
    """Configured messengers whose catalogue is past its `review_by` (or has none)."""
    lines = []
    for name, overrides in config.messengers.items():
        ref = overrides.catalog or name
        cat = catalog.load(ref)
        if cat.review_by is None:
            lines.append(f"catalogue {ref!r} has no review_by date: nobody knows how old its "
                         "endpoints are")
        elif cat.overdue(today):
            lines.append(f"catalogue {ref!r} is past its review date ({cat.review_by}; "
                         f"reviewed {cat.reviewed or 'never'}): diff its sources "
                         "(probe catalog --sources, docs/messengers.md)")
    return lines


def warnings(config: Config, now: dt.datetime | None = None) -> list[str]:
    """Everything stale about a config's knowledge, as one line each."""
    moment = now or dt.datetime.now(dt.UTC)
    return [*catalogue_warnings(config, moment.date()),
            *anchor_warnings(anchors(config_anchor_files(config)), moment)]
