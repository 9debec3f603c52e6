"""The lab's scenarios: censor rules (or a broken service) and the verdicts we expect.

Why one table: the tests assert from it and docs/lab-results.md is rendered from the test
run's record of it, so "what we claim the classifier does" exists exactly once.

Expectations are ordered (glob pattern over target names -> verdict) lists per vantage;
the first matching pattern wins. ``failures`` names failure strings that must appear in
the evidence of the verdicts of matching targets (the observations behind the verdict).
Target names follow docs/engine-contract.md: ``dc2-v4b:443``, ``web.telegram.org/v6``,
``e1.whatsapp.net/v4:5222``, ``web.whatsapp.com/v6``, ``chat.signal.org/v4``. Every
scenario covers Telegram, WhatsApp and Signal (tests/lab/plan.py: their lab hosts).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from probe.model.verdicts import BLOCKING_VERDICTS
from tests.lab import plan
from tests.lab.topology import Lab

Expect = tuple[tuple[str, str], ...]  # (glob, verdict), first match wins
Failures = tuple[tuple[str, tuple[str, ...]], ...]  # (glob, failure strings required)

ALL_OK: Expect = (("*", "ok"),)
DCS = "dc*"
#: every target of a name the probe resolves, all three messengers
DOMAINS = "*/v[46]*"
#: chat endpoints e1-e16 and the gateway g.whatsapp.net (DNS -> TCP; no TLS)
WA_CHAT = "[eg]*.whatsapp.net/*"
WA_CHAT_5222 = "[eg]*.whatsapp.net/*:5222"
WA_REGISTRATION = "v.whatsapp.net/*"
WA_WEB_HTTPS = "web.whatsapp.com/*"
WA_MEDIA = "mmg.whatsapp.net/*"
#: the web client's hosts share web.telegram.org's name as a suffix (an SNI match hits both)
TG_WEB = "*web.telegram.org/*"
SIGNAL_HOSTS = "*.signal.org/*"
SIGNAL_PINNED = ("chat.signal.org/*", "cdsi.signal.org/*", "svr2.signal.org/*")
#: Verdicts that only a censor produces (a real outage must never be reported as these).
CENSOR_ONLY = ("sni_filtering", "dns_injection", "tls_interception", "http_blockpage")
BLOCKS = tuple(sorted(BLOCKING_VERDICTS))


@dataclass(frozen=True)
class Scenario:
    """One lab scenario: what breaks, and which verdicts each vantage must report."""

    id: str
    title: str
    how: str  # what the lab does, in words (rendered into the docs)
    subject: Expect
    control: Expect = ALL_OK
    failures: Failures = ()
    isp_dns: dict[str, Any] | None = None
    censor: tuple[tuple[str, ...], ...] = ()
    outage: bool = False
    cut_uplink: bool = False
    #: verdicts that must appear for no target on either vantage
    forbidden: tuple[str, ...] = ()
    #: filled by the test when a classifier gap is known (reason), see test_scenarios.py
    notes: str = ""
    tags: tuple[str, ...] = field(default=())

    def expected(self, vantage: str, target: str) -> str:
        """The expected verdict of ``target`` on ``vantage``."""
        table = self.subject if vantage == plan.SUBJECT else self.control
        for pattern, verdict in table:
            if fnmatch.fnmatchcase(target, pattern):
                return verdict
        raise KeyError(f"{self.id}: no expectation for {vantage} {target}")

    def expected_failures(self, target: str) -> tuple[str, ...]:
        """Failure strings the subject's evidence for ``target`` must contain."""
        for pattern, strings in self.failures:
            if fnmatch.fnmatchcase(target, pattern):
                return strings
        return ()

    def describe(self, vantage: str) -> str:
        """The expectation in words, for the docs table."""
        table = self.subject if vantage == plan.SUBJECT else self.control
        return "; ".join(f"{p}: {v}" if p != "*" else f"rest: {v}" for p, v in table)


# ------------------------------------------------------------------------ censor rule helpers


def _tool(address: str) -> str:
    return "ip6tables" if plan.is_v6(address) else "iptables"


def drop_to(addresses: list[str]) -> tuple[tuple[str, ...], ...]:
    """Blackhole: the censor silently drops everything to these addresses."""
    sub = plan.SUBJECT_LINK.right_if
    return tuple((_tool(a), "-A", "FORWARD", "-i", sub, "-d", a, "-j", "DROP") for a in addresses)


def reset_to(addresses: list[str], port: int | None = None) -> tuple[tuple[str, ...], ...]:
    """Answer every TCP SYN to these addresses (on ``port`` only, if given) with an RST
    (REJECT --reject-with tcp-reset)."""
    sub = plan.SUBJECT_LINK.right_if
    dport = ("--dport", str(port)) if port is not None else ()
    return tuple(
        (_tool(a), "-A", "FORWARD", "-i", sub, "-p", "tcp", "-d", a, *dport,
         "-j", "REJECT", "--reject-with", "tcp-reset")
        for a in addresses
    )  # fmt: skip


