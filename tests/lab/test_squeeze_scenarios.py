"""Partial interference in the lab (tests/lab/scenarios_squeeze.py): real probes in both
vantages, several rounds where the verdict is a claim about a rate.

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_squeeze_scenarios.py`` (root). Records
go to build/lab-results.json and build/lab-loss.json (``python -m tests.lab.report``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.harness import run_scenario
from tests.lab.scenarios import Scenario
from tests.lab.scenarios_squeeze import SQUEEZE_SCENARIOS
from tests.lab.topology import Lab, lab_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.id) for s in SQUEEZE_SCENARIOS])
def test_squeeze_scenario(lab: Lab, lab_records: list[dict[str, Any]], scenario: Scenario) -> None:
    record, _ = run_scenario(lab, scenario)
    lab_records.append(record)
    assert not record["mismatches"], "\n".join(record["mismatches"])
