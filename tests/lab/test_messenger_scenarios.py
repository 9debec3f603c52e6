"""WhatsApp's own protocol and the apps' detours (tests/lab/scenarios_messengers.py) with
real `probe once` runs in both vantages: the prologue reset, the ServerHello dropped, the
handshake intercepted with another root, and Signal blocked while its domain fronting works;
a WhatsApp proxy that still works while WhatsApp's own chat endpoints are blocked.

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_messenger_scenarios.py``; the records go
to build/lab-messengers-results.json.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab import plan, scenarios_messengers
from tests.lab.scenarios_messengers import SCENARIOS, MessengerScenario
from tests.lab.topology import Lab, lab_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]

RECORDS: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def messengers_lab(lab: Lab) -> Iterator[Lab]:
    """The lab with the Noise interceptor and the fronting CDN added (stopped afterwards)."""
    scenarios_messengers.setup(lab)
    try:
        yield lab
    finally:
        for spec in scenarios_messengers.extra_services(lab):
            process = lab.processes.pop(spec.name, None)
            if process is not None:
                process.stop()
        if RECORDS:
            scenarios_messengers.save(RECORDS)


@pytest.mark.parametrize("case", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_messenger_scenario(messengers_lab: Lab, case: MessengerScenario) -> None:
    record, results = scenarios_messengers.run(messengers_lab, case)
    RECORDS.append(record)
    for vantage in (plan.SUBJECT, plan.CONTROL):
        assert results[vantage]["verdicts"], f"{vantage}: no verdicts"
    assert not record["mismatches"], "\n".join(record["mismatches"])
    if case.id == "w4-signal-fronting":
        # what the analyst reads: Signal's own service blocked, its detour working
        own = {v["verdict"] for v in results[plan.SUBJECT]["verdicts"]
               if v["messenger"] == "signal" and not v.get("circumvention")}
        assert own == {"ip_blocking"}, own
        assert record["circumvention"][plan.SUBJECT]["signal"] == "yes"
    if case.id == "w1-noise-prologue-reset":
        # WhatsApp's chat endpoints blocked, the configured proxy's handshake verified
        proxies = [v for v in results[plan.SUBJECT]["verdicts"]
                   if v.get("circumvention") == "whatsapp_proxy"]
        assert {v["verdict"] for v in proxies} == {"ok"}, proxies
        assert record["circumvention"][plan.SUBJECT]["whatsapp"] == "yes"
