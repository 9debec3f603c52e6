"""The lab's address plan: every namespace, link, host and name in one place.

Why one module: the topology builder, the probe configs, the scenarios' censor rules and
docs/lab.md all talk about the same addresses; defining them once keeps a scenario's
iptables rule and the probe's catalogue override from silently drifting apart.

Only 198.18.0.0/15 (RFC 2544 benchmarking) and 2001:db8::/32 (documentation) are used, so
nothing here can collide with a real host, let alone a real Telegram address.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Namespaces (their roles), in creation order. These names are the keys everywhere (probe
#: results, records, configs); the namespace on the machine is ``netns(name)``.
SUBJECT, CENSOR, INTERNET, CONTROL = "subject", "censor", "internet", "control"
NAMESPACES = (SUBJECT, CENSOR, INTERNET, CONTROL)


def _instance() -> int:
    raw = os.environ.get("REACH_LAB_INSTANCE", "0") or "0"
    if not raw.isdigit() or not 0 <= int(raw) <= 9:
        raise SystemExit(f"REACH_LAB_INSTANCE must be a digit 0-9, not {raw!r}")
    return int(raw)


#: Which lab this process builds (REACH_LAB_INSTANCE, 0-9). Several labs can run side by side
#: on one machine: inside the namespaces every address is private to the lab, so only what
#: lives in the root namespace must differ per instance: namespace names, management veths
#: and their subnet, the working directory and the lock. Instance 0 (the default) keeps the
#: plain names developers type (`ip netns exec subject`); instance N prefixes them "labN-".
INSTANCE = _instance()
PREFIX = f"lab{INSTANCE}-" if INSTANCE else ""


def netns(name: str) -> str:
    """The namespace on this machine for a lab role (``subject`` -> ``lab2-subject``)."""
    return name if not PREFIX or name.startswith(PREFIX) else PREFIX + name


#: The namespaces' names on this machine (what `ip netns list` shows for this instance).
NETNS = tuple(netns(n) for n in NAMESPACES)


@dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces, with both ends' addresses (v4 /24, v6 /64)."""

    left_ns: str
    left_if: str
    right_ns: str
    right_if: str
    v4_net: str  # "198.18.10" -> .2 left, .1 right
    v6_net: str  # "2001:db8:10" -> ::2 left, ::1 right

    def left4(self) -> str:
        return f"{self.v4_net}.2"

    def right4(self) -> str:
        return f"{self.v4_net}.1"

    def left6(self) -> str:
        return f"{self.v6_net}::2"

    def right6(self) -> str:
        return f"{self.v6_net}::1"


#: subject <-> censor (the subject's access link; the censor is its only way out)
SUBJECT_LINK = Link(SUBJECT, "up0", CENSOR, "sub0", "198.18.10", "2001:db8:10")
#: censor <-> internet (the censored country's international gateway)
CENSOR_LINK = Link(CENSOR, "up0", INTERNET, "cen0", "198.18.11", "2001:db8:11")
#: control <-> internet (outside vantage; never passes the censor)
CONTROL_LINK = Link(CONTROL, "up0", INTERNET, "ctl0", "198.18.12", "2001:db8:12")
LINKS = (SUBJECT_LINK, CENSOR_LINK, CONTROL_LINK)

# ------------------------------------------------------------------ hosts inside the censor
#: The subject's ISP resolver (its "system" resolver): behind, and run by, the censor.
ISP_RESOLVER = ("198.18.1.53", "2001:db8:1::53")
#: The censor's blockpage server (plain HTTP, Iran's 403 iframe page).
CENSOR_BLOCKPAGE = ("198.18.1.80", "2001:db8:1::80")
#: The censor's TLS-intercepting server (certificates from the censor's own CA).
CENSOR_TLS = ("198.18.1.43", "2001:db8:1::43")
#: A domestic site (issue 19): one of the country's large sites (a bank, a marketplace),
#: hosted inside the country, on this side of the international gateway: TLS :443 with a
#: lab-CA certificate for DOMESTIC_SITE_NAME. A shutdown with a domestic whitelist leaves it
#: answering. Only scenarios that configure it (a `kind: domestic` baseline site) use it.
DOMESTIC_SITE = ("198.18.1.44", "2001:db8:1::44")
DOMESTIC_SITE_NAME = "bank.reach-lab.example"
CENSOR_HOSTS = (*ISP_RESOLVER, *CENSOR_BLOCKPAGE, *CENSOR_TLS, *DOMESTIC_SITE)
CENSOR_HOST_NETS = ("198.18.1.0/24", "2001:db8:1::/48")

