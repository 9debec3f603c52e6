"""The per-messenger answer, "can a user here use it?" (probe.judge.answer): the rule case by
case, then what a reader sees of it: the round's JSON, the metrics, the status page card."""

from __future__ import annotations

import io
import itertools
import json
import re
import time
from html import unescape

import pytest

from probe.inputs.config import parse_config
from probe.inputs.plan import plan
from probe.judge.answer import ANSWER_CODES, ANSWERS, Answer, by_messenger
from probe.model.observation import RoundDraft, RoundResult, VantageNetwork, Verdict
from probe.model.verdicts import BLOCKING_VERDICTS, VERDICTS
from probe.sinks.metrics import Metrics
from probe.sinks.report import make_console, print_table
from probe.sinks.statuspage import History, render_page

T0 = 1_800_000_000.0


def one(pairs: list[tuple[str, str]], *, circumvention: str = "", online: bool = True,
        messenger: str = "whatsapp") -> Answer:
    """The answer from (path, verdict) pairs of one messenger's targets."""
    return by_messenger([(messenger, p, v, circumvention) for p, v in pairs], online=online)[messenger]


# ------------------------------------------------------------------ the rule, case by case


def test_every_path_ok_is_usable() -> None:
    a = one([("chat", "ok"), ("chat", "ok"), ("media", "ok"), ("registration", "ok"), ("web", "ok")])
    assert a.answer == "usable" and a.blocked_paths == [] and a.unjudged_paths == []
    assert a.sentence() == "WhatsApp: usable"


def test_blocked_paths_beside_a_working_chat_are_partly_blocked_and_named() -> None:
    a = one([("chat", "ok"), ("web", "ok"), ("registration", "dns_injection"),
             ("media", "tcp_reset"), ("media", "tcp_reset")])
    assert a.answer == "partly_blocked"
    assert a.blocked_paths == ["media", "registration"]  # in the catalogue's path order
    assert a.sentence() == "WhatsApp: partly blocked — media, registration"


def test_a_blocked_chat_path_is_blocked_whatever_else_works() -> None:
    a = one([("chat", "ip_blocking"), ("chat", "tcp_reset"), ("media", "ok"), ("web", "ok")])
    assert a.answer == "blocked" and a.states["chat"] == "blocked"
    assert a.sentence() == "WhatsApp: blocked — chat"


def test_every_path_blocked_is_blocked() -> None:
    a = one([("chat", "sni_filtering"), ("media", "tcp_reset"), ("web", "dns_blocking")],
            messenger="signal")
    assert a.answer == "blocked"
    assert a.sentence() == "Signal: blocked — chat, media, web"


def test_a_chat_path_blocked_in_part_is_partly_blocked_not_blocked() -> None:
    # port 443 blocked, 5222 works: the app falls back; the card says the chat path is hit
    a = one([("chat", "tcp_reset"), ("chat", "ok"), ("media", "ok")])
    assert a.states["chat"] == "partly_blocked" and a.answer == "partly_blocked"
    assert a.sentence() == "WhatsApp: partly blocked — chat (some targets)"


def test_blocked_beside_inconclusive_is_never_a_whole_block() -> None:
    """A false "blocked" is worse than a late one: a target that could not be judged may
    work, so the path is only blocked in part."""
    a = one([("chat", "ip_blocking"), ("chat", "inconclusive"), ("media", "ok")])
    assert a.states["chat"] == "partly_blocked" and a.answer == "partly_blocked"


def test_an_address_family_the_vantage_lacks_is_no_evidence() -> None:
    # every IPv4 chat target blocked, IPv6 unusable at this vantage: the chat path is blocked
    a = one([("chat", "tcp_reset"), ("chat", "vantage_offline"), ("media", "ok")])
    assert a.states["chat"] == "blocked" and a.answer == "blocked"
    assert a.paths["chat"].to_json() == {"state": "blocked", "targets": 2, "ok": 0, "blocked": 1,
                                         "inconclusive": 0, "vantage_offline": 1}


def test_an_unjudged_chat_path_is_unknown_and_still_names_what_is_blocked() -> None:
    a = one([("chat", "inconclusive"), ("chat", "vantage_offline"), ("media", "tcp_reset")])
    assert a.answer == "unknown"
    assert a.sentence() == "WhatsApp: unknown — chat not judged; blocked: media"
    assert one([("chat", "inconclusive"), ("media", "ok")]).sentence() == (
        "WhatsApp: unknown — chat not judged")


