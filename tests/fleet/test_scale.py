"""A small scale run in CI: vantages with three messengers each, agents remote-writing to
one centre that runs the shipped rules (the full run: python -m tests.fleet.scale)."""

from __future__ import annotations

from .conftest import require_prometheus
from .scale import measure


def test_a_small_fleet_fits_the_series_budget_and_the_rules_keep_up() -> None:
    require_prometheus()
    figures = measure(vantages=12, agents=3, scrape="2s", seconds=24)
    # every vantage x messenger has a fleet status; a third of the subjects are blocked
    assert figures.statuses == 12 * 3
    assert figures.blocked_vantages == 3  # v0001, v0004, v0007 (v0000 and v0010 are controls)
    # the budget at the centre: the probe's <= 1,000 plus up/scrape_* and the recording rules
    assert figures.series_per_vantage <= 1_100, figures
    # every sample arrives: ~1,000 series per vantage every 2 s
    assert figures.samples_per_second >= 0.8 * 12 * 1_000 / 2, figures
    # rule groups run every 10 s; at 12 vantages they take a small fraction of that
    assert max(figures.rule_eval_seconds.values()) < 2.0, figures
