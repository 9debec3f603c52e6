"""Does the apps' way around a block work? One answer per vantage and messenger.

A circumvention target (a catalogue group with `circumvention:`, or a configured WhatsApp
proxy) measures a detour the apps take when the service's own names or addresses are
blocked: Signal's domain fronting, a WhatsApp proxy. Its verdict never enters the
messenger's own status (a working detour does not make a block `ok`, a blocked detour does
not make a working service `blocked`); it answers a second question:

  yes       some detour reached the service (a verdict of `ok`)
  no        detours were measured and none reached it
  untested  no detour configured, or the vantage was offline for all of them
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

ANSWERS: Final = ("yes", "no", "untested")


def answer(verdicts: Iterable[tuple[str, str]]) -> str:
    """The answer from (circumvention path, verdict) pairs of one messenger on one vantage;
    pairs without a path (the service's own targets) are ignored."""
    measured = [verdict for path, verdict in verdicts if path]
    if any(v == "ok" for v in measured):
        return "yes"
    if any(v != "vantage_offline" for v in measured):
        return "no"
    return "untested"


def by_messenger(verdicts: Iterable[tuple[str, str, str]], messengers: Iterable[str] = ()) -> dict[str, str]:
    """(messenger, path, verdict) triples -> each messenger's answer; `messengers` listed
    without any circumvention target are `untested`."""
    pairs: dict[str, list[tuple[str, str]]] = {m: [] for m in messengers}
    for messenger, path, verdict in verdicts:
        pairs.setdefault(messenger, []).append((path, verdict))
    return {m: answer(p) for m, p in pairs.items()}
