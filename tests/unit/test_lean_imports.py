"""A round loads only what it uses: the HTTP client (aiohttp) and the terminal table library
(rich) are several MB of resident memory each, and a round without HTTP steps or DoH
resolvers uses neither, and cryptography is loaded by the first WhatsApp Noise handshake
or MTProxy's AES, not before (docs/benchmark.md, memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "rich", "cryptography")


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return set(out.split())


def test_a_round_and_its_sinks_do_not_load_the_http_client_rich_or_cryptography() -> None:
    loaded = _loaded_after(
        "from probe.inputs.config import load_config\n"
        "from probe.measure.round import Round\n"
        "from probe.judge.classify import classify_round\n"
        "from probe.sinks.metrics import Metrics\n"
        "from probe.sinks.evidence import EvidenceLog\n"
        "from probe.sinks.report import round_json\n")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_dnspython_is_loaded_by_the_dns_check_only() -> None:
    """dnspython is ~6 MB resident: a round of fixed addresses (no DNS step, no system
    resolvers) never loads it; the DNS check does, and classifies its exceptions."""
    assert "dns" not in _loaded_after(
        "from probe.measure.round import Round\n"
        "from probe.model import failures\n"
        "assert failures.classify(TimeoutError()) == failures.GENERIC_TIMEOUT\n"
        "assert failures.rcode_failure(3) == failures.DNS_NXDOMAIN\n")
    assert "dns" in _loaded_after(
        "import asyncio, dns.exception, dns.rcode, dns.resolver\n"
        "from probe.measure.checks import dns as check\n"
        "from probe.model import failures\n"
        "check.system_resolvers('/nonexistent/resolv.conf')\n"
        "assert failures.classify(dns.exception.Timeout()) == failures.GENERIC_TIMEOUT\n"
        "assert failures.classify(dns.resolver.NXDOMAIN()) == failures.DNS_NXDOMAIN\n"
        "assert failures.classify(dns.resolver.NoAnswer()) == failures.DNS_NO_ANSWER\n"
        "assert all(failures.rcode_failure(getattr(dns.rcode, n)) == f for n, f in ("
        "('NXDOMAIN', failures.DNS_NXDOMAIN), ('SERVFAIL', failures.DNS_SERVFAIL), "
        "('REFUSED', failures.DNS_REFUSED)))\n")


def test_the_checks_that_need_them_still_load_them() -> None:
    loaded = _loaded_after(
        "from probe.measure.checks.http import PinnedResolver\n"
        "from probe.measure.wire.obfs2 import ObfuscatedInit\n"
        "PinnedResolver('192.0.2.1')\n"
        "ObfuscatedInit.make(b'\\xee\\xee\\xee\\xee', 2)\n"
        "from probe.measure.checks import noise\n"
        "noise.wire.PROLOGUE\n"
        "from probe.sinks.report import make_console\n"
        "make_console()\n")
    assert set(HEAVY) <= loaded
