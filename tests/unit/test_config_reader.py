"""The config reader builds a document from the YAML parser's events (no node tree: a
10,000-site config peaked at +34 MB composing one) and must read every document exactly as
the composing loader does; what it does not handle it hands to that loader, errors
included. And a round's TLS contexts are made once per trust name and files, not per round."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from probe.inputs.yamlfile import _Fallback, _FastLoader, _load_events, load_yaml
from probe.measure.checks.base import TrustStore

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = [
    "", "---\n", "a: 1\n", "- 1\n- two\n",
    "a: 1\nb: [1, 2.5, true, null, ~, 2001-12-14, !!str 5, '07', 0x1f, .inf, -.5e3, yes]\n",
    "{a: {b: {c: [1, {d: e}]}}}\n", "a: |\n  text\n  more\nb: >\n  folded\n",
    "2: x\ntrue: y\nnull: z\n1.5: w\n", "a:\n- b\n- c: d\n  e: f\n", "a: !!binary aGVsbG8=\n",
    "t: 2001-12-14t21:59:43.10-05:00\n", "1: a\n01: b\n", "a: []\nb: {}\n", "!!map {a: 1}\n",
]
FALLBACK = [
    "a: 1\na: 2\n", "x: &a 1\ny: *a\n", "base: &b {a: 1}\nc:\n  <<: *b\n", "<<: {a: 1}\n",
    "? [1]\n: 2\n", "a: !!map x\n", "- 1\n---\n- 2\n", "a: [\n", "a: !foo 1\n",
    "a: !!set {x}\n",
]


def _reference(text: str) -> tuple[str, object]:
    try:
        return "ok", yaml.load(text, Loader=_FastLoader)
    except Exception as exc:
        return "error", type(exc)


def _files() -> list[Path]:
    return sorted(p for pattern in ("configs/**/*.yaml", "probe/data/**/*.yaml", "tests/**/*.yaml")
                  for p in ROOT.glob(pattern))


@pytest.mark.parametrize("text", SAMPLES)
def test_events_read_a_document_as_the_loader_does(text: str) -> None:
    got = _load_events(text)
    assert ("ok", got) == _reference(text)
    assert repr(got) == repr(_reference(text)[1])  # types too (1 is not True, 1.0 not 1)


@pytest.mark.parametrize("text", FALLBACK)
def test_what_the_events_do_not_handle_the_loader_reads(text: str) -> None:
    with pytest.raises(_Fallback):
        _load_events(text)
    expected = _reference(text)
    if expected[0] == "ok":
        assert load_yaml(text) == expected[1]
    else:
        with pytest.raises(expected[1]):  # type: ignore[arg-type]
            load_yaml(text)


def test_every_shipped_config_and_catalogue_reads_the_same() -> None:
    files = _files()
    assert len(files) > 10
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if _reference(text)[0] == "ok":
            assert repr(load_yaml(text)) == repr(_reference(text)[1]), path


def test_a_context_is_made_once_per_trust_name_and_files(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    first = TrustStore(ca_file, {}).context("system")
    assert TrustStore(ca_file, {}).context("system") is first  # the next round's store
    assert TrustStore(None, {}).context("system") is not first  # other files
    trustme.CA().cert_pem.write_to_path(str(ca_file))  # the operator replaced the CA file
    again = TrustStore(ca_file, {}).context("system")
    assert again is not first
    assert len(again.get_ca_certs()) == len(first.get_ca_certs())
