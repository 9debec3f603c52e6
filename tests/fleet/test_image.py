"""The probe image builds from the Dockerfile and the probe runs inside it.

No Docker daemon here: Debian's buildah builds the Dockerfile (chroot isolation), on a
debian:bookworm-slim base that is bootstrapped locally with debootstrap when no such image
is in local storage (see shared/research/containers.md). The rootfs tarball is cached in
/var/cache/reach-test so later runs skip the bootstrap.

Inside the image the probe runs `--version` and one full round (`probe once`) with a
config whose every address is on loopback and closed: it must finish, offline, and say
vantage_offline — never reach for the internet, never crash.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .promstack import REPO, loopback_probe_config

pytestmark = pytest.mark.slow

BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/reach-probe:test"
CACHE = Path(os.environ.get("REACH_TEST_CACHE", "/var/cache/reach-test"))
ROOTFS_TAR = CACHE / "debian-bookworm-minbase.tar"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def env() -> dict[str, str]:
    """buildah and podman must agree on the storage driver to see the same images."""
    return {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}


def run(argv: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env(), check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def base_image_exists() -> bool:
    if shutil.which("podman"):
        return run(["podman", "image", "exists", BASE], 60, check=False).returncode == 0
    return run(["buildah", "inspect", "--type", "image", BASE], 60, check=False).returncode == 0


def ensure_base_image() -> None:
    """Import a debootstrapped bookworm as debian:bookworm-slim unless one is present."""
    if base_image_exists():
        return
    if not shutil.which("podman"):
        pytest.skip("no debian:bookworm-slim image and no podman to import one")
    if not ROOTFS_TAR.exists():
        if not shutil.which("debootstrap"):
            pytest.skip("no debian:bookworm-slim image and no debootstrap to make one")
        CACHE.mkdir(parents=True, exist_ok=True)
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], 900)
        partial = ROOTFS_TAR.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], 300)
        partial.rename(ROOTFS_TAR)
        shutil.rmtree(rootfs, ignore_errors=True)
    run(["podman", "import", str(ROOTFS_TAR), BASE], 300)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The probe image, built from the repo's Dockerfile; removed afterwards."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah not installed (Debian package buildah)")
    if os.geteuid() != 0:
        pytest.skip("building with buildah's chroot isolation needs root here")
    ensure_base_image()
    argv = ["buildah", "bud", "--isolation", "chroot", "--pull=never", "--format", "docker"]
    if HOST_CA.exists():
        argv += ["-v", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    argv += ["-t", IMAGE, "-f", str(REPO / "Dockerfile"), str(REPO)]
    run(argv, 1200)
    try:
        yield IMAGE
    finally:
        run(["buildah", "rmi", "-f", IMAGE], 120, check=False)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image (buildah from), always removed."""
    name = run(["buildah", "from", "--pull=never", image], 300).stdout.strip()
    try:
        yield name
    finally:
        run(["buildah", "rm", name], 120, check=False)


def in_container(container: str, *argv: str, timeout: float = 120,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside the working container (chroot isolation: works without a daemon)."""
    return run(["buildah", "run", "--isolation", "chroot", container, "--", *argv], timeout, check)


def image_config(image: str) -> dict[str, Any]:
    data = json.loads(run(["buildah", "inspect", "--type", "image", image], 60).stdout)
    return dict(data["Docker"]["config"])


def test_image_metadata(image: str) -> None:
    """Non-root, healthcheck, evidence volume, port, entrypoint: what an operator relies on."""
    config = image_config(image)
    assert config["User"] == "10001:10001"
    assert "9650/tcp" in config["ExposedPorts"]
    assert "/var/lib/reach" in config["Volumes"]
    assert config["Entrypoint"] == ["probe"]
    assert config["Cmd"] == ["run", "--config", "/etc/reach/probe.yaml"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD" and "/healthz" in " ".join(health)


def test_probe_version_runs_in_the_image(container: str) -> None:
    result = in_container(container, "probe", "--version")
    assert "0.1.0" in result.stdout


def test_image_has_no_root_writable_surprises(container: str) -> None:
    """The app files belong to root: the probe user cannot modify its own code."""
    result = in_container(
        container, "python3", "-c",
        "import os; print(os.getuid(), os.access('/opt/reach/bin', os.W_OK),"
        " os.access('/var/lib/reach', os.W_OK))",
    )
    assert result.stdout.split() == ["10001", "False", "True"]


def offline_config() -> dict[str, Any]:
    """Every address on loopback and closed (see promstack), evidence in the volume."""
    config = loopback_probe_config("image-test", interval=60)
    config["evidence"] = {"directory": "/var/lib/reach/evidence"}
    return config


def test_probe_once_runs_offline_in_the_image(container: str, tmp_path: Path) -> None:
    """One real round inside the image: it ends, and with no network it says vantage_offline."""
    # readable by the image's non-root user (pytest's tmp dirs are 0700 root)
    tmp_path.chmod(0o755)
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump(offline_config()))
    (tmp_path / "probe.yaml").chmod(0o644)
    result = run(
        [
            "buildah",
            "run",
            "--isolation",
            "chroot",
            "-v",
            f"{tmp_path}:/cfg:ro",
            container,
            "--",
            "probe",
            "once",
            "--config",
            "/cfg/probe.yaml",
            "--format",
            "json",
        ],
        300,
    )
    report = json.loads(result.stdout)
    verdicts = {v["verdict"] for v in report["verdicts"]}
    assert report["verdicts"], "no verdicts"
    assert verdicts == {"vantage_offline"}, report["verdicts"]


def test_shipped_example_config_is_in_the_image(container: str) -> None:
    if not (REPO / "configs" / "probe.example.yaml").exists():
        pytest.fail("configs/probe.example.yaml is missing (the image's default config)")
    result = in_container(container, "probe", "check-config", "/etc/reach/probe.yaml", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_passes_against_the_probe_in_the_image(image: str, container: str) -> None:
    """The image's own HEALTHCHECK command, run in the image beside a running probe."""
    health = image_config(image)["Healthcheck"]["Test"]
    assert health[0] == "CMD"
    command = shlex.join(health[1:])
    with socket.socket() as sock:  # chroot isolation shares this machine's network
        if sock.connect_ex(("127.0.0.1", 9650)) == 0:
            pytest.skip("port 9650 is taken on this machine")
    script = (
        # every target on closed loopback ports: a test never sends to real addresses
        f"cat > /tmp/hc.yaml <<'EOF'\n{yaml.safe_dump(offline_config())}EOF\n"
        "probe run --config /tmp/hc.yaml --listen 127.0.0.1:9650 & pid=$!; "
        # wait (bounded) until it listens: start-up on a loaded machine takes a while
        "for i in $(seq 60); do python3 -c 'import socket; socket.create_connection("
        "(\"127.0.0.1\", 9650), 1)' 2>/dev/null && break; sleep 0.5; done; "
        f"{command}; echo healthcheck=$?; kill $pid; wait $pid"
    )
    result = in_container(container, "sh", "-c", script)
    assert "healthcheck=0" in result.stdout, result.stdout + result.stderr
