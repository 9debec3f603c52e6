"""The real engine's /metrics against the fleet rules and boards.

A `probe run` on loopback (every target closed, so its honest verdict is vantage_offline)
is scraped by a real Prometheus with the reach rules. This is where a drift between the
engine's exposition and the contract the rules and boards are written for shows up.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import promstack
from .conftest import require_prometheus
from .test_dashboards import CONTRACT_METRICS, all_queries, substitute


@pytest.fixture(scope="module")
def real_probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[promstack.Probe]:
    if shutil.which("probe") is None and not (promstack.REPO / ".venv" / "bin" / "probe").exists():
        pytest.skip("the probe CLI is not installed")
    workdir: Path = tmp_path_factory.mktemp("probe")
    probe = promstack.start_probe(workdir, promstack.loopback_probe_config("lo-subject", "IR"))
    try:
        yield probe
    finally:
        probe.stop()


def test_probe_exposition_has_the_contract_metrics(real_probe: promstack.Probe) -> None:
    text = real_probe.metrics()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("reach_")}
    # failures_total has samples once a check failed, which here every check does
    assert names >= CONTRACT_METRICS, f"missing: {CONTRACT_METRICS - names}"
    # the series budget (issue 15) holds for the real engine too: at most 10 per target
    per_target = Counter(m.group(1) for line in text.splitlines()
                         if line.startswith("reach_") and (m := re.search(r'target="([^"]+)"', line)))
    assert per_target and max(per_target.values()) <= 10, per_target.most_common(3)
    assert sum(1 for line in text.splitlines() if line.startswith("reach_verdict{")) == len(per_target)
    promtool = shutil.which("promtool")
    if promtool:
        lint = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_probe_exports_its_trust_anchors_validity(real_probe: promstack.Probe) -> None:
    """Issue 21: each certificate of the anchors the probe loaded, with its notAfter, so the
    fleet's TrustAnchorExpiring fires 90 days ahead; the dates are the `# valid:` lines of
    probe/data/trust/signal.pem (Signal's two roots), and a bare key (WhatsApp) has none."""
    import datetime as dt

    series = {m.group(1): float(m.group(2)) for line in real_probe.metrics().splitlines()
              if (m := re.match(r'reach_trust_anchor_expiry_timestamp_seconds\{vantage="lo-subject",'
                                r'anchor="signal",sha256="([0-9a-f]{16})"\} (\d+)$', line))}
    text = (promstack.REPO / "probe" / "data" / "trust" / "signal.pem").read_text()
    valid_to = re.findall(r"^#\s+valid: \S+ to (\d{4}-\d\d-\d\d)$", text, re.M)
    assert len(valid_to) == 2
    days = sorted(dt.datetime.fromtimestamp(v, dt.UTC).date().isoformat() for v in series.values())
    assert days == sorted(valid_to), (days, valid_to)
    assert "anchor=\"whatsapp\"" not in real_probe.metrics()


def test_rules_see_the_real_probe_as_vantage_offline(real_probe: promstack.Probe, tmp_path: Path) -> None:
    require_prometheus()
    target = real_probe.url.removeprefix("http://")
    with promstack.start_prometheus(
        tmp_path,
        scrape_configs=[promstack.scrape_job("reach", [target])],
        rule_files=promstack.shorten_rules(tmp_path / "rules"),
    ) as prom:
        assert isinstance(prom, promstack.Prometheus)
        (status,) = prom.wait_for_series('vantage_messenger:reach_status:code{vantage="lo-subject"}')
        assert status["value"][1] == "1", "a vantage with a failing baseline must be 'vantage offline'"
        assert status["metric"]["country"] == "IR"
        prom.wait_for_alert("VantageOffline", {"vantage": "lo-subject"}, timeout=30)
        assert not prom.firing("MessengerBlocked")
        # every board query parses against the real exposition too
        for _board, _title, expr in all_queries():
            prom.query(substitute(expr, {"country": ".*", "vantage": ".*", "messenger": ".*"}))
