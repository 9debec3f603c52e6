"""Issue 9's lab scenarios (tests/lab/scenarios_loss.py): lossy and rate-limited links,
intermittent and residual censorship, several rounds of `probe run` in both vantages each;
and issue 19's targeted loss (LT30-*, LT50-*: 30% and 50% of the packets to one family's
DCs dropped, a blocking verdict on them in >= 9 of 10 rounds, nothing else blocked).

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_loss.py`` (about 7 minutes on two
cores). The 30% scenario's rounds are the fleet test's (tests/lab/test_loss_fleet.py).
The run records per-round blocking counts in build/lab-loss.json; ``python -m
tests.lab.report`` renders them into docs/lab-results.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.scenarios_loss import LOSS_SCENARIOS, LossScenario, run_loss_scenario, save
from tests.lab.topology import Lab, lab_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]


@pytest.fixture(scope="module")
def loss_records() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    yield records
    if records:
        save(records)


@pytest.fixture(scope="module")
def loss_lab(lab: Lab) -> Lab:
    """The session lab, built again if an earlier test module tore it down."""
    if not lab.status()["namespaces"]:
        lab.up()
    return lab


LAB_ONLY = [s for s in LOSS_SCENARIOS if not s.fleet]  # the others: test_loss_fleet.py


@pytest.mark.parametrize("scenario", LAB_ONLY, ids=[s.id for s in LAB_ONLY])
def test_loss_scenario(loss_lab: Lab, loss_records: list[dict[str, Any]],
                       scenario: LossScenario) -> None:
    record, rounds = run_loss_scenario(loss_lab, scenario)
    loss_records.append(record)
    assert len(rounds.subject) == len(rounds.control) == scenario.rounds
    for round_ in (*rounds.subject, *rounds.control):
        for verdict in round_["verdicts"]:
            assert verdict["rule"] and all("attempts" in e for e in verdict["evidence"]), verdict
    assert not record["mismatches"], "\n".join(record["mismatches"][:20])
