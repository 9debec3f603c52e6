"""Issue 12, finding 9 (deployment): compose and the Dockerfile, checked as files (no
container engine runs here; tests/fleet/test_image.py builds and runs the image)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.hardening.util import ROOT


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / name).read_text()))


def test_every_container_log_is_rotated() -> None:
    for name, service in compose()["services"].items():
        logging = service.get("logging") or {}
        assert logging.get("driver") == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 1, name


def test_probe_has_memory_and_pid_limits() -> None:
    probe = compose()["services"]["probe"]
    assert re.fullmatch(r"\d+[mg]", str(probe["mem_limit"]))
    assert 16 <= int(probe["pids_limit"]) <= 1024


def test_prometheus_lifecycle_off_and_receiver_only_with_auth() -> None:
    """Was: compose ran Prometheus with lifecycle and remote-write receiving, no auth."""
    for name in ("compose.yaml", "compose.receiver.yaml"):
        command = compose(name)["services"]["prometheus"]["command"]
        assert "--web.enable-lifecycle" not in command, name
        if "--web.enable-remote-write-receiver" in command:
            assert any(c.startswith("--web.config.file=") for c in command), name
    receiver = compose("compose.receiver.yaml")["services"]
    assert "--web.enable-remote-write-receiver" in receiver["prometheus"]["command"]
    mount = receiver["prometheus"]["volumes"][0]
    assert mount.startswith("${REACH_PROMETHEUS_WEB_CONFIG:?")
    assert mount.endswith(":/etc/prometheus/web.yml:ro")
    datasource = yaml.safe_load((ROOT / "configs/compose/datasources/reach.yml").read_text())
    assert datasource["datasources"][0]["basicAuth"] is True
    shipped = yaml.safe_load((ROOT / "grafana/provisioning/datasources/reach.yml").read_text())
    assert datasource["datasources"][0]["uid"] == shipped["datasources"][0]["uid"]


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ")


def test_apt_packages_are_pinned() -> None:
    """hadolint DL3008: every apt-get install names a version."""
    installs = [line for line in dockerfile().splitlines() if "apt-get install" in line]
    assert installs
    for line in installs:
        packages = [w.strip('"') for w in line.split("apt-get install", 1)[1].split("&&")[0].split()
                    if not w.startswith("-")]
        assert packages and all("=" in p for p in packages), line


def test_base_image_is_one_pinnable_argument() -> None:
    """Every FROM uses BASE_IMAGE (or a build stage), so one --build-arg pins it by digest;
    the Dockerfile says why no digest is written in it."""
    text = dockerfile()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms), froms
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, re.M)
    assert "@sha256:<digest>" in text and "no digest could be checked" in text


def test_image_health_check_uses_the_health_socket() -> None:
    text = dockerfile()
    assert "REACH_HEALTH_SOCKET=/var/lib/reach/healthz.sock" in text
    assert "os.environ['REACH_HEALTH_SOCKET']" in text
