"""Session fixture for the censorship lab: lock, build once, always tear down.

Why session scope: building the lab (namespaces, 11 server processes) takes ~2 s and every
scenario resets it cheaply; the lock serialises concurrent lab runs on one machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.harness import save_results
from tests.lab.topology import Lab, LabLock, lab_available

#: The test that tears the lab down and checks nothing is left; it must run after every other
#: lab test, whichever module sorts last.
TEARDOWN_TEST = "test_teardown_leaves_nothing"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the teardown check to the very end of the session."""
    last = [item for item in items if item.name == TEARDOWN_TEST]
    items[:] = [item for item in items if item.name != TEARDOWN_TEST] + last


#: Records of the scenarios run in this session, saved for `python -m tests.lab.report`.
RECORDS: list[dict[str, Any]] = []


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The running lab (skips the test when the machine cannot host it)."""
    reason = lab_available()
    if reason:
        pytest.skip(reason)
    lock = LabLock()
    lock.acquire()
    built = Lab()
    try:
        built.up()
        yield built
    finally:
        try:
            built.down()
        finally:
            lock.release()
            if RECORDS:
                save_results(RECORDS)


@pytest.fixture(scope="session")
def lab_records() -> list[dict[str, Any]]:
    """Where scenario tests append their observed-vs-expected record."""
    return RECORDS
