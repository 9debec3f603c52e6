"""The status page of a real `probe run` in the lab's subject vantage, through Iran 2015,
in headless Chromium: the screenshots in docs/screenshots/ come from this test.

The probe starts while nothing is blocked, then the Iran-2015 scenario is applied to the
running lab (ISP resolver answering 10.10.34.34 / d0::11, DC addresses blackholed), so the
page shows a change: "since" is the first blocked round and the history holds both runs.
The browser (in the root namespace) reaches the probe over the lab's management veth, the
way Prometheus scrapes it in test_fleet_e2e.py.

Screenshots go to build/screenshots/; with REACH_UPDATE_SCREENSHOTS=1 also to
docs/screenshots/ (what is committed there was made so).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.model.verdicts import STATUS_COLOURS, VERDICT_COLOURS
from tests.browser.cdp import PAGE_FACTS, browser, chromium_binary, rgb
from tests.fleet.promstack import ManagedProcess
from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.scenarios import apply_scenario, scenario_by_id
from tests.lab.topology import PROBE_BIN, ROOT, Lab, lab_available, ns_exec

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(lab_available() is not None, reason=lab_available() or ""),
    pytest.mark.skipif(chromium_binary() is None, reason="no chromium (scripts/setup installs it)"),
]
PORT = 9651
SHOTS = ROOT / "build" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"


def _status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/api/status", timeout=5) as response:
        data: dict[str, Any] = json.load(response)
    return data


def wait_rounds(url: str, more: int, timeout: float = 60) -> dict[str, Any]:
    """Wait until the probe has finished `more` rounds beyond the current count."""
    deadline = time.monotonic() + timeout
    start = None
    while time.monotonic() < deadline:
        try:
            data = _status(url)
        except OSError:
            time.sleep(0.3)
            continue
        start = data["rounds"] if start is None else start
        if data["rounds"] >= start + more and data["round"] is not None:
            return data
        time.sleep(0.3)
    raise AssertionError(f"the probe at {url} did not finish {more} rounds in {timeout}s")


@pytest.fixture
def subject_probe(lab: Lab, tmp_path: Path) -> Iterator[str]:
    """`probe run` in the subject namespace (2 s rounds, an evidence log), on its management
    address; the lab starts with nothing blocked."""
    lab.reset()
    config = probe_config(plan.SUBJECT, lab.workdir, lab.ca_dir / "ca.pem")
    config["schedule"]["interval"] = 2
    config["evidence"] = {"directory": str(tmp_path / "evidence")}
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    host = plan.mgmt_link(plan.SUBJECT).ns_addr
    with lab.managed():
        process = ManagedProcess([*ns_exec(plan.SUBJECT), str(PROBE_BIN), "run",
                                  "--config", str(path), "--listen", f"{host}:{PORT}"],
                                 tmp_path / "probe.log")
        try:
            yield f"http://{host}:{PORT}"
        finally:
            process.stop()


async def test_iran_2015_on_the_status_page(lab: Lab, subject_probe: str) -> None:
    url = subject_probe
    wait_rounds(url, 2)  # nothing blocked yet
    applied = time.time()
    apply_scenario(lab, scenario_by_id("02-iran-2015"))
    wait_rounds(url, 1)  # a round that began before the rules went in may be mixed
    final = wait_rounds(url, 1)
    verdicts = [v["verdict"] for v in final["round"]["verdicts"]]
    assert set(verdicts) == {"dns_injection", "ip_blocking"}, verdicts

    shots: dict[int, Path] = {}
    async with browser() as page:
        for width in (412, 1280):
            await page.open(url + "/", width)
            facts = await page.evaluate(PAGE_FACTS)
            # a phone's first screen (what it shows without scrolling); the desktop's whole page
            name = f"statuspage-iran-2015-{width}{'-first-screen' if width < 600 else ''}.png"
            shots[width] = await page.screenshot(SHOTS / name, full_page=width >= 600)
            requests = list(page.requests)
            # what: blocked, counted per mechanism, above the table
            assert facts["summaryAboveTable"]
            (card,) = facts["cards"]
            assert (card["status"], card["statusColour"]) == ("blocked", rgb(STATUS_COLOURS["blocked"]))
            assert card["counts"] == [f"dns_injection {verdicts.count('dns_injection')}",
                                      f"ip_blocking {verdicts.count('ip_blocking')}"]
            # how: the forged answer and its fingerprint, the blackholed connect
            rows = facts["rows"]
            for row in rows:
                assert row["chip"] == rgb(VERDICT_COLOURS[row["verdict"]])
                if row["verdict"] == "dns_injection" and row["target"].endswith("/v4"):
                    assert "answered 10.10.34.34 (fingerprint ooni.ir_4)" in row["evidence"], row
                if row["verdict"] == "ip_blocking":
                    assert "generic_timeout_error at connect" in row["evidence"], row
            # since when: not before the rules went in, and the strip ends blocked
            for row in rows:  # at most one round (2 s + its ~2.5 s) before the rules went in
                assert applied - 6 <= datetime.fromisoformat(row["since"]).timestamp() <= time.time()
                assert row["strip"][-1] == f"v-{row['verdict']}"
            assert not facts["banners"]  # online, not degraded: nothing to say once
            assert facts["scrollWidth"] <= width
            assert all(r.startswith(url) for r in requests), requests
        # dark mode: the page follows the reader's colour scheme, the palette stays
        await page.open(url + "/", 1280, dark=True)
        dark = await page.evaluate(PAGE_FACTS)
        assert dark["background"] == "rgb(17, 17, 17)"
        assert dark["rows"][0]["chip"] == rgb(VERDICT_COLOURS[dark["rows"][0]["verdict"]])
        shots[0] = await page.screenshot(SHOTS / "statuspage-iran-2015-1280-dark-first-screen.png",
                                         full_page=False)
    with urllib.request.urlopen(url + rows[0]["link"], timeout=5) as response:
        evidence = json.load(response)
    assert [run["verdict"] for run in evidence["history"]][-1] == rows[0]["verdict"]
    assert evidence["history"][0]["verdict"] == "ok"  # the rounds before the block
    if os.environ.get("REACH_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        for shot in shots.values():
            shutil.copyfile(shot, DOCS / shot.name)