def test_usable_names_the_paths_without_evidence() -> None:
    a = one([("chat", "ok"), ("media", "ok"), ("web", "inconclusive")])
    assert a.answer == "usable" and a.unjudged_paths == ["web"]
    assert a.sentence() == "WhatsApp: usable (not judged: web)"
    # ok beside inconclusive on one path: it works (the ok proves it), nothing is blocked
    assert one([("chat", "ok"), ("chat", "inconclusive")]).states["chat"] == "ok"


def test_an_offline_vantage_answers_unknown() -> None:
    a = one([("chat", "vantage_offline"), ("media", "vantage_offline")])
    assert a.answer == "unknown" and a.sentence() == "WhatsApp: unknown — this vantage is offline"
    # offline by the vantage's own judgement: nothing is blocked, whatever a verdict says
    b = one([("chat", "tcp_reset"), ("media", "ok")], online=False)
    assert b.answer == "unknown" and b.blocked_paths == []
    assert b.sentence() == "WhatsApp: unknown — this vantage is offline"


def test_circumvention_targets_are_no_part_of_the_answer() -> None:
    answers = by_messenger([("whatsapp", "chat", "ok", ""),
                            ("whatsapp", "chat", "tcp_reset", "whatsapp_proxy"),
                            ("signal", "chat", "ok", "domain_fronting")], ["telegram"])
    assert answers["whatsapp"].answer == "usable"
    assert answers["signal"].answer == "unknown"  # a detour alone says nothing of the service
    assert answers["telegram"].sentence() == "Telegram: unknown — no targets"


def test_a_control_vantage_says_failing_not_blocked() -> None:
    a = one([("chat", "ok"), ("media", "tcp_reset")], messenger="telegram")
    assert a.sentence("control") == "Telegram: partly failing — media"
    assert one([("chat", "tcp_reset")]).sentence("control") == "WhatsApp: failing — chat"


VERDICT_CHOICES = ("ok", "tcp_reset", "inconclusive", "vantage_offline")


@pytest.mark.parametrize("chat,media", list(itertools.product(
    itertools.combinations_with_replacement(VERDICT_CHOICES, 2), repeat=2)))
def test_never_blocked_or_usable_without_evidence(chat: tuple[str, ...], media: tuple[str, ...]) -> None:
    """Over every mix of two chat and two media targets: `blocked` needs a path whose every
    judged target is blocked, `usable` an ok on chat and no blocked target anywhere (a chat
    target blocked beside one not judged is `partly_blocked`: a late "blocked", never a
    false one)."""
    a = one([*(("chat", v) for v in chat), *(("media", v) for v in media)])
    assert a.answer in ANSWERS
    judged = {p: [v for v in vs if v != "vantage_offline"] for p, vs in (("chat", chat), ("media", media))}
    whole = {p for p, vs in judged.items() if vs and all(v in BLOCKING_VERDICTS for v in vs)}
    if a.answer == "blocked":
        assert "chat" in whole or whole == {"chat", "media"}
    if a.answer == "usable":
        assert "ok" in chat and not any(v in BLOCKING_VERDICTS for v in (*chat, *media))
    if a.answer == "partly_blocked":  # a block is seen, and chat is judged (not wholly blocked)
        assert a.blocked_paths and a.states["chat"] in ("ok", "partly_blocked")
    assert set(a.blocked_paths) == {p for p, vs in judged.items() if any(v in BLOCKING_VERDICTS for v in vs)}


def test_every_verdict_has_a_place() -> None:
    for verdict in VERDICTS:
        assert one([("chat", verdict)]).answer in ANSWERS
    assert sorted(ANSWER_CODES) == sorted(ANSWERS)


# ------------------------------------------------------------------ what a reader sees

CONFIG = ("vantage: {name: ir-1, country: IR, asn: 64500, role: %s}\n"
          "messengers: {whatsapp: {}, telegram: {}}\n")


def whatsapp_round(role: str = "subject", online: bool = True) -> RoundResult:
    """The built-in WhatsApp and Telegram plans; WhatsApp's media and registration targets
    blocked, everything else ok."""
    config = parse_config(CONFIG % role)
    targets = [t for p in plan(config) for t in p.targets]
    verdicts = []
    for t in targets:
        verdict = {"media": "tcp_reset", "registration": "dns_injection"}.get(t.path, "ok") \
            if t.messenger == "whatsapp" else "ok"
        # as the classifier makes them: no path (RoundDraft.judged stamps it)
        verdicts.append(Verdict(str(t.messenger), t.name, verdict, "rule", "", []))
    draft = RoundDraft(config.vantage.identity(), targets, T0, T0 + 3)
    draft.network = VantageNetwork(online=online, online_ipv4=online, baseline_ok=online)
    return draft.judged(verdicts)


