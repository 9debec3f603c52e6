"""`probe export-config DIR`: the deployment files that ship inside the package, written out.

Why: an operator who installed the wheel (pip, the image) has no git checkout, yet needs the
Prometheus rules, the Alertmanager config, the Grafana boards and an example probe config
that match the probe version they run. The package carries them (probe/shipped/ links to
configs/ and grafana/ in the source tree, so there is one copy of each) and this writes
them out in the source tree's layout, so compose.yaml's volume paths work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

# probe/shipped/configs and probe/shipped/grafana link to the source tree's configs/ and
# grafana/; they are written out under the same names (the repository's layout).
LAYOUT = ("configs", "grafana")
SUFFIXES = (".yml", ".yaml", ".json")  # data only: the generator scripts stay behind
SKIP = ("catalogs",)  # the catalogues are the package's own (probe/catalogs), not deployment files


class ExportError(Exception):
    """A deployment that cannot be written; str() is the one line the CLI prints."""


def _walk(node: Traversable, relative: str) -> Iterator[tuple[str, Traversable]]:
    if node.is_dir():
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if not child.name.startswith(("_", ".")) and child.name not in SKIP:
                yield from _walk(child, f"{relative}/{child.name}")
    elif node.is_file() and node.name.endswith(SUFFIXES):
        yield relative, node


def shipped_files() -> list[tuple[str, Traversable]]:
    """Every shipped file as (path in the deployment, resource), in a stable order."""
    root = resources.files("probe") / "shipped"
    files: list[tuple[str, Traversable]] = []
    for name in LAYOUT:
        files.extend(_walk(root / name, name))
    if not files:
        raise ExportError("this installation of probe carries no deployment files (a broken build?)")
    return files


def write_deployment(directory: Path, force: bool = False) -> list[Path]:
    """Write every shipped file under `directory`; refuse to overwrite unless `force`."""
    files = shipped_files()
    targets = [(directory / relative, resource) for relative, resource in files]
    existing = [str(path) for path, _ in targets if path.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} other file(s)" if len(existing) > 1 else ""
        raise ExportError(f"{existing[0]}{more} already exist; use --force to overwrite")
    written = []
    for path, resource in targets:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(resource.read_bytes())
        except OSError as exc:
            raise ExportError(f"{path}: cannot write: {exc.strerror or exc}") from None
        written.append(path)
    return written
