"""Lab scenarios for WhatsApp's own protocol and the apps' ways around a block.

Why a module of its own: these scenarios add servers (an interceptor speaking WhatsApp's
Noise handshake with its own root in the censor namespace, a CDN answering Signal's
domain fronting on the internet side) and circumvention targets to the probe configs
(`messengers.signal.circumvention: true`); the shared table and its configs stay as they
are. Same `Scenario` type, same comparison (harness.compare), plus the rule each mechanism
must be named by and the per-messenger answer "circumvention works".

- w1: the censor resets a client packet to the chat endpoints whose TCP payload starts with
  WhatsApp's prologue ``57 41 06 03`` ("WA", 6, 3): tcp_reset, rule noise_reset.
- w2: the prologue and ClientHello pass; the server's reply (any segment to the subject from
  a chat address carrying 200 bytes or more: the ServerHello, ~430) is dropped:
  protocol_filtering, rule noise_silenced.
- w3: the censor DNATs the chat ports to its own Noise responder, whose certificate chain
  leads to another root: tls_interception, rule noise_certificate_invalid.
- w4: Signal's own addresses are blackholed; the CDN fronts are left alone: Signal's targets
  ip_blocking, the fronted requests reach "Signal" (x-signal-timestamp): circumvention works.

In every scenario a WhatsApp proxy (tests/support/waproxy.py, outside WhatsApp's space, TLS
on :443 and plain on :5222, relaying to a chat server) is configured and not blocked: in
w1-w3 WhatsApp's own chat endpoints are blocked while circumvention works through it.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from probe.judge.circumvention import by_messenger
from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.harness import compare
from tests.lab.scenarios import Scenario, apply_scenario, drop_to
from tests.lab.topology import ROOT, Lab, ServiceSpec, ip_batch

WA_CHAT = "e*.whatsapp.net/*"
SIGNAL_OWN = ("*.signal.org/*", "textsecure-service.whispersystems.org/*")
FRONTS = tuple(f"{f.name}/*" for f in plan.SIGNAL_CDN_FRONTS)
INTERCEPTOR_PORT = 15222
PROLOGUE_HEX = "57410603"
SERVER_HELLO_MIN = 200  # IP packet length: the ServerHello's segment, never a bare ACK
RESULTS_FILE = ROOT / "build" / "lab-messengers-results.json"
#: The lab's WhatsApp proxy: outside WhatsApp's lab space, on the internet side.
PROXY_ADDRESSES = ("198.18.121.1", "2001:db8:121::1")
PROXY_PORTS = (443, 5222)


def _tables(chat: bool = True) -> list[tuple[str, str]]:
    v4, v6 = plan.WHATSAPP_CHAT_NETS
    return [("iptables", v4), ("ip6tables", v6)] if chat else []


def prologue_reset() -> tuple[tuple[str, ...], ...]:
    """Reset a client packet to the chat ports whose payload starts with the prologue (the
    string match's offsets count from the IP header: TCP header with timestamps, 32 bytes,
    or without options, 20)."""
    sub = plan.SUBJECT_LINK.right_if
    rules: list[tuple[str, ...]] = []
    for tool, net in _tables():
        ip_header = 40 if tool == "ip6tables" else 20
        for tcp_header in (32, 20):
            start = ip_header + tcp_header
            rules.append((tool, "-A", "FORWARD", "-i", sub, "-p", "tcp", "-d", net,
                          "-m", "multiport", "--dports", "443,5222",
                          "-m", "string", "--algo", "bm", "--hex-string", f"|{PROLOGUE_HEX}|",
                          "--from", str(start), "--to", str(start + 4),
                          "-j", "REJECT", "--reject-with", "tcp-reset"))
    return tuple(rules)


def reply_dropped() -> tuple[tuple[str, ...], ...]:
    """Drop what the chat servers send the subject beyond the TCP handshake and ACKs."""
    sub = plan.SUBJECT_LINK.right_if
    return tuple(
        (tool, "-A", "FORWARD", "-o", sub, "-p", "tcp", "-s", net,
         "-m", "multiport", "--sports", "443,5222",
         "-m", "length", "--length", f"{SERVER_HELLO_MIN}:65535", "-j", "DROP")
        for tool, net in _tables()
    )  # fmt: skip


def intercept() -> tuple[tuple[str, ...], ...]:
    """DNAT the subject's chat connections to the censor's own Noise responder."""
    sub = plan.SUBJECT_LINK.right_if
    v4, v6 = plan.CENSOR_TLS
    return tuple(
        (tool, "-t", "nat", "-A", "PREROUTING", "-i", sub, "-p", "tcp", "-d", net,
         "-m", "multiport", "--dports", "443,5222", "-j", "DNAT",
         "--to-destination", f"{to}:{INTERCEPTOR_PORT}")
        for (tool, net), to in zip(_tables(), (v4, f"[{v6}]"), strict=True)
    )  # fmt: skip


@dataclass(frozen=True)
class MessengerScenario:
    scenario: Scenario
    #: (target glob, rule) the subject's verdicts must be named by
    rules: tuple[tuple[str, str], ...] = ()
    #: messenger -> the subject's "circumvention works" answer
    circumvention: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.scenario.id


SCENARIOS = (
    MessengerScenario(Scenario(
        "w1-noise-prologue-reset", "WhatsApp's prologue reset, its proxy works",
        "the censor resets a client packet to the chat endpoints (:443, :5222) whose TCP "
        f"payload starts with WhatsApp's prologue {PROLOGUE_HEX}",
        subject=((WA_CHAT, "tcp_reset"), ("*", "ok")),
        failures=((WA_CHAT, ("connection_reset",)),),
        censor=prologue_reset()),
        rules=((WA_CHAT, "noise_reset"),)),
    MessengerScenario(Scenario(
        "w2-noise-reply-dropped", "WhatsApp's ServerHello dropped",
        "the prologue and ClientHello pass; every segment of 200 bytes or more from a chat "
        "endpoint to the subject (the ServerHello) is dropped",
        subject=((WA_CHAT, "protocol_filtering"), ("*", "ok")),
        failures=((WA_CHAT, ("generic_timeout_error",)),),
        censor=reply_dropped()),
        rules=((WA_CHAT, "noise_silenced"),)),
    MessengerScenario(Scenario(
        "w3-noise-interceptor", "WhatsApp's handshake intercepted",
        "the censor DNATs the chat ports to its own Noise responder, whose certificate chain "
        "leads to a root that is not WhatsApp's",
        subject=((WA_CHAT, "tls_interception"), ("*", "ok")),
        failures=((WA_CHAT, ("noise_invalid_certificate",)),),
        censor=intercept()),
        rules=((WA_CHAT, "noise_certificate_invalid"),)),
    MessengerScenario(Scenario(
        "w4-signal-fronting", "Signal blocked, domain fronting works",
        "the censor drops everything to Signal's own addresses; the CDN fronts (libsignal's "
        "fronting names) are left alone and answer the fronted request with x-signal-timestamp",
        subject=(*((glob, "ip_blocking") for glob in SIGNAL_OWN), ("*", "ok")),
        censor=drop_to(plan.addresses((*plan.SIGNAL_PINNED_CA, *plan.SIGNAL_LAB_CA)))),
        circumvention={"signal": "yes"}),
)


def extra_services(lab: Lab) -> list[ServiceSpec]:
    """The censor's Noise interceptor and the fronting CDN."""
    v4, v6 = plan.CENSOR_TLS
    return [
        ServiceSpec("messengers-interceptor", plan.CENSOR, "noiseserver",
                    [(v4, INTERCEPTOR_PORT), (v6, INTERCEPTOR_PORT)], ["--mode", "foreign_root"]),
        ServiceSpec("messengers-signal-cdn", plan.INTERNET, "tlsserver",
                    [(a, 443) for a in plan.addresses(plan.SIGNAL_CDN_FRONTS)],
                    ["--ca-dir", str(lab.ca_dir), "--status", "400",
                     "--header", "X-Signal-Timestamp=1733300000000",
                     *[x for f in plan.SIGNAL_CDN_FRONTS for x in ("--name", f.name)]]),
        *(ServiceSpec(f"messengers-waproxy-{port}", plan.INTERNET, "waproxy",
                      [(a, port) for a in PROXY_ADDRESSES],
                      ["--upstream", f"{plan.WHATSAPP_CHAT[0].v4}:5222",
                       *(["--tls"] if port == 443 else [])])
          for port in PROXY_PORTS),
    ]


