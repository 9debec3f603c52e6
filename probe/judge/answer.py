"""Can a user here use the messenger? One answer per vantage and messenger, from the
round's per-target verdicts grouped by the path each target serves (the catalogue group's
`path`: chat, media, registration, web, calls).

Each path first gets a state from its targets' verdicts (targets of an address family the
vantage cannot use, `vantage_offline`, are left out: they are no evidence either way):

  ok              no target blocked, and at least one `ok`
  blocked         every judged target has a blocking verdict
  partly_blocked  some targets blocked, the others `ok` or `inconclusive`
  unknown         nothing judged (offline), or `inconclusive` only

and the messenger's answer follows from its paths; the chat path decides whether the app
works at all:

  blocked         the chat path is blocked, or every path is
  unknown         the chat path is unknown (or missing): nothing proves the app works or
                  fails, whatever its other paths say (those are still named)
  partly_blocked  chat works at least in part, and some path is blocked or partly blocked
                  (named: "partly blocked — media, registration")
  usable          chat works and no path has a blocked target (paths without evidence are
                  named: "usable (not judged: web)")

Never "blocked" or "usable" without evidence: a path is `blocked` only when every target
that could be judged is blocked, and `usable` needs an `ok` on the chat path. Circumvention
targets (domain fronting, a WhatsApp proxy) are no part of the answer
(probe.judge.circumvention answers for them). On a control vantage the same answer reads
"failing" rather than "blocked": failures outside the censor are the service's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from probe.inputs.catalog import PATHS
from probe.model.verdicts import BLOCKING_VERDICTS, STATUS_COLOURS

ANSWERS: Final = ("usable", "partly_blocked", "blocked", "unknown")
PATH_STATES: Final = ("ok", "partly_blocked", "blocked", "unknown")
# The number a board's state timeline draws (grey: no data): worse is higher.
ANSWER_CODES: Final[dict[str, int]] = {"unknown": 1, "usable": 2, "partly_blocked": 3, "blocked": 4}
# Okabe-Ito, as the statuses: usable is the status `ok` green, blocked the `blocked`
# vermillion, partly blocked yellow, unknown the grey of "nothing can be said".
ANSWER_COLOURS: Final[dict[str, str]] = {
    "usable": STATUS_COLOURS["ok"],
    "partly_blocked": "#F0E442",
    "blocked": STATUS_COLOURS["blocked"],
    "unknown": STATUS_COLOURS["unknown"],
}
PATH_COLOURS: Final[dict[str, str]] = {
    "ok": ANSWER_COLOURS["usable"], "partly_blocked": ANSWER_COLOURS["partly_blocked"],
    "blocked": ANSWER_COLOURS["blocked"], "unknown": ANSWER_COLOURS["unknown"],
}
DISPLAY_NAMES: Final[dict[str, str]] = {"whatsapp": "WhatsApp", "telegram": "Telegram",
                                        "signal": "Signal"}


def display_name(messenger: str) -> str:
    return DISPLAY_NAMES.get(messenger, messenger)


@dataclass(frozen=True, slots=True)
class PathEvidence:
    """One path's targets by verdict kind, and the state they give."""

    targets: int = 0
    ok: int = 0
    blocked: int = 0
    inconclusive: int = 0
    offline: int = 0

    @property
    def state(self) -> str:
        judged = self.targets - self.offline
        if judged == 0:
            return "unknown"
        if self.blocked == judged:
            return "blocked"
        if self.blocked:
            return "partly_blocked"
        return "ok" if self.ok else "unknown"

    def add(self, verdict: str) -> PathEvidence:
        return PathEvidence(self.targets + 1, self.ok + (verdict == "ok"),
                            self.blocked + (verdict in BLOCKING_VERDICTS),
                            self.inconclusive + (verdict == "inconclusive"),
                            self.offline + (verdict == "vantage_offline"))

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "targets": self.targets, "ok": self.ok,
                "blocked": self.blocked, "inconclusive": self.inconclusive,
                "vantage_offline": self.offline}


def _path_order(path: str) -> tuple[int, str]:
    return (PATHS.index(path), path) if path in PATHS else (len(PATHS), path)