def test_the_round_json_carries_the_answer_and_each_verdict_its_path() -> None:
    data = json.loads(json.dumps(whatsapp_round().json))
    answer = data["answers"]["whatsapp"]
    assert answer["answer"] == "partly_blocked"
    assert answer["blocked_paths"] == ["media", "registration"]
    assert answer["sentence"] == "WhatsApp: partly blocked — media, registration"
    assert answer["paths"]["chat"]["state"] == "ok" and answer["paths"]["chat"]["ok"] > 0
    assert answer["paths"]["media"] == {"state": "blocked", "targets": 2, "ok": 0, "blocked": 2,
                                        "inconclusive": 0, "vantage_offline": 0}
    assert data["answers"]["telegram"]["answer"] == "usable"
    mmg = next(v for v in data["verdicts"] if v["target"] == "mmg.whatsapp.net/v4")
    assert mmg["path"] == "media" and mmg["verdict"] == "tcp_reset"


def test_metrics_export_the_answer_and_each_path() -> None:
    metrics = Metrics()
    metrics.record_round(whatsapp_round())
    text = metrics.render().decode()
    answers = [line for line in text.splitlines() if line.startswith("reach_messenger_answer{")]
    assert sorted(answers) == [
        'reach_messenger_answer{vantage="ir-1",messenger="telegram",answer="usable"} 1',
        'reach_messenger_answer{vantage="ir-1",messenger="whatsapp",answer="partly_blocked"} 1']
    assert 'reach_messenger_path{vantage="ir-1",messenger="whatsapp",path="media",state="blocked"} 1' in text
    assert 'reach_messenger_path{vantage="ir-1",messenger="whatsapp",path="chat",state="ok"} 1' in text
    paths = [line for line in text.splitlines() if line.startswith("reach_messenger_path{")]
    assert len(paths) == 4 + 3  # WhatsApp chat, media, registration, web; Telegram chat, media, web


def cards(page: str) -> dict[str, str]:
    return dict(re.findall(r"<section class='card' data-messenger='(\w+)'>(.*?)</section>", page))


def answer_line(card: str) -> tuple[str, str, str]:
    match = re.search(r"<p class='answer a-(\w+)' data-answer='(\w+)' data-blocked-paths='([^']*)'>"
                      r"(.*?)</p>", card)
    assert match, card
    assert match[1] == match[2]
    return match[2], match[3], unescape(match[4])


def page_of(result: RoundResult) -> str:
    return render_page(result.json, History(), vantage=result.json["vantage"], now=time.time())


def test_the_status_card_says_whether_a_user_can_use_it() -> None:
    page = page_of(whatsapp_round())
    whatsapp = cards(page)["whatsapp"]
    assert answer_line(whatsapp) == ("partly_blocked", "media registration",
                                     "WhatsApp: partly blocked — media, registration")
    chips = dict(re.findall(r"data-path='(\w+)' data-state='(\w+)'", whatsapp))
    assert chips == {"chat": "ok", "media": "blocked", "registration": "blocked", "web": "ok"}
    assert answer_line(cards(page)["telegram"]) == ("usable", "", "Telegram: usable")
    # the answer comes first on the card, before the counts per verdict
    assert whatsapp.index("class='answer") < whatsapp.index("class='counts'")


def test_the_card_of_a_control_or_offline_vantage() -> None:
    control = cards(page_of(whatsapp_round(role="control")))["whatsapp"]
    assert answer_line(control)[2] == "WhatsApp: partly failing — media, registration"
    offline = cards(page_of(whatsapp_round(online=False)))["whatsapp"]
    assert answer_line(offline) == ("unknown", "", "WhatsApp: unknown — this vantage is offline")


def test_probe_once_prints_each_messengers_answer_under_its_table() -> None:
    out = io.StringIO()
    print_table(whatsapp_round(), make_console(out))
    lines = out.getvalue().splitlines()
    assert "WhatsApp: partly blocked — media, registration" in lines
    assert "Telegram: usable" in lines


def test_a_round_without_answers_draws_no_answer_line() -> None:
    """An older round's JSON (no `answers`) is drawn as before, without a made-up answer."""
    data = dict(whatsapp_round().json)
    del data["answers"]
    page = render_page(data, History(), vantage=data["vantage"], now=time.time())
    assert "class='answer" not in page and "data-messenger='whatsapp'" in page
