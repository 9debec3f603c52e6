"""Probe configs for the lab's two vantages (docs/engine-contract.md schema).

Why generated: every address of the catalogue (DCs, domains, address space, resolvers,
baseline, CA) must point at lab hosts, and the plan in tests/lab/plan.py is the one truth.
The probe runs unchanged, configured only through its normal config file — the same path
a private deployment uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.lab import plan

#: Short timeouts: every scenario (two vantages, ~32 targets each) should take seconds.
TIMEOUTS = {"dns": 1.5, "connect": 2.0, "tls": 2.0, "mtproto": 2.0, "http": 6.0}


def telegram_overrides() -> dict[str, Any]:
    """The Telegram catalogue, replaced by lab addresses (the real names, lab answers)."""
    return {
        "datacenters": [
            {"name": dc.name, "addresses": list(dc.addresses), "location": "lab"} for dc in plan.DCS
        ],
        "domains": [{"name": f.name, **({"url": f.url} if f.url else {})} for f in plan.FRONTS],
        "ports": list(plan.DC_PORTS),
        # the media-only DCs on DC2's and DC4's lab servers (never Telegram's addresses)
        "groups": {"media": {"endpoints": [
            {"name": media, "addresses": [a for d in plan.DCS if d.name == dc
                                          for a in (d.v4[0], d.v6)]}
            for media, dc in plan.MEDIA_DCS], "ports": list(plan.DC_PORTS)}},
        "address_space": list(plan.ADDRESS_SPACE),
        "neutral_sni": plan.NEUTRAL_SNI,
    }


def whatsapp_overrides() -> dict[str, Any]:
    """WhatsApp's catalogue as it is (the real names, answered with lab addresses by the
    lab resolvers); only its address space (AS32934's prefixes) becomes the lab's."""
    return {"address_space": list(plan.WHATSAPP_SPACE), "neutral_sni": plan.NEUTRAL_SNI}


def signal_overrides() -> dict[str, Any]:
    """Signal's catalogue as it is: no address space (Signal publishes none), per-host trust
    from the catalogue; the `signal` anchor is the lab's Signal CA (``tls.trust``)."""
    return {"neutral_sni": plan.NEUTRAL_SNI}


def domestic_site() -> list[dict[str, Any]]:
    """The lab's domestic site as `kind: domestic` baseline sites, one per family
    (tests/lab/plan.py DOMESTIC_SITE): for the scenarios that need the subject's own
    country's network to answer while everything abroad fails (a shutdown)."""
    return [{"name": f"lab-domestic{suffix}", "address": address, "port": 443,
             "sni": plan.DOMESTIC_SITE_NAME, "kind": "domestic"}
            for suffix, address in zip(("", "-v6"), plan.DOMESTIC_SITE, strict=True)]


OVERRIDES = {"telegram": telegram_overrides, "whatsapp": whatsapp_overrides,
             "signal": signal_overrides}


def probe_config(vantage: str, workdir: Path, ca_file: Path,
                 messengers: tuple[str, ...] = ("telegram",)) -> dict[str, Any]:
    """The config for ``subject`` or ``control``.

    The subject's system resolver is the ISP resolver inside the censor (the censor can
    tamper with it); both vantages also ask the untampered control resolver.
    """
    subject = vantage == plan.SUBJECT
    return {
        "vantage": {
            "name": f"lab-{vantage}",
            "country": "IR" if subject else "NL",
            "asn": 64500 if subject else 64501,
            "network": "lab ISP behind the censor" if subject else "lab control network",
            "role": "subject" if subject else "control",
        },
        "messengers": {name: OVERRIDES[name]() for name in messengers},
        "resolvers": {
            "system": True,
            "resolv_conf": str(workdir / f"{vantage}-resolv.conf"),
            "servers": [],
            "control": [
                {"name": "lab-control", "address": plan.CONTROL_RESOLVER[0], "protocol": "udp"},
                # authenticated: proves the vantage online when the baseline is blocked
                {"name": "lab-doh", "url": f"https://{plan.CONTROL_DOH[0]}/dns-query"},
                {"name": "lab-doh-v6", "url": f"https://[{plan.CONTROL_DOH[1]}]/dns-query"},
            ],
            "race_window": 0.3,
            # 198.18.0.0/15 and 2001:db8::/32 are reserved, but in the lab they are the
            # "public internet": judge answers there by the address-space check instead.
            "public_networks": ["198.18.0.0/15", "2001:db8::/32"],
        },
        "baseline": {
            "targets": [
                {
                    "name": "lab-baseline",
                    "address": plan.BASELINE[0],
                    "port": 443,
                    "sni": plan.BASELINE_NAME,
                },
                {
                    "name": "lab-baseline-v6",
                    "address": plan.BASELINE[1],
                    "port": 443,
                    "sni": plan.BASELINE_NAME,
                },
            ],
            "throughput_url": f"http://{plan.BASELINE[0]}/blob",
            # one site per family: 40 handshakes each make the loss comparison's sample
            "samples": 40,
        },
        "schedule": {"interval": 60, "jitter": 0, "concurrency": 64, "timeouts": TIMEOUTS,
                     "confirm": {"attempts": 4, "spacing": 0.5}},
        "tls": {"ca_file": str(ca_file),
                # Signal's own CA in the lab (tests/lab/topology.py makes it): the pinned anchor
                # and WhatsApp's Noise root: the lab chat servers' test root (topology writes it)
                "trust": {**({"signal": str(workdir / "signal-ca" / "ca.pem")}
                             if "signal" in messengers else {}),
                          **({"whatsapp": str(workdir / "whatsapp-root.pem")}
                             if "whatsapp" in messengers else {})}},
        "http": {"max_bytes": 1 << 20, "transfer_seconds": 2},
        "evidence": {"directory": None},
        # A lab vantage is a server on a lab link: no traffic budget (the "unlimited on a
        # server" case of probe.serve.schedule). The lab's 1-2 s rounds would otherwise spend
        # the default 30 MB a day's hour-sized bucket within minutes and shed work, and the
        # lab tests are about classification, not the budget.
        "budget": {"bytes_per_day": "unlimited"},
    }
