"""Freshness you can see: catalogues with sources and review dates, warnings (never errors)
past `review_by`, trust anchors as a dated set, prefix lists that say where they came from.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.inputs import catalog, freshness, prefixes
from probe.inputs.config import load_config
from probe.sinks.statuspage.routes import StatusPage

UTC = dt.UTC


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_built_in_catalogue_is_sourced_and_dated() -> None:
    for name in catalog.available():
        cat = catalog.builtin(name)
        assert cat.sources and cat.reviewed and cat.review_by, name
        assert cat.reviewed < cat.review_by
        assert all(s.commit or s.date for s in cat.sources)
        assert {g.path for g in cat.groups.values()} <= set(catalog.PATHS)


def test_probe_catalog_shows_sources_and_dates() -> None:
    result = probe("catalog", "--sources")
    assert result.returncode == 0, result.stderr
    assert "whatsapp: reviewed 2026-12-04, review by 2027-03-04" in result.stdout
    assert "signalapp/libsignal/blob/main/rust/net/src/certs.rs (commit b056faa6" in result.stdout
    data = yaml.safe_load(probe("catalog", "signal").stdout)
    assert data["review_by"] == "2027-03-04" and data["sources"][0]["commit"]


def test_a_catalogue_past_review_by_warns_and_never_fails(tmp_path: Path) -> None:
    write(tmp_path / "old.yaml", {
        "messenger": "old", "reviewed": "2020-01-01", "review_by": "2020-04-01",
        "sources": [{"url": "https://example.org/list", "date": "2020-01-01"}],
        "groups": {"g": {"endpoints": [{"name": "a.example.org"}], "steps": ["dns"]}}})
    config = write(tmp_path / "probe.yaml", {"vantage": {"name": "t"},
                                             "messengers": {"old": {"catalog": "old.yaml"}}})
    result = probe("check-config", str(config))
    assert result.returncode == 0
    assert ": ok (" in result.stdout
    assert re.fullmatch(r"probe: warning: catalogue '\S*old\.yaml' is past its review date "
                        r"\(2020-04-01; reviewed 2020-01-01\): diff its sources .*\n", result.stderr)
    # the shipped ones are not overdue today, and a date after review_by makes them so
    cfg = load_config(config)
    assert catalog.builtin("signal").overdue(dt.date(2027, 3, 5))
    assert not catalog.builtin("signal").overdue(dt.date(2027, 3, 4))
    assert freshness.catalogue_warnings(cfg, dt.date(2019, 1, 1)) == []


def test_an_unpinned_source_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "x.yaml", {"messenger": "x", "sources": [{"url": "https://example.org/"}],
                                "groups": {"g": {"endpoints": [{"name": "a"}], "steps": ["dns"]}}})
    config = write(tmp_path / "probe.yaml", {"vantage": {"name": "t"},
                                             "messengers": {"x": {"catalog": "x.yaml"}}})
    result = probe("check-config", str(config))
    assert result.returncode == 2
    assert "a source needs a commit or a date" in result.stderr


def test_signal_anchor_file_states_each_certificates_validity() -> None:
    """The `# valid:` lines of the shipped anchor file are the certificates' own dates."""
    path = freshness.bundled_anchor_files()["signal"]
    stated = re.findall(r"valid: (\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d)", path.read_text())
    found = freshness.anchors({"signal": path})
    assert [(a.not_before.date().isoformat(), a.not_after.date().isoformat()) for a in found] == stated
    assert len(found) == 2


def test_anchor_warning_90_days_ahead_unless_the_successor_is_shipped(tmp_path: Path) -> None:
    found = freshness.anchors(freshness.bundled_anchor_files())
    # the RSA root expires 2032-01-24, but the Ed25519 root (to 2036) is already shipped
    assert freshness.anchor_warnings(found, dt.datetime(2031, 12, 1, tzinfo=UTC)) == []
    # a file with only the RSA root: a warning 90 days ahead, none 91 days ahead
    only_rsa = tmp_path / "old.pem"
    text = freshness.bundled_anchor_files()["signal"].read_text()
    only_rsa.write_text(text[:text.index("-----END CERTIFICATE-----") + 26])
    old = freshness.anchors({"signal": only_rsa})
    assert len(old) == 1
    assert freshness.anchor_warnings(old, dt.datetime(2031, 10, 25, tzinfo=UTC)) == []
    (line,) = freshness.anchor_warnings(old, dt.datetime(2031, 11, 1, tzinfo=UTC))
    assert "trust anchor 'signal'" in line and "expires in 84 days (2032-01-24)" in line
    # and once the Ed25519 root nears its end, nothing newer exists: both say so
    late = freshness.anchor_warnings(found, dt.datetime(2036, 4, 1, tzinfo=UTC))
    assert [("expired" in x, "expires in 76 days (2036-06-16)" in x) for x in late] == [
        (True, False), (False, True)]


def test_probe_prefixes_says_where_each_list_came_from() -> None:
    result = probe("prefixes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("AS32934: 24 prefixes, NOT verified")
    assert "ipverse/asn-ip" in result.stdout and "18228f21255e9435071551c8d8bc77c1be8e9ee7" in result.stdout
    assert not prefixes.is_verified(prefixes.bundled_provenance(32934))
    assert not catalog.builtin("whatsapp").space_verified()


@pytest.mark.parametrize(("value", "verified"), [
    ("yes (RIPEstat's own answer for AS32934, 2026-12-01)", True), ("2026-12-01", True),
    ("no", False), ("no (hand-written)", False), ("", False)])
def test_verified_field(value: str, verified: bool) -> None:
    assert prefixes.is_verified(prefixes.provenance(f"# verified: {value}\n1.2.3.0/24\n")) is verified


@dataclass
class _Source:
    """What the status page reads of a running service, before its first round."""

    config: Any
    latest: Any = None
    round_listeners: list[Any] = field(default_factory=list)
    last_reload_error: str | None = None
    next_round_at: float | None = None


async def test_the_status_page_warns_of_a_catalogue_past_review(tmp_path: Path) -> None:
    write(tmp_path / "old.yaml", {
        "messenger": "old", "reviewed": "2020-01-01", "review_by": "2020-04-01",
        "sources": [{"url": "https://example.org/list", "date": "2020-01-01"}],
        "groups": {"g": {"endpoints": [{"name": "a.example.org"}], "steps": ["dns"]}}})
    config = load_config(write(tmp_path / "probe.yaml", {
        "vantage": {"name": "t"}, "messengers": {"old": {"catalog": "old.yaml"}}}))
    response = await StatusPage(_Source(config)).page(None)  # type: ignore[arg-type]
    banners = [re.sub(r"<[^>]+>", "", b) for b in
               re.findall(r"<div class='banner' role='alert'>(.*?)</div>", response.text)]
    assert len(banners) == 1, banners
    assert banners[0].startswith("Stale knowledge: catalogue ")
    assert "is past its review date (2020-04-01; reviewed 2020-01-01)" in banners[0]
    # the shipped catalogues are not past review: no banner
    fresh = load_config(write(tmp_path / "fresh.yaml", {"vantage": {"name": "t"},
                                                       "messengers": {"signal": {}}}))
    response = await StatusPage(_Source(fresh)).page(None)  # type: ignore[arg-type]
    assert "Stale knowledge" not in (response.text or "")