def sni_filter(name: str, action: tuple[str, ...], *more: str) -> tuple[tuple[str, ...], ...]:
    """Match the service's name (or any of ``more``) in the ClientHello (port 443) and
    apply ``action``."""
    sub = plan.SUBJECT_LINK.right_if
    return tuple(
        (tool, "-A", "FORWARD", "-i", sub, "-p", "tcp", "--dport", "443",
         "-m", "string", "--algo", "bm", "--string", string, *action)
        for string in (name, *more)
        for tool in ("iptables", "ip6tables")
    )  # fmt: skip


DCS_V4_NET = "198.18.64.0/21"
DCS_V6_NET = "2001:db8:64::/61"


def dnat_fronts(port: int, to: tuple[str, str]) -> tuple[tuple[str, ...], ...]:
    """Redirect the subject's connections to the web fronts' ``port`` (every messenger's)
    to a censor server."""
    sub = plan.SUBJECT_LINK.right_if
    rules: list[tuple[str, ...]] = []
    for v4_net, v6_net in plan.WEB_NETS:
        rules += [
            ("iptables", "-t", "nat", "-A", "PREROUTING", "-i", sub, "-p", "tcp",
             "-d", v4_net, "--dport", str(port), "-j", "DNAT",
             "--to-destination", f"{to[0]}:{port}"),
            ("ip6tables", "-t", "nat", "-A", "PREROUTING", "-i", sub, "-p", "tcp",
             "-d", v6_net, "--dport", str(port), "-j", "DNAT",
             "--to-destination", f"[{to[1]}]:{port}"),
        ]  # fmt: skip
    return tuple(rules)


def protocol_filter() -> tuple[tuple[str, ...], ...]:
    """Iran-2020-style filter: a client packet carrying the MTProto intermediate tag to a DC
    port is dropped, and so is every later client packet of that connection (connmark).
    TCP handshakes and plain HTTP to the same address pass."""
    sub = plan.SUBJECT_LINK.right_if
    rules: list[tuple[str, ...]] = []
    for tool, net in (("iptables", DCS_V4_NET), ("ip6tables", DCS_V6_NET)):
        rules += [
            (tool, "-A", "FORWARD", "-i", sub, "-m", "connmark", "--mark", "0x1", "-j", "DROP"),
            (tool, "-A", "FORWARD", "-i", sub, "-p", "tcp", "-d", net,
             "-m", "multiport", "--dports", "80,443",
             "-m", "string", "--algo", "bm", "--hex-string", "|eeeeeeee|",
             "-j", "CONNMARK", "--set-mark", "0x1"),
            (tool, "-A", "FORWARD", "-i", sub, "-m", "connmark", "--mark", "0x1", "-j", "DROP"),
        ]  # fmt: skip
    return tuple(rules)


def throttle(rate: str = "100kbit") -> tuple[tuple[str, ...], ...]:
    """tc on the censor's subject-facing link: traffic from each web-front address is shaped
    to ``rate`` (an htb class with a tbf leaf per address, like TSPU's per-connection
    throttling by SNI); the DCs and everything else are untouched."""
    dev = plan.SUBJECT_LINK.right_if
    rules: list[tuple[str, ...]] = [
        ("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10"),
        ("tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
         "rate", "10gbit"),
    ]  # fmt: skip
    for i, address in enumerate(plan.front_addresses(), start=20):
        v6 = plan.is_v6(address)
        rules += [
            ("tc", "class", "add", "dev", dev, "parent", "1:", "classid", f"1:{i}", "htb",
             "rate", rate, "ceil", rate),
            ("tc", "qdisc", "add", "dev", dev, "parent", f"1:{i}", "handle", f"{i}:", "tbf",
             "rate", rate, "burst", "16kb", "latency", "1s"),
            ("tc", "filter", "add", "dev", dev, "parent", "1:", "protocol",
             "ipv6" if v6 else "ip", "prio", "2" if v6 else "1", "u32", "match",
             "ip6" if v6 else "ip", "src", f"{address}/{128 if v6 else 32}", "flowid", f"1:{i}"),
        ]  # fmt: skip
    return tuple(rules)


FORGED_PLAUSIBLE = {"A": [plan.DECOY[0]], "AAAA": [plan.DECOY[1]]}
def _names(behaviour: str) -> dict[str, str]:
    """The ISP resolver's behaviour for every service name, all three messengers."""
    return {name: behaviour for name in plan.SERVICE_NAMES}


