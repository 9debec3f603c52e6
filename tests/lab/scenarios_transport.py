"""Lab scenarios for the apps' transports (issue 11): filters on one MTProto transport and
not the other, and MTProxy targets blocked by their fake-TLS SNI.

Why a module of its own: these scenarios add servers (two lab MTProxies on the internet
side, the fully-encrypted-traffic censor in the censor namespace) and proxy targets to the
probe configs; the shared table (tests/lab/scenarios.py) and its configs stay as they are.
The expectations use the same `Scenario` type and the same comparison (harness.compare),
plus the rule each mechanism must be named by.

- t1a/t1b: the censor resets / drops a connection whose TCP payload *starts* with the plain
  intermediate tag ``eeeeeeee`` (iptables string match at the payload offset: IPv4 header
  20 + TCP header 32 with timestamps = 52, IPv6 40 + 32 = 72; the 20-byte TCP header without
  options is covered too). The plain transport fails, the apps' obfuscated2 passes: `ok`,
  rule mtproto_plain_only_filtered.
- t2: the GFW's rule for fully encrypted traffic (Wu et al. 2023; tests/support/fetcensor.py)
  on every connection to the DCs and proxies: obfuscated2 fails, plain works:
  `protocol_filtering`, rule mtproto_obfuscated_filtered. The dd proxy (random first packet)
  is blocked too; the ee proxy's ClientHello is exempt as TLS, so fake TLS gets through.
- t3/t4: the lab MTProxies are reachable; then the censor resets connections whose
  ClientHello carries the ee proxy's SNI: that proxy is `sni_filtering` (its neutral-SNI
  differential relays resPQ), the dd proxy stays `ok`.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.harness import compare
from tests.lab.scenarios import ALL_OK, DCS, DCS_V4_NET, DCS_V6_NET, Scenario, apply_scenario, sni_filter
from tests.lab.topology import ROOT, Lab, ServiceSpec, ip_batch

#: The fake-TLS name of the ee proxy (what a censor sees in its ClientHello).
PROXY_SNI = "www.proxy-front.example"


@dataclass(frozen=True)
class LabProxy:
    name: str
    addresses: tuple[str, str]  # IPv4, IPv6 on the internet namespace's loopback
    secret: str

    def secret_file(self, lab: Lab) -> Path:
        return lab.workdir / f"{self.name}.secret"


PROXIES = (
    LabProxy("ee-proxy", ("198.18.112.1", "2001:db8:112::1"), "ee" + "5eed" * 8 + PROXY_SNI.encode().hex()),
    LabProxy("dd-proxy", ("198.18.112.2", "2001:db8:112::2"), "dd" + "d00d" * 8),
)
PROXY_V4_NET, PROXY_V6_NET = "198.18.112.0/24", "2001:db8:112::/48"  # outside the service's space
PROXY_PORT = 443
FET_PORT = 7000
FET_LOG_NAME = "fetcensor.jsonl"
RESULTS_FILE = ROOT / "build" / "lab-transport-results.json"


def plain_signature(action: str) -> tuple[tuple[str, ...], ...]:
    """Reset (`reset`) or drop (`drop`) a client packet whose TCP payload starts with the
    plain intermediate tag, to the DCs' ports 80/443. The string match's offsets count from
    the IP header; the search window [from, to) holds exactly the 4 bytes at the payload's
    start for a TCP header with timestamps (32 bytes, Linux's default) or without options."""
    sub = plan.SUBJECT_LINK.right_if
    verdict = ("-j", "REJECT", "--reject-with", "tcp-reset") if action == "reset" else ("-j", "DROP")
    rules: list[tuple[str, ...]] = []
    for tool, net, ip_header in (("iptables", DCS_V4_NET, 20), ("ip6tables", DCS_V6_NET, 40)):
        for tcp_header in (32, 20):
            start = ip_header + tcp_header
            rules.append((tool, "-A", "FORWARD", "-i", sub, "-p", "tcp", "-d", net,
                          "-m", "multiport", "--dports", "80,443",
                          "-m", "string", "--algo", "bm", "--hex-string", "|eeeeeeee|",
                          "--from", str(start), "--to", str(start + 4), *verdict))
    return tuple(rules)


def fet_redirect() -> tuple[tuple[str, ...], ...]:
    """Send the subject's connections to the DCs and proxies through the censor's
    fully-encrypted-traffic filter (a REDIRECT to the relay in the censor namespace)."""
    sub = plan.SUBJECT_LINK.right_if
    return tuple(
        (tool, "-t", "nat", "-A", "PREROUTING", "-i", sub, "-p", "tcp", "-d", net,
         "-m", "multiport", "--dports", "80,443", "-j", "REDIRECT", "--to-ports", str(FET_PORT))
        for tool, net in (("iptables", DCS_V4_NET), ("iptables", PROXY_V4_NET),
                          ("ip6tables", DCS_V6_NET), ("ip6tables", PROXY_V6_NET))
    )  # fmt: skip


@dataclass(frozen=True)
class TransportScenario:
    scenario: Scenario
    #: (target glob, rule) the subject's verdicts must be named by
    rules: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return self.scenario.id

    def rule(self, target: str, default: str) -> str:
        """The rule the subject's verdict on ``target`` must be named by (``default`` when
        the scenario names none for it)."""
        return next((r for pattern, r in self.rules if fnmatch.fnmatchcase(target, pattern)), default)


PROXY_GLOBS = ("ee-proxy-*", "dd-proxy-*")
SCENARIOS = (
    TransportScenario(Scenario(
        "t1a-plain-signature-reset", "Plain MTProto signature reset, apps fine",
        "the censor resets a client packet to DC :80/:443 whose TCP payload starts with "
        "eeeeeeee (string match at offset 52 IPv4 / 72 IPv6); obfuscated2 passes",
        subject=ALL_OK, censor=plain_signature("reset")),
        rules=((DCS, "mtproto_plain_only_filtered"),)),
    TransportScenario(Scenario(
        "t1b-plain-signature-drop", "Plain MTProto signature dropped, apps fine",
        "as t1a, but the packet is dropped (the plain transport times out)",
        subject=ALL_OK, censor=plain_signature("drop")),
        rules=((DCS, "mtproto_plain_only_filtered"),)),
    TransportScenario(Scenario(
        "t2-fully-encrypted-filter", "Fully encrypted traffic blocked (GFW popcount rule)",
        "the subject's connections to the DCs and proxies pass a relay applying Wu et al.'s "
        "rule to the first data packet: random-looking first packets are silenced",
        subject=((DCS, "protocol_filtering"), ("dd-proxy-*", "inconclusive"), ("*", "ok")),
        failures=((DCS, ("generic_timeout_error",)), ("dd-proxy-*", ("generic_timeout_error",))),
        censor=fet_redirect()),
        rules=((DCS, "mtproto_obfuscated_filtered"), ("dd-proxy-*", "mtproxy_failed"))),
    TransportScenario(Scenario(
        "t3-mtproxy-reachable", "MTProxies reachable",
        "nothing blocked: the ee (fake TLS) and dd proxies relay resPQ from DC1",
        subject=ALL_OK)),
    TransportScenario(Scenario(
        "t4-mtproxy-sni-reset", "MTProxy blocked by its fake-TLS SNI",
        f"the censor resets ClientHellos carrying {PROXY_SNI} on :443",
        subject=(("ee-proxy-*", "sni_filtering"), ("*", "ok")),
        failures=(("ee-proxy-*", ("connection_reset",)),),
        censor=sni_filter(PROXY_SNI, ("-j", "REJECT", "--reject-with", "tcp-reset"))),
        rules=(("ee-proxy-*", "mtproxy_sni_filtered"),)),
)


def extra_services(lab: Lab) -> list[ServiceSpec]:
    """The two lab MTProxies (internet side, relaying to DC1) and the FET censor relay."""
    specs = [
        ServiceSpec(f"transport-{p.name}", plan.INTERNET, "mtproxy",
                    [(a, PROXY_PORT) for a in p.addresses],
                    ["--secret-file", str(p.secret_file(lab)),
                     "--upstream", f"{plan.DCS[0].v4[0]}:443"])
        for p in PROXIES
    ]
    specs.append(ServiceSpec("transport-fetcensor", plan.CENSOR, "fetcensor",
                             [("0.0.0.0", FET_PORT), ("::", FET_PORT)],
                             ["--log", str(lab.workdir / FET_LOG_NAME)]))
    return specs


def setup(lab: Lab) -> None:
    """Proxy addresses on the internet side, their secret files, the extra servers."""
    ip_batch(plan.INTERNET, [f"addr replace {a}/{128 if plan.is_v6(a) else 32} dev lo"
                             for p in PROXIES for a in p.addresses])
    for proxy in PROXIES:
        path = proxy.secret_file(lab)
        path.write_text(proxy.secret + "\n")
        path.chmod(0o600)
    lab.start_extra(extra_services(lab))


def probe_configs(lab: Lab) -> dict[str, Path]:
    """The standard lab configs plus the proxies (secrets by file, never in the config)."""
    paths = {}
    for vantage in (plan.SUBJECT, plan.CONTROL):
        config: dict[str, Any] = probe_config(vantage, lab.workdir, lab.ca_dir / "ca.pem")
        config["messengers"]["telegram"]["proxies"] = [
            {"name": p.name, "address": address, "port": PROXY_PORT,
             "secret_file": str(p.secret_file(lab))}
            for p in PROXIES for address in p.addresses]
        path = lab.workdir / "configs" / f"transport-{vantage}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths[vantage] = path
    return paths


def fet_decisions(lab: Lab) -> list[dict[str, Any]]:
    path = lab.workdir / FET_LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


NOT_RANDOM = (b"POST", b"GET ", b"HEAD", b"\xee\xee\xee\xee", b"\x16\x03")


def exempt_by_chance(decisions: list[dict[str, Any]]) -> Counter[str]:
    """How often, per destination ("addr:port"), a random-looking first packet (an
    obfuscated init: 64 bytes or more, not HTTP, TLS or the plain tag) was let through by
    an exemption: the rule passes about 1 in 400 random packets (first 6 bytes printable),
    the GFW's too."""
    return Counter(d["destination"] for d in decisions
                   if d["verdict"] != "blocked" and d["length"] >= 64
                   and not bytes.fromhex(d["head"]).startswith(NOT_RANDOM))


def random_first_packet_targets() -> dict[str, list[str]]:
    """Destination "addr:port" -> the subject's targets whose first packet there is random
    (an obfuscated init): the DCs (dc2-v4b:443 ...), the media-only DCs, which share their
    DC's first addresses (dc4-media-v4:80 is dc4-v4:80's destination), and the dd proxy."""
    names: dict[str, list[str]] = {}

    def add(address: str, port: int, target: str) -> None:
        # the relay's log spells a destination f"{host}:{port}", IPv6 without brackets
        names.setdefault(f"{address}:{port}", []).append(target)

    for dc in plan.DCS:
        for index, address in enumerate(dc.v4):
            suffix = "" if index == 0 else chr(ord("a") + index)
            for port in plan.DC_PORTS:
                add(address, port, f"{dc.name}-v4{suffix}:{port}")
        for port in plan.DC_PORTS:
            add(dc.v6, port, f"{dc.name}-v6:{port}")
    for media, dc_name in plan.MEDIA_DCS:
        dc = next(d for d in plan.DCS if d.name == dc_name)
        for family, address in (("v4", dc.v4[0]), ("v6", dc.v6)):
            for port in plan.DC_PORTS:
                add(address, port, f"{media}-{family}:{port}")
    for proxy in PROXIES:
        if proxy.secret.startswith("dd"):
            for address in proxy.addresses:
                add(address, PROXY_PORT, f"{proxy.name}-v{6 if plan.is_v6(address) else 4}:{PROXY_PORT}")
    return names


def excused_by_chance(decisions: list[dict[str, Any]], verdicts: list[dict[str, Any]],
                      transport: TransportScenario) -> set[str]:
    """The subject's targets whose verdict may differ from the scenario's because the filter
    exempted one of their random first packets by chance: such a target is rightly `ok`, or,
    when the lucky attempt followed silenced ones, whatever the judge makes of an
    intermittent failure (seen: ip_blocking by loss_concentrated_on_service after two silenced
    attempts and a lucky third). The log names a destination, not a connection, and a media DC
    shares its DC's destinations: at a destination with n exemptions at most n of its
    targets can have got through, so up to n deviating targets there are excused; more
    deviating targets than exemptions there, and none is."""
    deviating = {v["target"] for v in verdicts
                 if v["verdict"] != transport.scenario.expected(plan.SUBJECT, v["target"])
                 or v["rule"] != transport.rule(v["target"], v["rule"])}
    names = random_first_packet_targets()
    excused: set[str] = set()
    for destination, exemptions in exempt_by_chance(decisions).items():
        lucky = [t for t in names.get(destination, []) if t in deviating]
        if len(lucky) <= exemptions:
            excused.update(lucky)
    return excused


def run(lab: Lab, transport: TransportScenario) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reset, break, probe both vantages with the proxy configs; compare, rules included."""
    lab.reset()
    decisions_before = len(fet_decisions(lab))
    apply_scenario(lab, transport.scenario)
    results = lab.run_probes(configs=probe_configs(lab))
    decisions = fet_decisions(lab)[decisions_before:]
    lucky = excused_by_chance(decisions, results[plan.SUBJECT]["verdicts"], transport)
    record = compare(transport.scenario, results)
    # a target whose obfuscated first packet the filter exempted by chance is rightly ok
    record["mismatches"] = [m for m in record["mismatches"]
                            if not any(m.startswith(f"{plan.SUBJECT} {t}:") for t in lucky)]
    record["exempt_by_chance"] = sorted(lucky)
    record["fet_decisions"] = _summary(decisions)
    for verdict in results[plan.SUBJECT]["verdicts"]:
        target = verdict["target"]
        rule = transport.rule(target, verdict["rule"])
        if verdict["rule"] != rule and target not in lucky:
            record["mismatches"].append(f"subject {target}: rule {verdict['rule']}, expected {rule}")
    expected_proxies = {f"{p.name}-v{6 if plan.is_v6(a) else 4}:{PROXY_PORT}" for p in PROXIES
                        for a in p.addresses}
    for vantage in (plan.SUBJECT, plan.CONTROL):
        seen = {v["target"] for v in results[vantage]["verdicts"]}
        if not expected_proxies <= seen:
            record["mismatches"].append(f"{vantage}: proxy targets missing: {expected_proxies - seen}")
    record["passed"] = not record["mismatches"]
    return record, results


def _summary(decisions: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d["verdict"]] = counts.get(d["verdict"], 0) + 1
    return counts


def save(records: list[dict[str, Any]], path: Path = RESULTS_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenarios": records}, indent=1))
    return path


def markdown(records: list[dict[str, Any]]) -> str:
    """The results as a table (docs/lab-transport.md is this, from a run)."""
    lines = ["| id | what breaks | subject: observed (rules) | control | passed |", "|---|---|---|---|---|"]
    for r in records:
        cells = []
        for vantage in (plan.SUBJECT, plan.CONTROL):
            v = r["vantages"][vantage]
            cells.append("; ".join(
                f"{verdict} x{len(targets)} ({', '.join(v['rules'][verdict])})"
                for verdict, targets in sorted(v["observed"].items())))
        lines.append(f"| {r['id']} | {r['how']} | {cells[0]} | {cells[1]} | "
                     f"{'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(json.loads(RESULTS_FILE.read_text())["scenarios"]), end="")
