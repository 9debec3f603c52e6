"""A fair HTTP front: floods from one source leave health checks and scrapes from another
served; the status page and API refuse a Host that DNS rebinding would send; no dynamic
response is cached; /api/target is rendered once per round."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from probe.inputs.config import load_config
from probe.serve.server import make_app
from probe.serve.service import Service
from tests.hardening._counts import CASES
from tests.hardening.util import loopback_config, probe_run

ROUTES = ["/", "/api/status", "/api/target/telegram/dc0-v4:9", "/metrics", "/healthz"]


@pytest.fixture
async def service(tmp_path: Path) -> Service:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, web={"allowed_hosts": ["probe.lan"]})
    service = Service(path, load_config(path))
    await service.run_one()
    return service


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:9650", "probe.lan.attacker.example"])
async def test_rebinding_host_is_refused_on_the_page_and_the_api(service: Service, host: str) -> None:
    async with TestClient(TestServer(make_app(service))) as client:
        for url in ROUTES:
            response = await client.get(url, headers={"Host": host})
            body = await response.text()
            if url in ("/metrics", "/healthz"):  # Prometheus and health checks use names
                assert response.status == 200, url
            else:
                assert response.status == 421 and "dc0" not in body, (url, response.status)


@pytest.mark.parametrize("host", ["127.0.0.1:9650", "[::1]:9650", "localhost:9650", "PROBE.LAN:9650",
                                  "198.18.0.7", "probe.lan."])
async def test_allowed_hosts_are_answered(service: Service, host: str) -> None:
    async with TestClient(TestServer(make_app(service))) as client:
        for url in ROUTES:
            response = await client.get(url, headers={"Host": host})
            assert response.status == 200, (url, host)


async def test_every_dynamic_route_says_no_store(service: Service) -> None:
    async with TestClient(TestServer(make_app(service))) as client:
        for url in [*ROUTES, "/api/target/telegram/nothing"]:
            response = await client.get(url)
            assert response.headers.get("Cache-Control") == "no-store", url


async def test_api_target_is_rendered_once_per_round(service: Service) -> None:
    from probe.sinks.statuspage.routes import STATUS_PAGE

    app = make_app(service)
    async with TestClient(TestServer(app)) as client:
        bodies = [await (await client.get(ROUTES[2])).text() for _ in range(5)]
        page = app[STATUS_PAGE]
        assert len(set(bodies)) == 1 and len(page._targets) == 1
        cached = page._targets[("telegram", "dc0-v4:9")]
        await service.run_one()  # a new round: rendered again
        assert await (await client.get(ROUTES[2])).text() is not None
        assert page._targets[("telegram", "dc0-v4:9")] is not cached


def test_allowed_hosts_key_is_checked(tmp_path: Path) -> None:
    path = loopback_config(tmp_path / "probe.yaml", dc_port=9, web={"allowed_hosts": ["bad host"]})
    from probe.inputs.schema import ConfigError

    with pytest.raises(ConfigError, match=r"web\.allowed_hosts"):
        load_config(path)
    assert yaml.safe_load(path.read_text())["web"]


def get(port: int, path: str, source: str, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                            source_address=(source, 0))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def flood(port: int, path: str, clients: int, stop: threading.Event,
          codes: dict[int, int]) -> list[threading.Thread]:
    def client() -> None:
        while not stop.is_set():
            code = get(port, path, "127.0.0.2", 10)
            codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.parametrize(("flooded", "asked"), [("/healthz", "/healthz"), ("/api/status", "/metrics")])
def test_a_flood_from_one_source_leaves_another_served(tmp_path: Path, flooded: str, asked: str) -> None:
    """The review's floods (64 clients on /healthz; on /api/status, no web config) from
    127.0.0.2, while a health checker or Prometheus asks from 127.0.0.1 with a 2 s timeout.
    Before: 185 of 185 health checks got 503, 42 of 42 scrapes failed."""
    config = loopback_config(tmp_path / "probe.yaml", dc_port=9, interval=5)
    with probe_run(config) as (_, port):
        stop = threading.Event()
        codes: dict[int, int] = {}
        threads = flood(port, flooded, 64, stop, codes)
        try:
            time.sleep(1.0)
            answers = []
            for _ in range(15):
                answers.append(get(port, asked, "127.0.0.1", 2))
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
    CASES[f"http/flood requests ({flooded})"] += sum(codes.values())
    assert sum(codes.values()) > 100, codes  # the flood did flood
    assert answers == [200] * len(answers), (answers, codes)
