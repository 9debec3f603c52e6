"""The package as an operator gets it: a wheel, installed in a fresh virtualenv, writes out a
deployment whose rules promtool accepts (and whose Alertmanager config amtool accepts).

Why a real wheel and venv: package data that is missing from the wheel is invisible in an
editable checkout, where every file is on disk anyway. The test reads the rule files from
whatever the wheel carries, so it follows the rules as they change.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # from a copy without build/: setuptools would put a previous build's leftovers in the wheel
    source = tmp_path_factory.mktemp("source") / "reach"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source)
    (built,) = out.glob("reach_probe-*.whl")
    return built


def test_wheel_declares_its_licence_and_carries_the_deployment(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert metadata["License-Expression"] == "Apache-2.0"  # PEP 639, not the deprecated table
    assert metadata["License-File"] == "LICENSE"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    shipped = {n.removeprefix("probe/shipped/") for n in names if n.startswith("probe/shipped/")}
    data = (".yml", ".yaml", ".json")  # the generators (build_*.py) stay in the source tree
    source = {str(p.relative_to(ROOT)) for top in ("configs", "grafana") for p in (ROOT / top).rglob("*")
              if p.is_file() and "catalogs" not in p.parts and p.suffix in data}
    assert shipped == source, "probe/shipped/ and configs/ + grafana/ differ: pyproject's package-data?"
    # one copy of each catalogue: the package's; configs/catalogs only links to it
    assert "probe/catalogs/telegram.yaml" in names
    for link in (ROOT / "configs" / "catalogs").iterdir():
        assert link.is_symlink() and link.resolve().parent == ROOT / "probe" / "catalogs"


def test_a_fresh_venv_writes_out_a_deployment_promtool_accepts(wheel: Path, tmp_path: Path) -> None:
    promtool, amtool = shutil.which("promtool"), shutil.which("amtool")
    if promtool is None or amtool is None:
        pytest.skip("promtool/amtool not installed (scripts/setup installs them)")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    deployment = tmp_path / "deployment"
    # run outside the source tree, so nothing can come from the checkout
    written = run(venv / "bin" / "probe", "export-config", deployment, cwd=tmp_path).split()
    rules = sorted((deployment / "configs" / "prometheus" / "rules").glob("*.yml"))
    assert rules and all(str(r) in written for r in rules)
    assert "SUCCESS" in run(promtool, "check", "rules", *rules)
    tests = sorted((deployment / "configs" / "prometheus" / "tests").glob("*.yml"))
    assert tests
    assert "SUCCESS" in run(promtool, "test", "rules", *tests)
    run(amtool, "check-config", deployment / "configs" / "alertmanager" / "alertmanager.yml")
    config = deployment / "configs" / "probe.example.yaml"
    assert ": ok (vantage" in run(venv / "bin" / "probe", "check-config", config, cwd=tmp_path)
    boards = sorted((deployment / "grafana" / "dashboards").glob("*.json"))
    source_boards = sorted(p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json"))
    assert [b.name for b in boards] == source_boards
