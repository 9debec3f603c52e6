"""Helpers: loopback probe configs, the probe CLI as a subprocess, a running `probe run`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from probe.inputs.catalog import builtin

ROOT = Path(__file__).resolve().parents[2]
PROBE = [sys.executable, "-m", "probe"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def without_catalogue_groups(messenger: str = "telegram") -> dict[str, dict[str, list[Any]]]:
    """Group overrides that empty every group of the built-in catalogue other than the two
    the config's `datacenters`/`domains` keys replace: the catalogue's other groups (media
    DCs, the web client's hosts, ...) are the messenger's real addresses, which a test must
    never contact, and a catalogue that grows a group cannot bring them back."""
    return {name: {"endpoints": []} for name in builtin(messenger).groups
            if name not in ("datacenters", "domains")}


def loopback_config(
    path: Path, *, dc_port: int, baseline_port: int | None = None, datacenters: int = 1,
    address: str = "127.0.0.1", resolvers: list[dict[str, Any]] | None = None,
    domains: list[dict[str, Any]] | None = None, timeout: float = 0.5, interval: float = 1,
    evidence: Path | None = None, source: str | None = None, **extra: Any,
) -> Path:
    """A config whose every target is on loopback (or `address`): no real network."""
    vantage: dict[str, Any] = {"name": "hardening", "country": "ZZ", "asn": 64500}
    if source:
        vantage["source_address"] = source
    data: dict[str, Any] = {
        "vantage": vantage,
        "messengers": {"telegram": {
            "datacenters": [{"name": f"dc{i}", "addresses": [address]} for i in range(datacenters)],
            "domains": domains or [], "ports": [dc_port],
            "address_space": ["127.0.0.0/8", "198.18.0.0/15"],
            "groups": without_catalogue_groups(),
        }},
        "resolvers": {"system": False, "servers": resolvers or [],
                      "public_networks": ["127.0.0.0/8", "198.18.0.0/15"]},
        "baseline": {"targets": [{"name": "site", "address": address,
                                  "port": baseline_port or dc_port}]},
        "schedule": {"interval": interval, "jitter": 0, "concurrency": 256,
                     # one try per step: these tests time leaks and schedules, not confirmation
                     "confirm": {"attempts": 1},
                     "timeouts": {k: timeout for k in ("dns", "connect", "tls", "mtproto", "http")}},
        "evidence": {"directory": str(evidence) if evidence else None},
        # no traffic budget: every round runs every step (these tests are about the probe's
        # defences, not its scheduler's tiers)
        "budget": {"bytes_per_day": "unlimited"},
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, stdin=subprocess.DEVNULL)


def http_get(url: str, timeout: float = 5, **kwargs: Any) -> tuple[int, str]:
    request = urllib.request.Request(url, **kwargs)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextlib.contextmanager
def probe_run(config: Path, *args: str, port: int | None = None,
              log: Path | None = None, ready_path: str = "/healthz",
              scheme: str = "http") -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`probe run` in a subprocess on a free loopback port; stopped with SIGTERM after."""
    port = port or free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [*PROBE, "run", "--config", str(config), "--listen", f"127.0.0.1:{port}", *args],
        stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_listening(process, port, "probe run")
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def wait_listening(process: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Until `process` accepts connections on loopback `port` (20 s at most)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen in 20 s")


def wait_metric(base: str, name: str, value: float, timeout: float = 10) -> float | None:
    """Poll `base`/metrics until `name` reads `value`; return the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        found = metric(http_get(f"{base}/metrics")[1], name)
        if found == value or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def metric(text: str, name: str) -> float | None:
    """The value of the first sample of `name` (with any labels) in an exposition."""
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            return float(line.rsplit(" ", 1)[1])
    return None