def setup(lab: Lab) -> None:
    ip_batch(plan.INTERNET, [f"addr replace {a}/{128 if plan.is_v6(a) else 32} dev lo"
                             for a in PROXY_ADDRESSES])
    lab.start_extra(extra_services(lab))


def probe_configs(lab: Lab) -> dict[str, Path]:
    """The standard lab configs with Signal's circumvention groups switched on."""
    paths = {}
    for vantage in (plan.SUBJECT, plan.CONTROL):
        config: dict[str, Any] = probe_config(vantage, lab.workdir, lab.ca_dir / "ca.pem",
                                              plan.MESSENGERS)
        # these scenarios judge the chat handshake and the detours, not DNS: a resolver
        # answer late under load (2 shared cores) must not read as dns_no_address
        config["schedule"]["timeouts"] = {**config["schedule"]["timeouts"], "dns": 4.0}
        config["messengers"]["signal"]["circumvention"] = True
        config["messengers"]["whatsapp"]["whatsapp_proxies"] = [
            {"name": "wa-proxy", "address": a, "port": p} for a in PROXY_ADDRESSES for p in PROXY_PORTS]
        path = lab.workdir / "configs" / f"messengers-{vantage}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths[vantage] = path
    return paths


def run(lab: Lab, case: MessengerScenario) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reset, break, probe both vantages; compare verdicts, rules and circumvention answers."""
    lab.reset()
    apply_scenario(lab, case.scenario)
    results = lab.run_probes(configs=probe_configs(lab))
    record = compare(case.scenario, results)
    for verdict in results[plan.SUBJECT]["verdicts"]:
        target = verdict["target"]
        rule = next((r for pattern, r in case.rules if fnmatch.fnmatchcase(target, pattern)), None)
        if rule is not None and verdict["rule"] != rule:
            record["mismatches"].append(f"subject {target}: rule {verdict['rule']}, expected {rule}")
    answers = {}
    for vantage in (plan.SUBJECT, plan.CONTROL):
        verdicts = results[vantage]["verdicts"]
        answers[vantage] = by_messenger(
            (v["messenger"], v.get("circumvention", ""), v["verdict"]) for v in verdicts)
        fronts = [v for v in verdicts if v.get("circumvention") == "domain_fronting"]
        proxies = [v for v in verdicts if v.get("circumvention") == "whatsapp_proxy"]
        if (len(fronts), len(proxies)) != (2 * len(plan.SIGNAL_CDN_FRONTS), 4):
            record["mismatches"].append(f"{vantage}: {len(fronts)} fronting, {len(proxies)} proxy targets")
    # the control vantage is outside the censor: Signal's detour works there too
    detours = {"signal": "yes", "whatsapp": "yes"}
    expected = {plan.SUBJECT: {**detours, **case.circumvention}, plan.CONTROL: detours}
    for vantage, wanted in expected.items():
        for messenger, answer in wanted.items():
            if answers[vantage].get(messenger) != answer:
                record["mismatches"].append(f"{vantage} {messenger}: circumvention "
                                            f"{answers[vantage].get(messenger)}, expected {answer}")
    record["circumvention"] = answers
    record["passed"] = not record["mismatches"]
    return record, results


def save(records: list[dict[str, Any]], path: Path = RESULTS_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scenarios": records}, indent=1))
    return path



def markdown(records: list[dict[str, Any]]) -> str:
    """The results as a table (docs/lab.md, "Messenger scenarios", is this, from a run)."""
    lines = ["| id | what breaks | subject: observed (rules) | circumvention (subject) | control | passed |",
             "|---|---|---|---|---|---|"]
    for r in records:
        cells = []
        for vantage in (plan.SUBJECT, plan.CONTROL):
            v = r["vantages"][vantage]
            cells.append("; ".join(
                f"{verdict} x{len(targets)} ({', '.join(v['rules'][verdict])})"
                for verdict, targets in sorted(v["observed"].items())))
        detours = ", ".join(f"{m}: {a}" for m, a in sorted(r["circumvention"][plan.SUBJECT].items()))
        lines.append(f"| {r['id']} | {r['how']} | {cells[0]} | {detours} | {cells[1]} | "
                     f"{'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(json.loads(RESULTS_FILE.read_text())["scenarios"]), end="")
