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


def test_the_build_backend_is_pinned_with_a_hash_and_used() -> None:
    """The Dockerfile's build step installs setuptools from requirements-build.lock (hash
    required) and builds without isolation: before, pip fetched `setuptools>=77` unpinned."""
    lock = (ROOT / "requirements-build.lock").read_text()
    match = re.search(r"^setuptools==(\d+)\.(\d+)\.(\d+) \\\n\s+--hash=sha256:[0-9a-f]{64}$", lock, re.M)
    assert match, lock
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    minimum = int(re.search(r"setuptools>=(\d+)", " ".join(requires))[1])  # type: ignore[index]
    assert int(match[1]) >= minimum
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes \\\n      -r /src/requirements-build.lock" in dockerfile
    install = dockerfile[dockerfile.index("requirements-build.lock"):]
    assert "--no-build-isolation /src" in install.split("compileall")[0]
