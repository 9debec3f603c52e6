"""The shipped Prometheus rules, configs and Alertmanager config pass their own tools.

promtool/amtool are what a deployment runs at start; a rule file they reject means no
alerts at all, so these tests run the real binaries and fail on any complaint.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["reach.alerts.yml", "reach.rules.yml"]
    assert TEST_FILES, "promtool unit tests are missing"


def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    # alerts: 12 + InternationalCut; records: 18 + vantage:reach_vantage_international_cut:max
    assert "SUCCESS: 13 rules found" in result.stdout
    assert "SUCCESS: 19 rules found" in result.stdout


def test_rule_files_and_unit_tests_match_their_generators() -> None:
    """The shipped rules and promtool tests are exactly what their generators write."""
    rules = _load(PROM_DIR / "build_rules.py")
    for path in RULE_FILES:
        assert path.read_text() == rules.render(path.name), (
            f"{path.name} is out of date: run python configs/prometheus/build_rules.py")
    tests = _load(PROM_DIR / "tests" / "build_tests.py")
    assert (PROM_DIR / "tests" / "reach_test.yml").read_text() == tests.render(), (
        "reach_test.yml is out of date: run python configs/prometheus/tests/build_tests.py")


def test_rules_take_the_blocking_verdicts_from_probe_verdicts() -> None:
    from probe.model.verdicts import blocking_regex

    text = (RULES_DIR / "reach.rules.yml").read_text()
    assert f'verdict=~"{blocking_regex()}"' in text
    assert blocking_regex() in (RULES_DIR / "reach.alerts.yml").read_text()


def test_generator_parameters_selector_and_runbook_base(tmp_path: Path) -> None:
    """A deployment's job selector and docs URL go into every selector and runbook link."""
    script = PROM_DIR / "build_rules.py"
    result = run([sys.executable, str(script), "--out", str(tmp_path), "--selector", 'job="probes"',
                  "--runbook-base", "https://wiki.example.org/reach/runbook"])
    assert result.returncode == 0, result.stderr
    import yaml

    for name in ("reach.rules.yml", "reach.alerts.yml"):
        text = (tmp_path / name).read_text()
        assert 'job="reach"' not in text
        for group in yaml.safe_load(text)["groups"]:
            for rule in group["rules"]:
                # every selector of a probe series (not a recorded one) carries the selector
                for match in re.finditer(r"(?<![\w:])(reach_\w+|up)(?=[{\[ )])", rule["expr"]):
                    rest = rule["expr"][match.end():]
                    assert rest.startswith('{job="probes"'), (rule.get("record") or rule["alert"], rest[:40])
                url = rule.get("annotations", {}).get("runbook_url")
                if url:
                    assert url == f"https://wiki.example.org/reach/runbook#{rule['alert'].lower()}"
    assert 'reach_verdict{job="probes",' in (tmp_path / "reach.rules.yml").read_text()
    assert 'up{job="probes"}' in (tmp_path / "reach.alerts.yml").read_text()
    check = run([tool("promtool"), "check", "rules", str(tmp_path / "reach.rules.yml"),
                 str(tmp_path / "reach.alerts.yml")])
    assert check.returncode == 0, check.stdout + check.stderr
    for bad in (["--selector", "job=reach"], ["--runbook-base", "docs/runbook.md"], ["--window", "two"],
                ["--block-share", "2"]):
        refused = run([sys.executable, str(script), "--out", str(tmp_path / "x"), *bad])
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run([tool("promtool"), "test", "rules", *map(str, TEST_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "caught_by"),
    [
        # forget "a control vantage reaches the messenger" in "blocked"
        ("and on (messenger) (messenger:reach_control_verdict_ok:max_ratio >= 0.5)\n", "\n",
         "a control reaching a third of the messenger"),
        # page on any blocked round instead of a persistent block (issue 9)
        (">= 0.6\n", "> 0\n", "a single blocked round, or a different target each round, never pages"),
        # trust the baseline instead of the proof of connectivity (issue 14)
        ("max by (vantage) (reach_vantage_online{", "max by (vantage) (reach_baseline_success{",
         "a blocked baseline with connectivity"),
        # count a target blocked although the control fails it too (issue 21: stale endpoint)
        ("  and on (messenger, target) (min_over_time(messenger_target:reach_control_verdict_ok:max[2m])"
         " == 1)\n",
         "\n", "an endpoint that fails at the control too is an outage and a ticket, never a page"),
        # accept a control's ok anywhere in the window: a retired endpoint pages at its onset
        ("(min_over_time(messenger_target:", "(max_over_time(messenger_target:",
         "an endpoint retired while watched"),
    ],
)
def test_promtool_unit_tests_can_fail(tmp_path: Path, old: str, new: str, caught_by: str) -> None:
    """A rule that loses one of its conditions is caught by the unit tests."""
    broken = tmp_path / "rules"
    broken.mkdir()
    for src in RULE_FILES:
        text = src.read_text()
        (broken / src.name).write_text(text.replace(old, new, 1))
    assert any((broken / p.name).read_text() != p.read_text() for p in RULE_FILES), old
    tests = tmp_path / "tests"
    tests.mkdir()
    for src in TEST_FILES:
        (tests / src.name).write_text(src.read_text())
    result = run([tool("promtool"), "test", "rules", *map(str, sorted(tests.glob("*.yml")))])
    assert result.returncode != 0
    assert caught_by in result.stdout + result.stderr


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
        "BaselineBlocked",
        "VantageDegraded",
        "ProbeAbsent",
        "ProbeConfigReloadFailed",
        "ProbeEvidenceWriteErrors",
        "ProbeRoundsOverrun",
        "ProbeBudgetShedding",
        "CatalogueEndpointDown",
        "TrustAnchorExpiring",
        "InternationalCut",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"page", "ticket"}
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
        # MessengerBlocked's persistence is its window (docs/fleet.md), not a `for`
        assert alert.get("for") or alert["alert"] == "MessengerBlocked"
        assert alert.get("keep_firing_for")
        url = alert["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/reach-probe/reach/blob/main/docs/runbook.md#"), url
        anchor = url.split("#", 1)[1]
        assert anchor == alert["alert"].lower()
        assert f"## {anchor}" in runbook, f"docs/runbook.md has no section for {anchor}"
    paging = {a["alert"] for a in alerts if a["labels"]["severity"] == "page"}
    # a shutdown pages too (docs/fleet.md, "A shutdown is its own state": why)
    assert paging == {"MessengerBlocked", "InternationalCut"}


def test_prometheus_configs_are_valid() -> None:
    promtool = tool("promtool")
    server = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert server.returncode == 0, server.stdout + server.stderr
    agent = run([promtool, "check", "config", "--agent", str(PROM_DIR / "prometheus-agent.yml")])
    assert agent.returncode == 0, agent.stdout + agent.stderr


def test_amtool_check_config() -> None:
    result = run([tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=MessengerBlocked", "severity=page", "vantage=ir-lab"], "page"),
        (["alertname=MessengerOutage", "severity=ticket", "messenger=telegram"], "ticket"),
        (["alertname=VantageOffline", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=ProbeAbsent", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=BaselineBlocked", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=VantageDegraded", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=ProbeRoundsOverrun", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=ProbeBudgetShedding", "severity=ticket", "vantage=ir-lab"], "ticket"),
        (["alertname=CatalogueEndpointDown", "severity=ticket", "messenger=telegram",
          "target=dc1-v4:443"], "ticket"),
        (["alertname=TrustAnchorExpiring", "severity=ticket", "anchor=signal"], "ticket"),
        (["alertname=InternationalCut", "severity=page", "vantage=ir-lab"], "page"),
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
