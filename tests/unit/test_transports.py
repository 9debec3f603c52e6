"""The apps' transports: obfuscated2 against the test DC, MTProxy (plain, dd, ee secrets)
against the test proxy, and the fixes found by comparing reach with Telethon (msg_id,
transport codes, the first bytes of a failed reply, the server's clock)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from probe.inputs.catalog import builtin
from probe.inputs.config import ConfigError, parse_config
from probe.inputs.plan import plan
from probe.measure.checks import mtproxy
from probe.measure.checks.mtproto import (
    CLOCK_SKEW_LIMIT,
    message_id,
    parse_reply,
    req_pq_message,
    req_pq_multi,
)
from probe.measure.wire import obfs2
from probe.model import failures as F
from tests.hardening.hostile import ScriptedTCP
from tests.support import checks
from tests.support.mtproto import MtprotoServer, build_res_pq
from tests.support.mtproxy import MtproxyServer

DD = "dd" + "5a" * 16
EE = "ee" + "a5" * 16 + b"www.lab-front.example".hex()
PLAIN = "c3" * 16


@pytest.mark.parametrize("protocol", ["intermediate", "abridged", "padded"])
async def test_obfuscated2_gets_res_pq_in_every_protocol(protocol: str) -> None:
    async with MtprotoServer() as dc:
        (obs,) = await checks.run("mtproto", checks.target("127.0.0.1", dc.port), checks.env(2.0),
                                  options={"protocol": protocol, "dc": 3})
    assert obs.failure is None, obs.details
    assert (obs.details["transport"], obs.details["protocol"]) == ("obfuscated2", protocol)
    assert dc.transports == [f"obfuscated2/{protocol}"] and dc.dc_ids == [3]
    assert dc.nonces == [bytes.fromhex(obs.details["nonce"])]


async def test_plain_transport_is_a_differential_observation() -> None:
    async with MtprotoServer() as dc:
        (obs,) = await checks.run("mtproto_plain", checks.target("127.0.0.1", dc.port), checks.env(2.0))
    assert obs.failure is None and obs.role == "differential"
    assert obs.details["transport"] == "intermediate" and dc.transports == ["intermediate"]


def test_init_never_starts_like_another_protocol() -> None:
    """The init is regenerated when it would read as HTTP, TLS, a plain tag or abridged."""
    bad_starts = [b"\xef" + bytes(63), b"HEAD" + b"\1" * 60, b"POST" + b"\1" * 60,
                  b"GET " + b"\1" * 60, b"OPTI" + b"\1" * 60, b"\xdd" * 4 + b"\1" * 60,
                  b"\xee" * 4 + b"\1" * 60, b"\x16\x03\x01\x02" + b"\1" * 60, b"\1" * 4 + bytes(60)]
    for start in bad_starts:
        assert obfs2.forbidden(start)
        init = obfs2.ObfuscatedInit.make(obfs2.TAG_INTERMEDIATE, 2, random=start)
        assert not obfs2.forbidden(init.header) and init.header[:8] != start[:8]
    good = b"\x01\x02\x03\x04\x05\x06\x07\x08" + bytes(range(56))
    assert obfs2.ObfuscatedInit.make(obfs2.TAG_INTERMEDIATE, 2, random=good).header[:56] == good[:56]


def test_message_id_low_half_never_zero() -> None:
    on_the_second = message_id(1_700_000_000.0)
    assert on_the_second & 0xFFFFFFFF != 0 and on_the_second % 4 == 0
    assert on_the_second >> 32 == 1_700_000_000
    assert struct.unpack_from("<q", req_pq_message(bytes(16), 1_700_000_000.0), 8)[0] == on_the_second


@pytest.mark.parametrize("code", [-404, -429, -444, -1, -500])
async def test_any_small_negative_reply_is_a_structured_transport_code(code: int) -> None:
    async with ScriptedTCP([("read", 48), ("send", struct.pack("<i", 4) + struct.pack("<i", code)),
                            ("close", None)]) as server:
        (obs,) = await checks.run("mtproto_plain", checks.target("127.0.0.1", server.port),
                                  checks.env(1.0))
    assert obs.failure == F.MTPROTO_UNEXPECTED_RESPONSE
    assert obs.details["transport_error"] == code


async def test_four_bytes_that_are_no_code_are_not_a_transport_error() -> None:
    async with ScriptedTCP([("read", 48), ("send", bytes.fromhex("04000000deadbeef")),
                            ("close", None)]) as server:
        (obs,) = await checks.run("mtproto_plain", checks.target("127.0.0.1", server.port),
                                  checks.env(1.0))
    assert obs.failure == F.MTPROTO_UNEXPECTED_RESPONSE and "transport_error" not in obs.details


@pytest.mark.parametrize("check", ["mtproto", "mtproto_plain"])
async def test_a_blockpage_answering_mtproto_leaves_its_first_bytes(check: str) -> None:
    page = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    async with ScriptedTCP([("read", 48), ("send", page), ("close", None)]) as server:
        (obs,) = await checks.run(check, checks.target("127.0.0.1", server.port), checks.env(1.0))
    assert obs.failure is not None
    assert bytes.fromhex(obs.details["reply_head"]) == page  # raw, as it came on the wire


@pytest.mark.parametrize(("offset", "skewed"), [(0.0, False), (45.0, True), (-3600.0, True)])
async def test_server_clock_offset_is_recorded(offset: float, skewed: bool) -> None:
    async with MtprotoServer(clock_offset=offset) as dc:
        (obs,) = await checks.run("mtproto", checks.target("127.0.0.1", dc.port), checks.env(2.0))
    assert obs.failure is None
    assert abs(obs.details["server_clock_offset_seconds"] - offset) < 2
    assert obs.details["clock_skewed"] is skewed
    assert (abs(offset) > CLOCK_SKEW_LIMIT) is skewed


def test_padded_replies_parse_and_unpadded_garbage_does_not() -> None:
    nonce = bytes(range(16))
    reply = build_res_pq(nonce)
    assert parse_reply(reply + b"\0" * 7, nonce, padded=True)["constructor"] == "0x05162463"
    with pytest.raises(F.ProtocolError):
        parse_reply(reply + b"\0" * 7, nonce)


# ---- MTProxy ----------------------------------------------------------------------------


def secret_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    return path


@pytest.mark.parametrize(("secret", "kind", "protocol"), [
    (DD, "dd", "padded"), (EE, "ee", "padded"), (PLAIN, "plain", "intermediate")])
async def test_proxy_relays_res_pq(tmp_path: Path, secret: str, kind: str, protocol: str) -> None:
    path = secret_file(tmp_path, secret)
    async with MtprotoServer() as dc, MtproxyServer(secret=secret, upstream=("127.0.0.1", dc.port)) as px:
        (obs,) = await checks.run("mtproxy", checks.target("127.0.0.1", px.port), checks.env(2.0),
                                  options={"secret_file": str(path), "dc": 4})
    assert obs.failure is None, obs.details
    assert (obs.details["secret_kind"], obs.details["protocol"]) == (kind, protocol)
    assert px.relayed == 1 and dc.nonces == [bytes.fromhex(obs.details["nonce"])]
    if kind == "ee":
        assert obs.details["sni"] == "www.lab-front.example"
        assert obs.details["fake_tls"] == "greeting verified"
    assert secret[2:34] not in repr(obs.to_json()) and "5a5a5a5a" not in repr(obs.to_json())


async def test_proxy_with_another_secret_fails_without_saying_the_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "ee" + "77" * 16 + b"www.lab-front.example".hex()
    monkeypatch.setenv("REACH_TEST_PROXY_SECRET", wrong)
    async with MtprotoServer() as dc, MtproxyServer(secret=EE, upstream=("127.0.0.1", dc.port)) as px:
        (obs,) = await checks.run("mtproxy", checks.target("127.0.0.1", px.port), checks.env(1.0),
                                  options={"secret_env": "REACH_TEST_PROXY_SECRET"})
    assert obs.failure is not None and px.relayed == 0 and px.rejected == 1
    assert "7777" not in repr(obs.to_json())


async def test_ee_neutral_sni_differential(tmp_path: Path) -> None:
    path = secret_file(tmp_path, EE)
    async with MtprotoServer() as dc, MtproxyServer(secret=EE, upstream=("127.0.0.1", dc.port)) as px:
        (obs,) = await checks.run("mtproxy_neutral_sni", checks.target("127.0.0.1", px.port),
                                  checks.env(2.0), role="differential",
                                  options={"secret_file": str(path), "neutral_sni": "neutral.example"})
        none = await checks.run("mtproxy_neutral_sni", checks.target("127.0.0.1", px.port),
                                checks.env(2.0), role="differential",
                                options={"secret_file": str(secret_file(tmp_path, DD)),
                                         "neutral_sni": "neutral.example"})
    assert obs.failure is None and obs.details["sni"] == "neutral.example"
    assert none == []  # a dd secret carries no name: nothing to compare


async def test_unreadable_secret_is_a_deployment_fault(tmp_path: Path) -> None:
    (obs,) = await checks.run("mtproxy", checks.target("127.0.0.1", 9), checks.env(1.0),
                              options={"secret_file": str(tmp_path / "missing")})
    assert obs.failure == F.UNKNOWN_FAILURE and "cannot read the MTProxy secret file" in obs.details["error"]


def test_secret_parsing_and_its_repr() -> None:
    parsed = obfs2.parse_secret(EE)
    assert (parsed.kind, parsed.domain, parsed.key) == ("ee", "www.lab-front.example", b"\xa5" * 16)
    assert "a5" not in repr(parsed) and "\\xa5" not in repr(parsed) and "\\xa5" not in str(parsed)
    for bad in ("00" * 15, "dd" + "00" * 17, "zz"):
        with pytest.raises(ValueError) as info:
            obfs2.parse_secret(bad)
        assert bad not in str(info.value)
    with pytest.raises(mtproxy.SecretUnavailable):
        mtproxy.read_secret({"secret_env": "REACH_SURELY_UNSET_VARIABLE"})


PROXY_CONFIG = """
vantage: {name: unit}
messengers:
  telegram:
    datacenters: []
    domains: []
    proxies:
      - {name: px1, address: 127.0.0.1, port: 8443, secret_env: PX1_SECRET}
      - {name: px2, address: "::1", secret_file: %s, sni: front.example, dc: -2}
