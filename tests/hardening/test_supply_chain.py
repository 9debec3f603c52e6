"""requirements.lock pins every runtime dependency, with hashes, at the versions installed."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, tuple[str, int]]:
    text = (ROOT / "requirements.lock").read_text()
    entries: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", text):
        match = re.match(r"([a-z0-9._-]+)==([^\s\\]+)", block)
        if match:
            entries[match[1]] = (match[2], block.count("--hash=sha256:"))
    return entries


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entries = locked()
    for requirement in project["dependencies"]:
        name = norm(re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0])
        assert name in entries, f"{name} is not in requirements.lock (see docs/reliability.md)"
    for name, (version, hashes) in entries.items():
        assert hashes >= 1, f"{name}=={version} has no hash"


def test_lock_matches_what_is_installed() -> None:
    for name, (version, _) in locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        assert installed == version, f"{name}: installed {installed}, locked {version}"
