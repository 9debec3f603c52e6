"""compose.yaml: the one-host stack is wired to the shipped configs and hardened.

No container engine runs here, so the file is checked for what would break a deployment
silently: a mount pointing at a missing file, a probe running as root or writable, a
port published on every interface, rules not mounted where prometheus.yml looks.
"""

from __future__ import annotations

from typing import Any

import yaml

from .promstack import REPO


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "compose.yaml").read_text()))


def test_services() -> None:
    assert set(compose()["services"]) == {"probe", "prometheus", "alertmanager", "grafana"}


def test_probe_is_hardened() -> None:
    probe = compose()["services"]["probe"]
    assert probe["read_only"] is True
    assert probe["cap_drop"] == ["ALL"]
    assert probe["user"] == "10001:10001"
    assert "no-new-privileges:true" in probe["security_opt"]
    assert any(t.startswith("/tmp") for t in probe["tmpfs"])
    assert any(v.endswith(":/var/lib/reach") for v in probe["volumes"])


def test_bind_mounts_exist_and_ports_stay_on_loopback() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_prometheus_finds_rules_probe_and_alertmanager() -> None:
    services = compose()["services"]
    prom_config = yaml.safe_load((REPO / "configs" / "prometheus" / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in services["prometheus"]["volumes"])
    assert prom_config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert mounts["/etc/prometheus/rules"] == "./configs/prometheus/rules"
    jobs = {j["job_name"]: j for j in prom_config["scrape_configs"]}
    assert jobs["reach"]["static_configs"][0]["targets"] == ["probe:9650"]
    assert prom_config["global"]["scrape_interval"] == "15s"
    am = prom_config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]


def test_grafana_provisioning_paths_match() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/reach.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts[path] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