# ------------------------------------------------------------------------ the table

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "01-nothing-blocked",
        "Nothing blocked",
        "no censor rules; every lab server up",
        subject=ALL_OK,
    ),
    Scenario(
        "02-iran-2015",
        "Iran 2015 replay",
        "ISP resolver answers 10.10.34.34 / d0::11 for every service name (Telegram, "
        "WhatsApp, Signal); the censor drops all traffic to the DC addresses",
        subject=((DCS, "ip_blocking"), (DOMAINS, "dns_injection")),
        failures=((DCS, ("generic_timeout_error",)), (DOMAINS, ("dns_bogon_error",))),
        isp_dns={"behaviours": _names("bogon")},
        censor=drop_to(plan.dc_addresses()),
    ),
    Scenario(
        "03-dns-injection-plausible",
        "DNS injection, plausible address",
        f"ISP resolver answers {plan.DECOY[0]} / {plan.DECOY[1]} (public-looking, outside "
        "the service's address space; TLS there has another name's certificate)",
        subject=((DCS, "ok"), (DOMAINS, "dns_injection")),
        failures=(
            # WhatsApp chat (dns -> tcp): :5222 refused at the decoy; :443 connects there, and
            # the answer outside AS32934's space that no control gave is what convicts it
            (WA_CHAT_5222, ("connection_refused",)),
            (WA_CHAT, ()),
            # Signal has no address space: the pinned CA refuses the decoy's certificate
            *((glob, ("ssl_unknown_authority",)) for glob in SIGNAL_PINNED),
            (DOMAINS, ("ssl_invalid_hostname",)),
        ),
        isp_dns={"behaviours": _names("bogon"), "forged": FORGED_PLAUSIBLE},
    ),
    Scenario(
        "04-dns-race",
        "On-path DNS injection race",
        "ISP resolver sends a forged answer (the decoy) at once and the real answer 0.1 s "
        "later to the same query",
        subject=((DCS, "ok"), (DOMAINS, "dns_injection")),
        isp_dns={"behaviours": _names("race"), "forged": FORGED_PLAUSIBLE, "race_delay": 0.1},
    ),
    Scenario(
        "05a-dns-nxdomain",
        "DNS blocking: NXDOMAIN",
        "ISP resolver answers NXDOMAIN for the service's names; control resolver works",
        subject=((DCS, "ok"), (DOMAINS, "dns_blocking")),
        failures=((DOMAINS, ("dns_nxdomain_error",)),),
        isp_dns={"behaviours": _names("nxdomain")},
    ),
    Scenario(
        "05b-dns-servfail",
        "DNS blocking: SERVFAIL",
        "ISP resolver answers SERVFAIL for the service's names; control resolver works",
        subject=((DCS, "ok"), (DOMAINS, "dns_blocking")),
        failures=((DOMAINS, ("dns_servfail_error",)),),
        isp_dns={"behaviours": _names("servfail")},
    ),
    Scenario(
        "05c-dns-silent",
        "DNS blocking: no answer",
        "ISP resolver never answers queries for the service's names; control resolver works",
        subject=((DCS, "ok"), (DOMAINS, "dns_blocking")),
        failures=((DOMAINS, ("generic_timeout_error",)),),
        isp_dns={"behaviours": _names("silent")},
    ),
    Scenario(
        "06-partial-dc-blackhole",
        "Partial blocking: two DCs blackholed",
        "the censor drops traffic to DC2 (both IPv4 addresses and IPv6) and DC4, WhatsApp's "
        "e2 and Signal's cdn2 only",
        subject=(("dc2-*", "ip_blocking"), ("dc4-*", "ip_blocking"),
                 ("e2.whatsapp.net/*", "ip_blocking"), ("cdn2.signal.org/*", "ip_blocking"),
                 ("*", "ok")),
        failures=tuple((glob, ("generic_timeout_error",))
                       for glob in ("dc2-*", "dc4-*", "e2.whatsapp.net/*", "cdn2.signal.org/*")),
        censor=drop_to([*plan.dc_addresses(("dc2", "dc4")),  # dc2-media, dc4-media too
                        *plan.addresses(plan.WHATSAPP_CHAT[1:2]),
                        *plan.addresses(plan.SIGNAL_LAB_CA[2:3])]),
    ),
    Scenario(
        "07-tcp-reset",
        "TCP reset at connect",
        "the censor answers SYNs to the DC addresses, and to WhatsApp's chat endpoints and "
        "gateway on 5222 (not 443), with RST (REJECT --reject-with tcp-reset)",
        subject=((DCS, "tcp_reset"), (WA_CHAT_5222, "tcp_reset"), ("*", "ok")),
        failures=((DCS, ("connection_refused",)), (WA_CHAT_5222, ("connection_refused",))),
        censor=(*reset_to(plan.dc_addresses()),
                *reset_to(plan.addresses((*plan.WHATSAPP_CHAT, plan.WHATSAPP_GATEWAY)),
                          port=5222)),
    ),
    Scenario(
        "08a-sni-reset",
        "SNI filtering by reset",
        "iptables string match on 'web.telegram.org' or 'signal.org' in the ClientHello "
        "(port 443): RST; the same address with a neutral SNI works (the web client's "
        "hosts, *.web.telegram.org, match too)",
        subject=((TG_WEB, "sni_filtering"), (SIGNAL_HOSTS, "sni_filtering"),
                 ("*", "ok")),
        failures=((TG_WEB, ("connection_reset",)),
                  (SIGNAL_HOSTS, ("connection_reset",))),
        censor=sni_filter("web.telegram.org", ("-j", "REJECT", "--reject-with", "tcp-reset"),
                          "signal.org"),
    ),
    Scenario(
        "08b-sni-drop",
        "SNI filtering by drop",
        "iptables string match on 'web.telegram.org' or 'whatsapp' in the ClientHello (port "
        "443): silently dropped; the same address with a neutral SNI works (WhatsApp's chat "
        "endpoints and gateway send no ClientHello)",
        subject=((TG_WEB, "sni_filtering"), (WA_REGISTRATION, "sni_filtering"),
                 (WA_WEB_HTTPS, "sni_filtering"), (WA_MEDIA, "sni_filtering"), ("*", "ok")),
        failures=tuple((glob, ("generic_timeout_error",))
                       for glob in (TG_WEB, WA_REGISTRATION, WA_WEB_HTTPS, WA_MEDIA)),
        censor=sni_filter("web.telegram.org", ("-j", "DROP"), "whatsapp"),
    ),
    Scenario(
        "09-tls-interception",
        "TLS interception",
        "the censor DNATs :443 of every service's web fronts to its own TLS server "
        "(certificates for the right names from the censor's CA)",
        subject=((DCS, "ok"), (WA_CHAT, "ok"), (DOMAINS, "tls_interception")),
        failures=((DOMAINS, ("ssl_unknown_authority",)),),
        censor=dnat_fronts(443, plan.CENSOR_TLS),
    ),
    Scenario(
        "10-protocol-filter",
        "MTProto plain-transport filtering",
        "the censor drops a client packet carrying the plain MTProto tag 0xeeeeeeee to DC "
        "ports 80/443 and every later client packet of that connection; TCP, HTTP and the "
        "apps' obfuscated2 transport pass: the apps work (rule mtproto_plain_only_filtered)",
        subject=ALL_OK,
        censor=protocol_filter(),
    ),
    Scenario(
        "11-http-blockpage",
        "HTTP blockpage",
        "the censor DNATs :80 of every service's web fronts to its blockpage server (Iran's "
        "403 iframe to 10.10.34.34); telegram.org has a plain-http URL",
        subject=(("telegram.org/*", "http_blockpage"), ("*", "ok")),
        failures=(("telegram.org/*", ("http_unexpected_status",)),),
        censor=dnat_fronts(80, plan.CENSOR_BLOCKPAGE),
    ),
    Scenario(
        "12-throttling",
        "Throttling",
        "tc (htb + tbf) on the censor shapes traffic from each Telegram web-front address to "
        "100 kbit/s; DCs, the other messengers and the baseline transfer are untouched",
        subject=(("telegram.org/*", "throttling"), ("web.telegram.org/*", "throttling"), ("*", "ok")),
        censor=throttle(),
    ),
    Scenario(
        "13-service-outage",
        "Service outage",
        "the lab services themselves are down (every messenger's servers stopped; DNS still "
        "answers): both vantages fail alike",
        subject=(("*", "tcp_reset"),),
        control=(("*", "tcp_reset"),),
        failures=(("*", ("connection_refused",)),),
        outage=True,
        forbidden=CENSOR_ONLY,
    ),
    Scenario(
        "14-vantage-offline",
        "Subject uplink cut",
        "the subject's access link is down: its own network fails, baseline included",
        subject=(("*", "vantage_offline"),),
        failures=(("*", ("network_unreachable",)),),
        cut_uplink=True,
        forbidden=BLOCKS,
    ),
)


def scenario_by_id(sid: str) -> Scenario:
    """Look up a scenario by its id."""
    for s in SCENARIOS:
        if s.id == sid:
            return s
    raise KeyError(sid)


def apply_scenario(lab: Lab, scenario: Scenario) -> None:
    """Make the lab break the way ``scenario`` says (call after ``lab.reset()``)."""
    if scenario.isp_dns:
        lab.set_isp_dns(scenario.isp_dns)
    lab.censor(scenario.censor)
    if scenario.outage:
        lab.stop_service()
    if scenario.cut_uplink:
        lab.cut_subject_uplink()
