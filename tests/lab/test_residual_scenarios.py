"""Residual blocking after a transport trigger (tests/lab/scenarios_residual.py): the
fully-encrypted-traffic filter with a 60 s and a 180 s residual drop, several rounds of
`probe run` in both vantages each; the IPv4 DCs must be `protocol_filtering` in every
round, never `ip_blocking`.

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_residual_scenarios.py`` (about 2 and 3
minutes; tests/parallel.py runs the two as jobs of their own). The records go to
build/lab-loss.json with the other multi-round scenarios.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab import scenarios_residual
from tests.lab.scenarios_loss import LossScenario, save
from tests.lab.scenarios_residual import SCENARIOS, Lucky
from tests.lab.topology import Lab, lab_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]


@pytest.fixture(scope="module")
def residual_lab(lab: Lab) -> Iterator[Lab]:
    """The session lab (built again if an earlier module tore it down) with the filter's
    relay added, stopped again afterwards."""
    if not lab.status()["namespaces"]:
        lab.up()
    spec = scenarios_residual.relay(lab)
    lab.start_extra([spec])
    try:
        yield lab
    finally:
        process = lab.processes.pop(spec.name, None)
        if process is not None:
            process.stop()


@pytest.fixture(scope="module")
def residual_records() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    yield records
    if records:
        save(records)


@pytest.mark.parametrize(("scenario", "lucky"), SCENARIOS, ids=[s.id for s, _ in SCENARIOS])
def test_residual_scenario(residual_lab: Lab, residual_records: list[dict[str, Any]],
                           scenario: LossScenario, lucky: Lucky) -> None:
    record, rounds = scenarios_residual.run(residual_lab, scenario, lucky)
    residual_records.append(record)
    assert len(rounds.subject) == len(rounds.control) == scenario.rounds
    assert record["fet_decisions"]["armed"] > 0, record["fet_decisions"]
    assert not record["mismatches"], "\n".join(record["mismatches"][:20])
