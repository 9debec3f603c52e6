"""Built-in catalogues are read as configs are: a typo in one is one line naming its file,
line and key, and exit 2 (not a pydantic traceback); a config reads each catalogue once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from probe.cli import app
from probe.inputs import catalog
from probe.inputs.config import parse_config


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the built-in catalogues with `ports` misspelt in telegram.yaml."""
    folder = tmp_path / "catalogs"
    shutil.copytree(catalog.BUILTIN, folder)
    path = folder / "telegram.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.strip().startswith("ports:"))
    lines[index] = lines[index].replace("ports:", "portz:", 1)
    path.write_text("".join(lines), encoding="utf-8")
    monkeypatch.setattr(catalog, "BUILTIN", folder)
    catalog.builtin.cache_clear()
    yield path
    catalog.builtin.cache_clear()


def test_a_typo_in_a_built_in_catalogue_is_one_line_and_exit_2(broken: Path, tmp_path: Path) -> None:
    config = tmp_path / "probe.yaml"
    config.write_text("vantage: {name: v}\nmessengers: {telegram: {}}\n")
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if "portz:" in text)
    group = "datacenters"
    for command in (["check-config", str(config)], ["catalog", "telegram"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            f"probe: error: {broken}:{line}: groups.{group}.portz: unknown key; did you mean 'ports'?"]


def test_a_config_reads_each_catalogue_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.yaml").write_text("messenger: x\ngroups:\n  g:\n    endpoints: [{name: a.example}]\n"
                                     "    steps: [dns, tcp]\n")
    reads: list[Path] = []
    real = catalog.read_text

    def counted(path: Path) -> str:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(catalog, "read_text", counted)
    catalog.builtin.cache_clear()
    text = "vantage: {name: v}\nmessengers: {x: {catalog: x.yaml}, telegram: {}, signal: {}}\n"
    parse_config(text, "probe.yaml", tmp_path)
    assert sorted(p.name for p in reads) == ["signal.yaml", "telegram.yaml", "x.yaml"]
    parse_config(text, "probe.yaml", tmp_path)  # unchanged files are not read again
    assert len(reads) == 3
