"""Shared fixtures and the end-of-run count of fuzzed inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.hardening._counts import CASES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASES:
        return
    terminalreporter.section("hardening: hostile inputs fed to the probe")
    for name, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{name:40} {count:7d}")
    terminalreporter.write_line(f"{'total':40} {sum(CASES.values()):7d}")
    out = os.environ.get("HARDENING_COUNTS")
    if out:
        Path(out).write_text(json.dumps(dict(CASES), indent=1, sort_keys=True))



def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The 500-round soak runs when asked for (-m slow, or HARDENING_SOAK=1), not by default."""
    import pytest

    wanted = "slow" in (config.option.markexpr or "") or os.environ.get("HARDENING_SOAK") == "1"
    if wanted:
        return
    for item in items:
        if "slow" in item.keywords and "hardening" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason="soak: run with -m slow or HARDENING_SOAK=1"))
