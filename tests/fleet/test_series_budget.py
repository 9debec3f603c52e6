"""The series budget of metrics v2: about 10 series per target, and at most 1,500 per
vantage for three messengers' built-in catalogues on an online round (159 targets since the
catalogues gained media, gateway, registration and web-client paths, 1,398 series with the
per-messenger answer; 1,100 for the 114 targets before, 1,000 before the Noise step).

A thousand-vantage fleet is 1.5M active series at this budget: one Prometheus holds that
(docs/fleet.md); at the old ~30 per target it was 3M. The rounds here are synthetic (the
catalogue shapes below, every check run and successful, as on an online round) and go
through the real Metrics.record_round/render; the real engine's exposition is held to the
same per-target figure in test_probe_metrics.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from probe.inputs.catalog import available
from probe.inputs.config import Config, parse_config
from probe.inputs.plan import plan_messenger
from probe.model.observation import Observation, RoundDraft, RoundResult, VantageNetwork, Verdict
from probe.sinks.metrics import Metrics

PER_TARGET = 10
PER_VANTAGE = 1_500
WEB = ("dns", "tcp", "tls", "http")


@dataclass(frozen=True)
class Shape:
    """A group of targets of one messenger that run the same primary checks."""

    messenger: str
    names: tuple[str, ...]
    checks: tuple[str, ...]


def _fam(names: list[str]) -> tuple[str, ...]:
    return tuple(f"{n}/v{f}" for n in names for f in (4, 6))


# Telegram: 11 DC addresses x ports 443, 80, 5222 and 4 media-only DC addresses x the same
# ports (tcp, mtproto, mtproto_plain), 5 domains x v4/v6 (dns, tcp, tls;
# http for the two with a url) and the web client's 5 hosts x v4/v6 = 65 targets, as in
# probe/catalogs/telegram.yaml. WhatsApp: chat servers e1..e16.whatsapp.net x ports 443,
# 5222 x v4/v6 (dns, tcp and a handshake), the gateway g.whatsapp.net x 5222, 443, 80 x
# v4/v6, and the media, registration and web names (76). Signal: 9 hosts x v4/v6 with the
# full web chain (18). The last tests check that the built-in catalogues stay within them.
_DC = [(1, 4), (1, 6), (2, 4), (2, 6), (3, 4), (3, 6), (4, 4), (4, 6), (5, 4), (5, 6), (2, "4b")]
CATALOGUES: tuple[Shape, ...] = (
    Shape("telegram", tuple(f"dc{i}-v{f}:{p}" for i, f in _DC for p in (443, 80, 5222)),
          ("tcp", "mtproto", "mtproto_plain")),
    Shape("telegram", tuple(f"dc{i}-media-v{f}:{p}" for i in (2, 4) for f in (4, 6)
                            for p in (443, 80, 5222)), ("tcp", "mtproto", "mtproto_plain")),
    Shape("telegram", _fam(["telegram.org", "web.telegram.org"]), WEB),
    Shape("telegram", _fam(["t.me", "api.telegram.org", "core.telegram.org"]), WEB[:3]),
    Shape("telegram", _fam([f"{n}.web.telegram.org" for n in
                            ("pluto", "venus", "aurora", "vesta", "flora")]), WEB),
    Shape("whatsapp", tuple(f"e{i}.whatsapp.net/v{f}:{p}" for i in range(1, 17)
                            for p in (443, 5222) for f in (4, 6)), ("dns", "tcp", "tls")),
    Shape("whatsapp", tuple(f"g.whatsapp.net/v{f}:{p}" for f in (4, 6) for p in (5222, 443, 80)),
          ("dns", "tcp", "tls")),
    Shape("whatsapp", _fam(["web.whatsapp.com", "v.whatsapp.net", "mmg.whatsapp.net"]), WEB),
    Shape("signal", _fam(["chat.signal.org", "storage.signal.org", "cdn.signal.org",
                          "cdn2.signal.org", "cdn3.signal.org", "sfu.voip.signal.org",
                          "cdsi.signal.org", "svr2.signal.org", "updates.signal.org"]), WEB),
)

CONFIG_TEXT = """
vantage: {name: ir-budget-1, country: IR, asn: 64500, network: mobile, role: subject}
messengers: {telegram: {}}
baseline: {targets: [{name: b1, address: 192.0.2.1}]}
evidence: {directory: null}
"""


def config() -> Config:
    return parse_config(CONFIG_TEXT)


def online_round(shapes: tuple[Shape, ...] = CATALOGUES, failure: str | None = None) -> RoundResult:
    """A round in which every target ran every primary check (plus a differential each)."""
    now = time.time()
    result = RoundDraft(config().vantage.identity(), targets=[], started=now - 5, finished=now)
    verdicts: list[Verdict] = []
    for shape in shapes:
        for target in shape.names:
            for check in shape.checks:
                result.observations.append(Observation(
                    shape.messenger, target, check, "connect", failure, duration_seconds=0.123))
            # a differential (neutral SNI, plain HTTP) is no series of its own
            result.observations.append(Observation(shape.messenger, target, "tls", "tls_handshake", None,
                                                   duration_seconds=0.2, role="differential"))
            verdicts.append(Verdict(shape.messenger, target, "ok", "all_ok", "", []))
    result.network = VantageNetwork(online=True, baseline_ok=True, loss_ratio=0.0, rtt_seconds=0.08,
                                    baseline_sites={"b1": True, "b2": True, "b3": False})
    return result.judged(verdicts)


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("reach_")]


def render(result: RoundResult) -> str:
    metrics = Metrics()
    metrics.record_round(result)
    return metrics.render().decode()


def test_every_target_stays_within_ten_series() -> None:
    per_target = Counter(m.group(1) for line in series(render(online_round()))
                         if (m := re.search(r'target="([^"]+)"', line)))
    targets = sum(len(s.names) for s in CATALOGUES)
    assert len(per_target) == targets
    worst = max(per_target.values())
    assert worst <= PER_TARGET, per_target.most_common(3)
    # the verdict is one series, not one per verdict word
    assert worst == 1 + 2 * 4


def test_a_vantage_with_three_messengers_stays_within_the_vantage_budget() -> None:
    text = render(online_round())
    lines = series(text)
    names = Counter(line.split("{")[0] for line in lines)
    assert len(lines) <= PER_VANTAGE, names.most_common()
    targets = sum(len(s.names) for s in CATALOGUES)
    assert len(lines) / targets <= PER_TARGET
    # what the budget is spent on: nothing per target except these three families
    per_target = {line.split("{")[0] for line in lines if 'target="' in line}
    assert per_target == {"reach_verdict", "reach_check_success", "reach_check_duration_seconds"}
    assert names["reach_verdict"] == targets
    # one latency histogram per vantage x messenger x check (14 here), not per target
    assert names["reach_check_latency_seconds_count"] == 14


def test_failures_are_counted_per_check_not_per_target() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.record_round(online_round(failure="generic_timeout_error"))
    lines = [line for line in series(metrics.render().decode())
             if line.startswith("reach_check_failures_total")]
    assert len(lines) == 14
    assert 'reach_check_failures_total{vantage="ir-budget-1",messenger="telegram",check="tcp",' \
           'failure="generic_timeout_error"} 195' in lines  # 65 targets x 3 rounds


def test_network_gauges_and_build_info() -> None:
    text = render(online_round())
    for line in ('reach_vantage_online{vantage="ir-budget-1"} 1',
                 'reach_baseline_blocked{vantage="ir-budget-1"} 0',
                 'reach_vantage_degraded{vantage="ir-budget-1"} 0',
                 'reach_vantage_loss_ratio{vantage="ir-budget-1"} 0',
                 'reach_vantage_rtt_seconds{vantage="ir-budget-1"} 0.08',
                 'reach_baseline_site_success{vantage="ir-budget-1",site="b3"} 0'):
        assert line in text
    assert re.search(r'^reach_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0$', text, re.M)


def test_an_unmeasured_loss_or_rtt_is_left_out_not_zero() -> None:
    result = online_round()
    result.network.loss_ratio = result.network.rtt_seconds = None
    text = render(result)
    assert "reach_vantage_loss_ratio" not in text and "reach_vantage_rtt_seconds" not in text
    assert 'reach_vantage_online{vantage="ir-budget-1"} 1' in text


def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    metrics = Metrics()
    metrics.record_round(online_round(failure="connection_reset"))
    lint = subprocess.run([promtool, "check", "metrics"], input=metrics.render().decode(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_built_in_catalogues_fit_the_designed_budget() -> None:
    """The built-in catalogues stay within the budget's design: no more targets than it
    assumed, and at most four primary checks (9 series) per target."""
    designed: Counter[str] = Counter()
    for shape in CATALOGUES:
        designed[shape.messenger] += len(shape.names)
    checked = []
    for name in available():
        if name not in designed:
            continue
        cfg = parse_config(CONFIG_TEXT.replace("messengers: {telegram: {}}", f"messengers: {{{name}: {{}}}}"))
        targets = plan_messenger(name, cfg).targets
        assert 0 < len(targets) <= designed[name], f"{name}: {len(targets)} targets, budget {designed[name]}"
        assert max(len(t.steps) for t in targets) <= 4, name
        checked.append(name)
    assert "telegram" in checked


def test_the_built_in_catalogues_of_three_messengers_stay_within_the_budget() -> None:
    """The real plans (probe/catalogs, every step a primary check) through Metrics."""
    names = [n for n in ("telegram", "whatsapp", "signal") if n in available()]
    if len(names) < 3:
        pytest.skip(f"built-in catalogues so far: {names}")
    cfg = parse_config(CONFIG_TEXT.replace("messengers: {telegram: {}}",
                                           "messengers: {telegram: {}, whatsapp: {}, signal: {}}"))
    shapes = tuple(Shape(name, (t.name,), tuple(step.check for step in t.steps))
                   for name in names for t in plan_messenger(name, cfg).targets)
    lines = series(render(online_round(shapes)))
    targets = len(shapes)
    assert len(lines) <= PER_VANTAGE, (len(lines), targets)
    assert len(lines) / targets <= PER_TARGET
