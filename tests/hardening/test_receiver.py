"""The fleet's write-only front before a real Prometheus: a vantage's credential writes only
as itself and reads nothing; Grafana's reads; nothing else gets in."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import bcrypt
import pytest

from probe.serve.receiver import _field, snappy_decode, snappy_encode
from tests.hardening.util import PROBE, ROOT, free_port, wait_listening

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs prometheus")

USERS = {"ams-1": "pw-a", "fra-2": "pw-b", "grafana": "pw-g"}


def write_request(series: list[tuple[dict[str, str], float]]) -> bytes:
    """A remote-write 1.0 WriteRequest, snappy-compressed, as an agent sends it."""
    now = int(time.time() * 1000)
    out = b""
    for labels, value in series:
        body = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode()))
                        for k, v in sorted(labels.items()))
        sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(now)
        out += _field(1, body + _field(2, sample))
    return snappy_encode(out)


def _varint(value: int) -> bytes:
    from probe.serve.receiver import _put_varint

    return _put_varint(value)


def call(url: str, user: str | None, data: bytes | None = None, method: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "0.1.0"} if data is not None else {}
    if user:
        token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("fleet")
    (directory / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    prometheus_port, front_port = free_port(), free_port()
    hashed = {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode() for u, p in USERS.items()}
    (directory / "receiver.yaml").write_text(
        f"upstream: http://127.0.0.1:{prometheus_port}\n"
        f"vantages:\n  ams-1: '{hashed['ams-1']}'\n  fra-2: '{hashed['fra-2']}'\n"
        f"readers:\n  grafana: '{hashed['grafana']}'\n")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={directory / 'prometheus.yml'}",
         f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{prometheus_port}",
         "--web.enable-remote-write-receiver"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    front = subprocess.Popen(
        [PROBE[0], "-m", "probe.serve.receiver", "--config", str(directory / "receiver.yaml"),
         "--listen", f"127.0.0.1:{front_port}"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_listening(prometheus, prometheus_port, "prometheus")
        wait_listening(front, front_port, "receiver")
        yield f"http://127.0.0.1:{front_port}", f"http://127.0.0.1:{prometheus_port}"
    finally:
        for process in (front, prometheus):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def series(prometheus: str, name: str) -> list[dict[str, str]]:
    deadline = time.monotonic() + 10
    while True:
        query = urllib.parse.urlencode({"query": name})
        status, text = call(f"{prometheus}/api/v1/query?{query}", None)
        result = [r["metric"] for r in json.loads(text)["data"]["result"]] if status == 200 else []
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_a_vantage_cannot_write_as_another(fleet: tuple[str, str]) -> None:
    front, prometheus = fleet
    body = write_request([({"__name__": "reach_front_test", "vantage": "fra-2", "job": "reach"}, 1.0),
                          ({"__name__": "reach_front_test2", "job": "reach"}, 2.0)])
    status, text = call(f"{front}/api/v1/write", "ams-1", body)
    assert status == 204, (status, text)
    assert series(prometheus, "reach_front_test") == [
        {"__name__": "reach_front_test", "job": "reach", "vantage": "ams-1"}]  # not fra-2
    assert series(prometheus, "reach_front_test2")[0]["vantage"] == "ams-1"  # added when absent


def test_a_vantage_reads_nothing_and_grafana_writes_nothing(fleet: tuple[str, str]) -> None:
    front, _ = fleet
    query = urllib.parse.urlencode({"query": "up"})
    for path in (f"/api/v1/query?{query}", "/api/v1/series?match[]=up", "/api/v1/labels",
                 "/federate?match[]=up", "/api/v1/status/config", "/-/reload", "/graph"):
        assert call(front + path, "ams-1")[0] == 403, path
        assert call(front + path, None)[0] == 401, path
    assert call(f"{front}/api/v1/query?{query}", "grafana")[0] == 200
    assert call(f"{front}/api/v1/status/config", "grafana")[0] == 403
    assert call(f"{front}/-/quit", "grafana", b"", "POST")[0] == 403
    body = write_request([({"__name__": "reach_front_grafana", "vantage": "x"}, 1.0)])
    assert call(f"{front}/api/v1/write", "grafana", body)[0] == 403


def test_wrong_password_and_garbage_bodies(fleet: tuple[str, str]) -> None:
    front, _ = fleet
    token = base64.b64encode(b"ams-1:wrong").decode()
    request = urllib.request.Request(f"{front}/api/v1/write", data=b"x",
                                     headers={"Authorization": f"Basic {token}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    for garbage in (b"", b"\xff\xff\xff\xff\x0f", snappy_encode(b"\x0a\xff\xff\xff"), b"\x05\x00abc"):
        assert call(f"{front}/api/v1/write", "ams-1", garbage)[0] == 400, garbage


def test_snappy_round_trip_and_bounds() -> None:
    data = bytes(range(256)) * 1000
    assert snappy_decode(snappy_encode(data)) == data
    with pytest.raises(ValueError, match="over"):
        snappy_decode(b"\xff\xff\xff\xff\x0f")  # announces 4 GiB
