"""The transport scenarios (tests/lab/scenarios_transport.py) with real `probe once` runs
in both vantages: plain-signature filtering (apps fine), the GFW's fully-encrypted-traffic
rule (apps blocked), MTProxies reachable and then blocked by their fake-TLS SNI.

Run: ``sudo .venv/bin/pytest -m lab tests/lab/test_transport_scenarios.py``; the records go
to build/lab-transport-results.json (the table in docs/lab.md is rendered from it by
``python -m tests.lab.scenarios_transport``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab import plan, scenarios_transport
from tests.lab.scenarios_transport import SCENARIOS, TransportScenario
from tests.lab.topology import Lab, lab_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
]

RECORDS: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def transport_lab(lab: Lab) -> Iterator[Lab]:
    """The lab with the proxies and the FET censor added (stopped again afterwards)."""
    scenarios_transport.setup(lab)
    try:
        yield lab
    finally:
        for spec in scenarios_transport.extra_services(lab):
            process = lab.processes.pop(spec.name, None)
            if process is not None:
                process.stop()
        if RECORDS:
            scenarios_transport.save(RECORDS)


@pytest.mark.parametrize("transport", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_transport_scenario(transport_lab: Lab, transport: TransportScenario) -> None:
    record, results = scenarios_transport.run(transport_lab, transport)
    RECORDS.append(record)
    for vantage in (plan.SUBJECT, plan.CONTROL):
        assert results[vantage]["verdicts"], f"{vantage}: no verdicts"
    assert not record["mismatches"], "\n".join(record["mismatches"])
    if transport.id.startswith("t1"):
        # the evidence shows the plain transport failing beside the working obfuscated2
        dc = next(v for v in results[plan.SUBJECT]["verdicts"] if v["target"] == "dc1-v4:443")
        by_id = {o["id"]: o for o in results[plan.SUBJECT]["observations"]}
        evidence = [by_id.get(e.get("observation"), e) for e in dc["evidence"]]
        transports = {(o.get("details", {}).get("transport"), o.get("failure")) for o in evidence}
        assert ("obfuscated2", None) in transports, transports
        assert any(t == "intermediate" and f is not None for t, f in transports), transports
