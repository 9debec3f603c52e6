"""The lab's address plan and probe configs, checked without root: every lab address is
in 198.18.0.0/15 or 2001:db8::/32, no two hosts share one, every name a probe resolves
has lab answers, and the configs of all three messengers are valid probe configs whose
targets the scenario table has an expectation for."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from probe.inputs.config import parse_config
from probe.inputs.plan import plan as make_plan
from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.scenarios import SCENARIOS
from tests.lab.scenarios_offline import SCENARIOS as OFFLINE_SCENARIOS
from tests.support.noiseserver import root_pem
from tests.support.tlsserver import LabCA

LAB_NETS = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32"))


def test_every_lab_host_is_in_the_lab_ranges_and_unique() -> None:
    hosts = plan.internet_hosts() + list(plan.CENSOR_HOSTS)
    assert len(hosts) == len(set(hosts))
    for address in hosts:
        ip = ipaddress.ip_address(address)
        assert any(ip.version == n.version and ip in n for n in LAB_NETS), address


def test_every_service_name_has_lab_answers() -> None:
    zone = plan.zone()
    for name in plan.SERVICE_NAMES:
        assert zone[name]["A"] and zone[name]["AAAA"], name
    whatsapp = [ipaddress.ip_network(n) for n in plan.WHATSAPP_SPACE]
    for host in (*plan.WHATSAPP_CHAT, *plan.WHATSAPP_FRONTS):
        for address in (host.v4, host.v6):
            ip = ipaddress.ip_address(address)
            assert any(ip.version == n.version and ip in n for n in whatsapp), host


def test_the_lab_configs_are_valid_and_every_target_has_an_expectation(tmp_path: Path) -> None:
    lab_ca = LabCA().write_ca_pem(tmp_path / "ca" / "ca.pem")
    LabCA(organization="lab Signal CA").write_ca_pem(tmp_path / "signal-ca" / "ca.pem")
    (tmp_path / "whatsapp-root.pem").write_bytes(root_pem())  # the lab's WhatsApp Noise root
    for vantage in (plan.SUBJECT, plan.CONTROL):
        data = probe_config(vantage, tmp_path, lab_ca, plan.MESSENGERS)
        config = parse_config(yaml.safe_dump(data), f"{vantage}.yaml", tmp_path)
        plans = {p.messenger: p for p in make_plan(config)}
        assert sorted(plans) == sorted(plan.MESSENGERS)
        assert config.tls.trust["signal"] == tmp_path / "signal-ca" / "ca.pem"
        assert config.tls.trust["whatsapp"] == tmp_path / "whatsapp-root.pem"
        names = [t for p in plans.values() for t in p.target_names]
        assert len(names) == 144
        for scenario in (*SCENARIOS, *OFFLINE_SCENARIOS):
            for name in names:
                scenario.expected(vantage, name)  # KeyError if no glob matches


def _instance_names(instance: str) -> dict[str, object]:
    code = ("import json; from tests.lab import plan, topology; print(json.dumps({"
            "'netns': plan.NETNS, 'mgmt': [[m.root_if, m.root_addr, m.ns_addr] for m in plan.MGMT_LINKS],"
            "'net': plan.MGMT_NET, 'dir': str(topology.WORKDIR), 'lock': str(topology.LOCK_FILE)}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACH_LAB")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "REACH_LAB_INSTANCE": instance},
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    return dict(json.loads(out.stdout))


def test_lab_instances_share_nothing_in_the_root_namespace() -> None:
    """Everything a lab puts in the root namespace (namespace names, management veths and
    their subnet, working directory, lock) differs per instance; instance 0 keeps the plain
    names developers type."""
    default = _instance_names("0")
    assert default["netns"] == ["subject", "censor", "internet", "control"]
    assert default["dir"] == "/run/reach-lab" and default["net"] == "198.19.254.0/24"
    seen: dict[str, set[str]] = {}
    for instance in "0123456789":
        names = default if instance == "0" else _instance_names(instance)
        mgmt = [x for link in names["mgmt"] for x in link]  # type: ignore[attr-defined]
        assert all(len(m[0]) <= 15 for m in names["mgmt"])  # type: ignore[attr-defined]
        assert ipaddress.ip_network(names["net"]).subnet_of(LAB_NETS[0])  # type: ignore[arg-type]
        for key, values in (("netns", names["netns"]), ("mgmt", mgmt),
                            ("dir", [names["dir"], names["lock"]])):
            for value in values:  # type: ignore[attr-defined]
                assert value not in seen.setdefault(key, set()), (instance, value)
                seen[key].add(value)
    bad = subprocess.run([sys.executable, "-c", "import tests.lab.plan"], capture_output=True,
                         text=True, env={**os.environ, "REACH_LAB_INSTANCE": "x"},
                         cwd=Path(__file__).parents[2])
    assert bad.returncode != 0 and "REACH_LAB_INSTANCE must be a digit" in bad.stderr