# ------------------------------------------------------------------ hosts on the internet side
#: Control resolver (untampered), reachable from both vantages.
CONTROL_RESOLVER = ("198.18.3.53", "2001:db8:3::53")
#: The control vantage's own ISP resolver (also untampered).
CONTROL_ISP_RESOLVER = ("198.18.3.54", "2001:db8:3::54")
#: A DNS-over-HTTPS control (lab CA, named by address): its authenticated answers prove a
#: vantage online when a censor blocks the baseline (issue 14).
CONTROL_DOH = ("198.18.3.43", "2001:db8:3::43")
#: Baseline site: unrelated to the service; HTTP :80 with /blob, TLS :443.
BASELINE = ("198.18.2.10", "2001:db8:2::10")
BASELINE_NAME = "baseline.reach-lab.example"
BASELINE_BLOB_BYTES = 4_000_000
#: A plausible, public-looking host that is not the service's (scenario 3's forged answer):
#: outside the service's address space, serving TLS with a certificate for another name.
DECOY = ("198.18.200.5", "2001:db8:200::5")

#: The service's address space (what the probe config declares as the service's).
ADDRESS_SPACE = ("198.18.64.0/20", "2001:db8:64::/48")
#: Names the lab resolvers answer with lab addresses; the probe config's domain list.
NEUTRAL_SNI = "neutral.reach-lab.example"
#: Size of the body the service's web fronts serve (throughput measurement).
FRONT_BODY_BYTES = 1_500_000
#: Every lab web server paces bodies to this rate per connection: the "path bottleneck".
#: Without it, transfers over veths run at CPU speed and throughput comparisons are noise.
PATH_RATE_BPS = 40_000_000


@dataclass(frozen=True)
class DC:
    """A lab data centre: one or more IPv4 addresses and one IPv6 address."""

    name: str
    v4: tuple[str, ...]
    v6: str

    @property
    def addresses(self) -> tuple[str, ...]:
        return (*self.v4, self.v6)


DCS = (
    DC("dc1", ("198.18.64.1",), "2001:db8:64:1::a"),
    DC("dc2", ("198.18.65.2", "198.18.65.3"), "2001:db8:64:2::a"),
    DC("dc3", ("198.18.66.3",), "2001:db8:64:3::a"),
    DC("dc4", ("198.18.67.4",), "2001:db8:64:4::a"),
    DC("dc5", ("198.18.68.5",), "2001:db8:64:5::a"),
)
DC_PORTS = (443, 80)


@dataclass(frozen=True)
class Front:
    """A web front of the service: a domain, its lab addresses, and an optional URL."""

    name: str
    v4: str
    v6: str
    url: str | None = None


FRONTS = (
    Front("telegram.org", "198.18.72.10", "2001:db8:64:48::10", "http://telegram.org/"),
    Front("web.telegram.org", "198.18.72.11", "2001:db8:64:48::11", "https://web.telegram.org/"),
    Front("t.me", "198.18.72.12", "2001:db8:64:48::12"),
    Front("api.telegram.org", "198.18.72.13", "2001:db8:64:48::13"),
    Front("core.telegram.org", "198.18.72.14", "2001:db8:64:48::14"),
)
FRONT_NAMES = tuple(f.name for f in FRONTS)
#: The web client's per-DC WebSocket hosts (the catalogue's `web_client` group): TLS fronts
#: from the lab CA beside the other Telegram fronts.
TELEGRAM_WEB_CLIENT = tuple(
    Front(f"{n}.web.telegram.org", f"198.18.72.{20 + i}", f"2001:db8:64:48::{20 + i}")
    for i, n in enumerate(("pluto", "venus", "aurora", "vesta", "flora")))