"""


def test_proxies_are_targets_of_their_own_group(tmp_path: Path) -> None:
    path = secret_file(tmp_path, EE)
    config = parse_config(PROXY_CONFIG % path.name, "probe.yaml", base=tmp_path)
    (telegram,) = plan(config)
    # `datacenters: []` and `domains: []` empty those two groups only: the catalogue's other
    # groups (media DCs, the web client's hosts) are still measured, the proxies after them
    proxies = [t for t in telegram.targets if t.group == "mtproxy"]
    assert [t.name for t in proxies] == ["px1-v4:8443", "px2-v6:443"]
    assert list(telegram.targets[-len(proxies):]) == proxies
    others = {t.group for t in telegram.targets[:-len(proxies)]}
    assert others == set(builtin("telegram").groups) - {"datacenters", "domains"}
    first, second = proxies
    assert [s.check for s in second.steps] == ["tcp", "mtproxy"]
    assert second.steps[1].differentials == ["mtproxy_neutral_sni"]
    assert second.steps[1].options["secret_file"] == str(path)  # relative to the config
    assert second.steps[1].options["dc"] == -2 and first.steps[1].options["secret_env"] == "PX1_SECRET"


@pytest.mark.parametrize(("proxy", "message"), [
    ("{name: p, address: 127.0.0.1, secret: dd00}", "proxies[0].secret: unknown key"),
    ("{name: p, address: 127.0.0.1}", "exactly one of secret_file and secret_env"),
    ("{name: p, address: 127.0.0.1, secret_file: nope}", "secret_file: no such file"),
])
def test_bad_proxy_config_is_one_line(tmp_path: Path, proxy: str, message: str) -> None:
    text = f"vantage: {{name: unit}}\nmessengers:\n  telegram:\n    proxies:\n      - {proxy}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "probe.yaml", base=tmp_path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "dd00" not in str(info.value)


# ---- the fully-encrypted-traffic censor of the lab (tests/support/fetcensor.py) ----------


def test_fet_rule_blocks_the_apps_first_packet_and_exempts_the_rest() -> None:
    from tests.support.fetcensor import judge

    rng = random.Random(11)  # a fixed init whose first 6 bytes are not all printable
    init = obfs2.ObfuscatedInit.make(obfs2.TAG_INTERMEDIATE, 2, random=rng.randbytes(64))
    first = init.header + init.encrypt(struct.pack("<i", 40) + req_pq_message(rng.randbytes(16)))
    assert judge(first)[0] == "blocked" and 3.4 < judge(first)[1] < 4.6
    assert judge(req_pq_multi(rng.randbytes(16)))[0] == "exempt:popcount"  # the plain transport
    assert judge(b"POST /api HTTP/1.1\r\nHost: x\r\n\r\n")[0].startswith("exempt:")
    assert judge(obfs2.client_hello(b"k" * 16, "www.proxy-front.example"))[0].startswith("exempt:")
    assert judge(bytes([0x16, 0x03, 0x01]) + first[3:])[0] == "exempt:protocol"
    # 'U' and 0x0f have 4 bits set: popcount stays random-like, only the shape exempts
    assert judge(b"UUUUUU" + b"\x0f" * 100)[0] == "exempt:first-six-printable"
    assert judge((b"\x0f" + b"U" * 10) * 10)[0] == "exempt:half-printable"
    assert judge(b"\x0f" + b"U" * 21 + b"\x0f" * 100)[0] == "exempt:printable-run"
    assert judge(b"\x0f" + b"U" * 20 + b"\x0f" * 100)[0] == "blocked"


async def test_fet_relay_silences_obfuscated2_and_passes_plain() -> None:
    from tests.support.fetcensor import FetCensor

    async with MtprotoServer() as dc, FetCensor(destination=("127.0.0.1", dc.port)) as censor:
        where = checks.target("127.0.0.1", censor.port)
        (obfuscated,) = await checks.run("mtproto", where, checks.env(1.0))
        (plain,) = await checks.run("mtproto_plain", where, checks.env(1.0))
    verdicts = [d["verdict"] for d in censor.decisions]
    if verdicts[0] == "blocked":  # about 1 in 400 random inits is exempt, as with the GFW
        assert obfuscated.failure == F.GENERIC_TIMEOUT
    assert plain.failure is None and verdicts[1] == "exempt:popcount"
