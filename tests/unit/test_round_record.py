"""A round is judged once and then read, never changed: one record, one JSON form shared
by the evidence log, /api/status and the status page, and the vantage's identity (not its
whole config) in it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from probe.inputs.config import load_config
from probe.serve.server import make_app
from probe.serve.service import Service
from probe.sinks.evidence import read_rounds
from probe.sinks.report import round_json
from probe.sinks.statuspage import STATUS_PAGE
from tests.unit.conftest import World
from tests.unit.test_cli import write_config


async def test_a_judged_round_is_read_only_and_serialised_once(world: World, tmp_path: Path) -> None:
    path = write_config(world, tmp_path / "probe.yaml", evidence={"directory": str(tmp_path / "ev")})
    service = Service(path, load_config(path))
    result = await service.run_one()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdicts = ()  # type: ignore[misc]
    assert isinstance(result.verdicts, tuple) and isinstance(result.observations, tuple)
    assert not hasattr(result, "config")
    assert result.vantage.name == "unit" and result.vantage.role == "subject"
    assert round_json(result) is round_json(result) is result.json
    assert result.json["vantage"] == {"name": "unit", "country": "IR", "asn": 64500,
                                      "network": "", "role": "subject"}
    [logged] = list(read_rounds(next((tmp_path / "ev").iterdir())))
    assert logged == json.loads(json.dumps(result.json, default=str))
    client = TestClient(TestServer(make_app(service)))
    await client.start_server()
    try:
        status = await (await client.get("/api/status")).json()
        assert status["round"] == logged
        assert await client.app[STATUS_PAGE].latest_json() is result.json
    finally:
        await client.close()