#: The media-only DCs (the catalogue's `media` group) live on DC2's and DC4's lab servers:
#: the same MTProto listeners, so a rule against DC2 hits dc2-media too, as in reality.
MEDIA_DCS = (("dc2-media", "dc2"), ("dc4-media", "dc4"))


# ------------------------------------------------------------------ WhatsApp and Signal
#: The messengers the scenario tests probe (the fleet and status-page tests keep Telegram).
MESSENGERS = ("telegram", "whatsapp", "signal")
#: WhatsApp's lab address space: what AS32934's prefixes are in the real catalogue.
WHATSAPP_SPACE = ("198.18.80.0/20", "2001:db8:80::/48")
#: Chat endpoints e1-e16: the lab's WhatsApp Noise responder on 443 and 5222 each, its
#: certificate chain from the lab's test root (tests.support.noiseserver).
WHATSAPP_CHAT = tuple(Front(f"e{i}.whatsapp.net", f"198.18.80.{i}", f"2001:db8:80::{i:x}")
                      for i in range(1, 17))
WHATSAPP_CHAT_PORTS = (443, 5222)
#: The chat gateway g.whatsapp.net (DNS -> TCP -> Noise on 5222, 443 and 80): the same Noise
#: responder, in WhatsApp's space but outside WHATSAPP_CHAT_NETS (the chat endpoints' own
#: net, which the Noise censor scenarios target).
WHATSAPP_GATEWAY = Front("g.whatsapp.net", "198.18.82.17", "2001:db8:80:82::17")
WHATSAPP_GATEWAY_PORTS = (5222, 443, 80)
#: Registration and WhatsApp Web: TLS :443 from the lab CA (public CAs in reality);
#: web.whatsapp.com also on :80, redirecting to https.
WHATSAPP_FRONTS = (
    Front("v.whatsapp.net", "198.18.81.10", "2001:db8:80:81::10"),
    Front("web.whatsapp.com", "198.18.81.11", "2001:db8:80:81::11"),
    Front("mmg.whatsapp.net", "198.18.81.12", "2001:db8:80:81::12"),
)
WHATSAPP_WEB = WHATSAPP_FRONTS[1]
#: Signal's hosts; no address space in the config (Signal publishes none). Certificates of
#: the chat service (and of sfu.voip) come from a separate lab "Signal" CA, the pinned
#: `signal` anchor of the lab config; the cloud-fronted ones from the lab CA (`system`).
SIGNAL_PINNED_CA = (
    Front("chat.signal.org", "198.18.96.10", "2001:db8:96::10"),
    Front("sfu.voip.signal.org", "198.18.96.15", "2001:db8:96::15"),
    Front("cdsi.signal.org", "198.18.96.16", "2001:db8:96::16"),
    Front("svr2.signal.org", "198.18.96.17", "2001:db8:96::17"),
)
SIGNAL_LAB_CA = (
    Front("storage.signal.org", "198.18.96.12", "2001:db8:96::12"),
    Front("cdn.signal.org", "198.18.96.13", "2001:db8:96::13"),
    Front("cdn2.signal.org", "198.18.96.14", "2001:db8:96::14"),
    Front("cdn3.signal.org", "198.18.96.18", "2001:db8:96::18"),
    Front("updates.signal.org", "198.18.96.19", "2001:db8:96::19"),
)
#: Where the lab's web servers of each service live (the censor's DNAT rules match these).
WEB_NETS = (("198.18.72.0/24", "2001:db8:64:48::/64"), ("198.18.81.0/24", "2001:db8:80:81::/64"),
            ("198.18.96.0/24", "2001:db8:96::/64"))
OTHER_HOSTS = (*TELEGRAM_WEB_CLIENT, *WHATSAPP_CHAT, WHATSAPP_GATEWAY, *WHATSAPP_FRONTS,
               *SIGNAL_PINNED_CA, *SIGNAL_LAB_CA)
