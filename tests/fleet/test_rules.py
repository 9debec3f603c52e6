"""The shipped Prometheus rules, configs and Alertmanager config pass their own tools.

promtool/amtool are what a deployment runs at start; a rule file they reject means no
alerts at all, so these tests run the real binaries and fail on any complaint.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .fakeprobe import FakeProbe
from .promstack import ALERTMANAGER_CONFIG, REPO, RULES_DIR

PROM_DIR = REPO / "configs" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))


def tool(name: str) -> str:
    """Path of a binary, or skip the test with the package to install."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian packages prometheus / prometheus-alertmanager)")
    return path


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, input=stdin, check=False)


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["reach.alerts.yml", "reach.rules.yml"]
    assert TEST_FILES, "promtool unit tests are missing"


def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout
    assert "SUCCESS: 12 rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", *map(str, TEST_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule that forgets the control vantage must be caught by the unit tests."""
    broken = tmp_path / "rules"
    broken.mkdir()
    for src in RULE_FILES:
        text = src.read_text()
        # Drop the "a control vantage reaches the messenger" condition of "blocked".
        text = text.replace(
            "and on (messenger) (messenger:reach_control_verdict_ok:max_ratio >= 0.5)\n", "\n", 1
        )
        (broken / src.name).write_text(text)
    tests = tmp_path / "tests"
    tests.mkdir()
    for src in TEST_FILES:
        (tests / src.name).write_text(src.read_text())
    result = run([tool("promtool"), "test", "rules", *map(str, sorted(tests.glob("*.yml")))])
    assert result.returncode != 0
    assert "outage seen from the control too is not a block" in result.stdout + result.stderr


def test_every_alert_and_recording_rule_is_unit_tested() -> None:
    """Each alert name and recorded series appears in the promtool tests."""
    import yaml

    tests_text = "\n".join(p.read_text() for p in TEST_FILES)
    names = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [r.get("alert") or r["record"] for r in group["rules"]]
    missing = [n for n in names if n not in tests_text]
    assert not missing, f"not covered by promtool tests: {missing}"


def test_alerts_have_severity_annotations_and_runbook() -> None:
    import yaml

    runbook = (REPO / "docs" / "runbook.md").read_text().lower()
    alerts = [
        r
        for group in yaml.safe_load((RULES_DIR / "reach.alerts.yml").read_text())["groups"]
        for r in group["rules"]
    ]
    assert {a["alert"] for a in alerts} == {
        "MessengerBlocked",
        "MessengerOutage",
        "VantageOffline",
        "ProbeAbsent",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"page", "ticket"}
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
        assert alert.get("for") and alert.get("keep_firing_for")
        anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"## {anchor}" in runbook, f"docs/runbook.md has no section for {anchor}"
    paging = {a["alert"] for a in alerts if a["labels"]["severity"] == "page"}
    assert paging == {"MessengerBlocked"}


def test_prometheus_configs_are_valid() -> None:
    promtool = tool("promtool")
    server = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert server.returncode == 0, server.stdout + server.stderr
    agent = run([promtool, "check", "config", "--agent", str(PROM_DIR / "prometheus-agent.yml")])
    assert agent.returncode == 0, agent.stdout + agent.stderr


def test_amtool_check_config() -> None:
    result = run([tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=MessengerBlocked", "severity=page", "vantage=ir-lab"], "page"),
        (["alertname=MessengerOutage", "severity=ticket", "messenger=telegram"], "ticket"),
        (["alertname=VantageOffline", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=ProbeAbsent", "severity=ticket", "vantage=ir-lab"], "ticket"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_fake_probe_exposition_passes_promtool_check_metrics() -> None:
    """The synthetic exposition the fleet tests use follows Prometheus naming rules."""
    probe = FakeProbe(vantage="ir-lab", country="IR", verdicts={"dc1-v4:443": "ip_blocking"})
    result = run([tool("promtool"), "check", "metrics"], stdin=probe.render())
    assert result.returncode == 0, result.stdout + result.stderr