@dataclass(frozen=True, slots=True)
class Answer:
    """One messenger's answer on one vantage, with its evidence per path."""

    messenger: str
    paths: dict[str, PathEvidence] = field(default_factory=dict)
    online: bool = True

    @property
    def states(self) -> dict[str, str]:
        return {path: evidence.state for path, evidence in self.paths.items()}

    @property
    def answer(self) -> str:
        states = self.states
        if not states or all(s == "unknown" for s in states.values()):
            return "unknown"
        chat = states.get("chat", "unknown")
        if chat == "blocked" or all(s == "blocked" for s in states.values()):
            return "blocked"
        if chat == "unknown":
            return "unknown"
        if any(s in ("blocked", "partly_blocked") for s in states.values()):
            return "partly_blocked"
        return "usable"

    @property
    def blocked_paths(self) -> list[str]:
        """The paths with a blocked target, in the catalogue's path order."""
        return [p for p, s in self.states.items() if s in ("blocked", "partly_blocked")]

    @property
    def unjudged_paths(self) -> list[str]:
        return [p for p, s in self.states.items() if s == "unknown"]

    def sentence(self, role: str = "subject") -> str:
        """One line for people: "WhatsApp: partly blocked — media, registration"."""
        blocked_word = "failing" if role == "control" else "blocked"
        name = display_name(self.messenger)
        answer = self.answer
        states = self.states

        def named(paths: list[str]) -> str:
            return ", ".join(p + (" (some targets)" if states[p] == "partly_blocked" else "")
                             for p in paths)

        if answer == "usable":
            unjudged = self.unjudged_paths
            return f"{name}: usable" + (f" (not judged: {', '.join(unjudged)})" if unjudged else "")
        if answer == "blocked":
            return f"{name}: {blocked_word} — {named(self.blocked_paths)}"
        if answer == "partly_blocked":
            return f"{name}: partly {blocked_word} — {named(self.blocked_paths)}"
        if not self.online or (states and all(e.offline == e.targets for e in self.paths.values())):
            return f"{name}: unknown — this vantage is offline"
        if not states:
            return f"{name}: unknown — no targets"
        why = "chat not judged" if "chat" in states else "no chat targets"
        blocked = self.blocked_paths
        return f"{name}: unknown — {why}" + (f"; {blocked_word}: {named(blocked)}" if blocked else "")

    def to_json(self, role: str = "subject") -> dict[str, Any]:
        return {"answer": self.answer, "blocked_paths": self.blocked_paths,
                "unjudged_paths": self.unjudged_paths, "sentence": self.sentence(role),
                "paths": {p: e.to_json() for p, e in self.paths.items()}}


def by_messenger(verdicts: Iterable[tuple[str, str, str, str]], messengers: Iterable[str] = (),
                 online: bool = True) -> dict[str, Answer]:
    """(messenger, path, verdict, circumvention) of each target -> each messenger's answer;
    circumvention targets are left out, and `messengers` without targets are `unknown`.
    `online` False (the vantage proved no connectivity) makes every answer `unknown`."""
    paths: dict[str, dict[str, PathEvidence]] = {m: {} for m in messengers}
    for messenger, path, verdict, circumvention in verdicts:
        of = paths.setdefault(messenger, {})
        if circumvention:
            continue
        of[path] = of.get(path, PathEvidence()).add(verdict if online else "vantage_offline")
    return {m: Answer(m, dict(sorted(p.items(), key=lambda kv: _path_order(kv[0]))), online)
            for m, p in paths.items()}


def answers_json(verdicts: Iterable[tuple[str, str, str, str]], role: str = "subject",
                 online: bool = True) -> dict[str, dict[str, Any]]:
    """The round's `answers` key (docs/engine-contract.md)."""
    return {m: a.to_json(role) for m, a in by_messenger(verdicts, online=online).items()}


def from_json(data: Mapping[str, Any]) -> tuple[str, list[str], str]:
    """(answer, blocked paths, sentence) from one messenger's `answers` entry, checked: an
    entry of an unknown shape reads as `unknown`."""
    answer = data.get("answer")
    if answer not in ANSWERS:
        return "unknown", [], ""
    blocked = [str(p) for p in data.get("blocked_paths") or [] if isinstance(p, str)]
    return str(answer), blocked, str(data.get("sentence") or "")