#: WhatsApp chat addresses only (not the web fronts): what a censor of the Noise protocol hits.
WHATSAPP_CHAT_NETS = ("198.18.80.0/24", "2001:db8:80::/64")
#: Signal's domain fronts (libsignal rust/net/src/env.rs): a CDN in the lab, outside every
#: service's space, answering the fronted request as Signal's reflector would. Not service
#: names: the censor's name-based behaviours leave them alone (only circumvention scenarios
#: configure targets on them).
SIGNAL_CDN_FRONTS = tuple(
    Front(name, f"198.18.120.{i}", f"2001:db8:120::{i:x}") for i, name in enumerate(
        ("github.githubassets.com", "pinterest.com", "www.redditstatic.com", "www.google.com",
         "android.clients.google.com", "clients3.google.com", "clients4.google.com",
         "inbox.google.com"), start=1))
#: Every service name the lab resolvers know, all three messengers.
SERVICE_NAMES = (*FRONT_NAMES, *(h.name for h in OTHER_HOSTS))


def addresses(hosts: tuple[Front, ...]) -> list[str]:
    """Both addresses of each host."""
    return [a for h in hosts for a in (h.v4, h.v6)]


def dc_addresses(names: tuple[str, ...] | None = None) -> list[str]:
    """All addresses of the named DCs (all DCs when None)."""
    return [a for dc in DCS if names is None or dc.name in names for a in dc.addresses]


def front_addresses() -> list[str]:
    """All web-front addresses (v4 and v6)."""
    return [a for f in FRONTS for a in (f.v4, f.v6)]


def internet_hosts() -> list[str]:
    """Every address that lives on the internet namespace's loopback."""
    return [
        *dc_addresses(),
        *front_addresses(),
        *addresses(OTHER_HOSTS),
        *addresses(SIGNAL_CDN_FRONTS),
        *CONTROL_RESOLVER,
        *CONTROL_ISP_RESOLVER,
        *CONTROL_DOH,
        *BASELINE,
        *DECOY,
    ]


def zone() -> dict[str, dict[str, list[str]]]:
    """What the honest resolvers answer: the real names, lab addresses."""
    z = {f.name: {"A": [f.v4], "AAAA": [f.v6]} for f in (*FRONTS, *OTHER_HOSTS, *SIGNAL_CDN_FRONTS)}
    z[BASELINE_NAME] = {"A": [BASELINE[0]], "AAAA": [BASELINE[1]]}
    return z


def is_v6(address: str) -> bool:
    return ":" in address


# ------------------------------------------------------------------ out-of-band management
@dataclass(frozen=True)
class MgmtLink:
    """An optional veth from a vantage namespace to the root namespace (a /30).

    It models a probe whose management path (scrapes, SSH) is separate from the network
    it measures: cutting the subject's uplink must not also cut Prometheus's scrapes.
    Only the connected /30 route exists on either end (no default route, no forwarding,
    IPv6 off on both ends), so lab traffic can never take it.
    """

    ns: str
    ns_if: str
    root_if: str
    root_addr: str
    ns_addr: str
    prefix: int = 30


#: Out-of-band management addresses (inside 198.18.0.0/15, like every lab address); they
#: live in the root namespace, so each lab instance has its own /24 and veth names
#: (instance 0: 198.19.254.0/24, rlab-mgmt-*; instance N: 198.19.(254-N).0/24, rlabN-mgmt-*).
_MGMT = f"198.19.{254 - INSTANCE}"
MGMT_NET = f"{_MGMT}.0/24"
_RLAB = f"rlab{INSTANCE or ''}"
MGMT_LINKS = (
    MgmtLink(SUBJECT, "mgmt0", f"{_RLAB}-mgmt-sub", f"{_MGMT}.1", f"{_MGMT}.2"),
    MgmtLink(CONTROL, "mgmt0", f"{_RLAB}-mgmt-ctl", f"{_MGMT}.5", f"{_MGMT}.6"),
)


def mgmt_link(ns: str) -> MgmtLink:
    """The management link of a vantage namespace."""
    for link in MGMT_LINKS:
        if link.ns == ns:
            return link
    raise KeyError(ns)
