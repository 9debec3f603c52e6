"""A check is one module plus one record: a check added through its record alone is planned,
runs under its own timeout key (set in the config, or the record's default), and is
labelled on the status page; a record with an unknown trait is refused when it is made."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from probe.cli import app
from probe.inputs.config import ConfigError, parse_config
from probe.measure import checks
from probe.measure.checks.base import Env, Step
from probe.measure.wire.net import Stopwatch
from probe.model import failures
from probe.model.checkspec import CheckSpec
from probe.model.observation import Observation
from probe.sinks.statuspage import key_evidence
from tests.unit.conftest import World

KNOCK = """\
messenger: knock
address_space: [127.0.0.0/8]
groups:
  doors:
    endpoints: [{name: door, addresses: [127.0.0.1]}]
    ports: [9]
    steps: [knock]
"""


async def knock(step: Step, env: Env) -> list[Observation]:
    """Waits for an answer that never comes, for as long as its timeout allows."""
    watch = Stopwatch()
    failure = None
    try:
        async with asyncio.timeout(env.timeout):
            await asyncio.Event().wait()
    except TimeoutError as exc:
        failure = failures.classify(exc)
    return [step.observe("knock", "knock", failure, watch, {"timeout": env.timeout})]


@pytest.fixture
def registered() -> Iterator[CheckSpec]:
    spec = CheckSpec(name="knock", timeout="knock", timeout_default=7.0, timeout_max=30.0,
                     label="Door knock", needs_address=True)
    checks.register(spec, knock)
    try:
        yield spec
    finally:
        del checks.REGISTRY["knock"]


def _config(world: World, tmp_path: Path, timeouts: dict[str, float]) -> dict[str, object]:
    (tmp_path / "knock.yaml").write_text(KNOCK)
    data = world.config_data(messengers={"knock": {"catalog": str(tmp_path / "knock.yaml")}})
    data["schedule"]["timeouts"].update(timeouts)  # type: ignore[index]
    return data


async def test_a_check_added_by_its_record_runs_times_out_and_is_labelled(
        world: World, tmp_path: Path, registered: CheckSpec) -> None:
    from probe.measure.round import run_round

    config = parse_config(yaml.safe_dump(_config(world, tmp_path, {"knock": 0.2})), "k.yaml")
    assert config.schedule.timeouts["knock"] == 0.2
    result = await run_round(config)
    [seen] = [o for o in result.observations if o.check == "knock"]
    assert seen.target == "door-v4:9" and seen.failure == failures.GENERIC_TIMEOUT
    assert seen.details["timeout"] == 0.2 and seen.duration_seconds < 2
    assert seen.attempts and len(seen.attempts) == 4  # confirmed, as records are by default
    lines = key_evidence({"verdict": "inconclusive", "evidence": [{"observation": seen.id}]},
                         {seen.id: seen.to_json()})
    assert lines[0] == "Door knock 127.0.0.1:9: generic_timeout_error at knock; 4 of 4 attempts failed"


def test_an_unset_timeout_takes_the_records_default(world: World, tmp_path: Path,
                                                    registered: CheckSpec) -> None:
    config = parse_config(yaml.safe_dump(_config(world, tmp_path, {})), "k.yaml")
    assert config.schedule.timeouts["knock"] == 7.0
    assert config.schedule.timeouts.of("knock") == 7.0


def test_a_timeout_past_the_records_limit_is_one_line(world: World, tmp_path: Path,
                                                      registered: CheckSpec) -> None:
    with pytest.raises(ConfigError, match=r"^k.yaml:\d+: schedule.timeouts: knock: 31 is too "
                                          r"large: must be at most 30$"):
        parse_config(yaml.safe_dump(_config(world, tmp_path, {"knock": 31})), "k.yaml")


def test_an_unknown_timeout_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text("vantage: {name: v}\nschedule:\n  timeouts:\n    conect: 3\n")
    result = CliRunner().invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"probe: error: {path}:3: schedule.timeouts: conect: no check has this timeout; "
        "did you mean 'connect'?"]


def test_an_unknown_trait_is_refused_when_the_record_is_made() -> None:
    with pytest.raises(TypeError, match="proves_offline"):
        CheckSpec(name="x", timeout="x", timeout_default=1.0, proves_offline=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="timeout_default"):
        CheckSpec(name="x", timeout="x", timeout_default=0)
    with pytest.raises(ValueError, match="registered twice"):
        checks.register(CheckSpec(name="tcp", timeout="connect", timeout_default=10.0), knock)
    with pytest.raises(ValueError, match=r"timeout 'connect' has default 10\.0"):
        checks.register(CheckSpec(name="other", timeout="connect", timeout_default=3.0), knock)


def test_the_records_agree_with_what_the_pipeline_asks() -> None:
    spec = {name: registered.spec for name, registered in checks.REGISTRY.items()}
    assert {n for n, s in spec.items() if s.authenticates} == {"tls", "mtproto", "mtproxy", "noise"}
    assert {n for n, s in spec.items() if s.proves_online} == {"dns", "tls", "mtproto", "mtproxy", "noise"}
    assert {n for n, s in spec.items() if s.connect_level} == {"tcp", "tls", "mtproto", "noise"}
    assert {n for n, s in spec.items() if not s.confirmed} == {"http"}
    assert {n for n, s in spec.items() if s.transfer} == {"http"}
    # every observation kind a variant records is a record of its own
    assert {s.records for s in spec.values()} <= set(spec)
