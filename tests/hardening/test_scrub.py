"""Issue 12, finding 6: one scrubber (probe/sinks/scrub.py) for every output. A server that echoes
the client's address (in a `Location` header) must not get the vantage's own address into
/api/status, the status page, /metrics, the evidence log or the service's log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.inputs.config import load_config
from probe.serve.server import make_app
from probe.serve.service import Service
from probe.sinks.scrub import SCRUBBED, Scrubber, ScrubFilter, host_addresses
from tests.hardening._counts import CASES, EXAMPLES
from tests.hardening.hostile import ScriptedUDP
from tests.hardening.test_fuzz_dns import good_reply
from tests.hardening.util import loopback_config

OWN = "127.0.0.2"


def test_whole_addresses_only_in_every_form() -> None:
    scrub = Scrubber(["198.18.0.5", "2001:db8::5"], host=False)
    assert scrub.text("from 198.18.0.5:443") == f"from {SCRUBBED}:443"
    assert scrub.text("198.18.0.50 and 198.18.0.5.1 and 1198.18.0.5") == \
        "198.18.0.50 and 198.18.0.5.1 and 1198.18.0.5"
    assert scrub.text("::ffff:198.18.0.5") == f"::ffff:{SCRUBBED}"
    assert scrub.text("[2001:db8::5]:443 2001:DB8::5 2001:0db8:0000:0000:0000:0000:0000:0005") == \
        f"[{SCRUBBED}]:443 {SCRUBBED} {SCRUBBED}"
    assert scrub.text("2001:db8::50") == "2001:db8::50"
    assert scrub.bytes(b'{"a":"198.18.0.5"}') == b'{"a":"%s"}' % SCRUBBED.encode()
    scrub.configure([])
    assert scrub.text("198.18.0.5") == "198.18.0.5"


def test_host_addresses_from_proc(tmp_path: Path) -> None:
    fib = tmp_path / "fib_trie"
    fib.write_text("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n"
                   "     |-- 192.0.2.2\n        /32 host LOCAL\n     |-- 192.0.2.255\n"
                   "        /32 link BROADCAST\n")
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("00000000000000000000000000000001 01 80 10 80 lo\n"
                     "fd000000000000000000000000000002 04 40 00 82 eth0\n")
    assert host_addresses(fib, inet6) == {"192.0.2.2", "fd00::2"}
    assert host_addresses(tmp_path / "none", tmp_path / "none") == set()
    live = host_addresses()  # this machine: loopback never listed
    assert "127.0.0.1" not in live and "::1" not in live


def test_log_lines_and_tracebacks_are_scrubbed() -> None:
    record = logging.LogRecord("probe", logging.ERROR, __file__, 1, "peer %s said %r", (OWN, "x"), None)
    try:
        raise OSError(f"cannot bind {OWN}")
    except OSError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    ScrubFilter(Scrubber([OWN], host=False)).filter(record)
    text = logging.Formatter().format(record)
    assert OWN not in text and text.count(SCRUBBED) == 2


async def test_an_echoed_address_reaches_no_output(tmp_path: Path) -> None:
    """Connections go out from 127.0.0.2; the web server redirects to a URL naming the
    client's address, as captive portals and blockpages do."""
    peers: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(str(request.remote))
        return web.Response(status=302, headers={
            "Location": f"http://portal.example/{request.remote}/?ip={request.remote}"})

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    udp = ScriptedUDP(lambda q: [good_reply(q, "127.0.0.1")])
    try:
        async with udp:
            path = loopback_config(
                tmp_path / "probe.yaml", dc_port=port, source=OWN, evidence=tmp_path / "ev",
                resolvers=[{"name": "udp", "address": "127.0.0.1", "port": udp.port}],
                domains=[{"name": "web.telegram.org", "url": f"http://web.telegram.org:{port}/",
                          "port": port}],
                timeout=1)
            service = Service(path, load_config(path))
            await service.run_one()
    finally:
        await runner.cleanup()
    assert OWN in peers  # the echo really carried the vantage's address
    raw = str([o.to_json() for o in service.latest.observations])  # type: ignore[union-attr]
    # ... and the check scrubbed it as it was captured (the query is not kept at all)
    assert OWN not in raw and f"portal.example/{SCRUBBED}/" in raw and "?ip=" not in raw
    async with TestClient(TestServer(make_app(service))) as client:
        for url in ("/api/status", "/", "/metrics"):
            response = await client.get(url)
            body = await response.text()
            assert response.status == 200 and OWN not in body, url
        assert SCRUBBED in await (await client.get("/api/status")).text()
        gz = await client.get("/api/status", headers={"Accept-Encoding": "gzip"})
        assert OWN not in await gz.text()
    evidence = (tmp_path / "ev" / "evidence.jsonl").read_text()
    assert OWN not in evidence and SCRUBBED in evidence


def test_probe_once_prints_no_own_address(tmp_path: Path) -> None:
    """`probe once` (table and JSON) goes through the scrubber too: the same echoing server,
    a real subprocess, a UDP resolver in a thread."""
    import http.server
    import json
    import socket
    import threading

    import dns.message
    import dns.rrset

    from tests.hardening.util import cli

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name for it
            self.send_response(302)
            self.send_header("Location", f"http://portal.example/{self.client_address[0]}/?ip={self.client_address[0]}")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    web_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resolver.bind(("127.0.0.1", 0))
    resolver.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                data, peer = resolver.recvfrom(4096)
            except OSError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            if question.rdtype == 1:
                reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1"))
            resolver.sendto(reply.to_wire(), peer)

    threads = [threading.Thread(target=web_server.serve_forever, daemon=True),
               threading.Thread(target=answer, daemon=True)]
    for thread in threads:
        thread.start()
    port = web_server.server_address[1]
    try:
        path = loopback_config(
            tmp_path / "probe.yaml", dc_port=port, source=OWN, timeout=1,
            resolvers=[{"name": "udp", "address": "127.0.0.1", "port": resolver.getsockname()[1]}],
            domains=[{"name": "web.telegram.org", "url": f"http://web.telegram.org:{port}/", "port": port}])
        result = cli("once", "--config", str(path), "--format", "json", timeout=60)
        table = cli("once", "--config", str(path), timeout=60)
    finally:
        stop.set()
        web_server.shutdown()
        resolver.close()
    assert result.returncode == 0, result.stderr
    assert OWN not in result.stdout and "portal.example/[vantage]/" in result.stdout
    json.loads(result.stdout)
    assert table.returncode == 0 and OWN not in table.stdout


# ---- the address echoed in every spelling a server might use ---------------------------

def spellings(address: str) -> dict[str, bytes]:
    """The forms a hostile server can echo an IPv4 address in (the review's list)."""
    import base64
    import ipaddress
    import urllib.parse

    ip = ipaddress.IPv4Address(address)
    o = list(ip.packed)
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    text = address.encode()
    return {
        "dotted": text,
        "dashed host": f"ip-{o[0]}-{o[1]}-{o[2]}-{o[3]}.pool.example".encode(),
        "underscored": "_".join(map(str, o)).encode(),
        "zero-padded": ".".join(f"{x:03d}" for x in o).encode(),
        "percent-encoded": urllib.parse.quote(address, safe="").replace(".", "%2E").encode(),
        "reverse dns": f"{o[3]}.{o[2]}.{o[1]}.{o[0]}.in-addr.arpa".encode(),
        "decimal": str(int(ip)).encode(),
        "hex": f"0x{ip.packed.hex()}".encode(),
        "bare hex upper": ip.packed.hex().upper().encode(),
        "dotted hex": ".".join(f"0x{x:x}" for x in o).encode(),
        "v4-mapped": f"::ffff:{address}".encode(),
        "v4-mapped hex": mapped.compressed.encode() if ":" in mapped.compressed.split("ffff:")[-1]
        else f"::ffff:{ip.packed[:2].hex()}:{ip.packed[2:].hex()}".encode(),
        "v4-mapped exploded": mapped.exploded.encode(),
        "v4-mapped percent": f"%3A%3Affff%3A{address}".encode(),
        "base64 text": base64.b64encode(text),
        "base64 text shifted": base64.b64encode(b"ip=" + text)[4:],
        "base64 packed": base64.b64encode(b"\x00" + ip.packed),
        "hex of text": text.hex().encode(),
        "packed": ip.packed,
    }


def needles(address: str) -> dict[str, str]:
    """What must not appear in any output: each spelling's text (the packed bytes as the
    hex and base64 an output would show them)."""
    import base64

    found = {name: form.decode("latin-1") for name, form in spellings(address).items() if name != "packed"}
    packed = spellings(address)["packed"]
    found["packed as hex"] = packed.hex()
    found["packed as base64"] = base64.b64encode(packed).decode().rstrip("=")
    found["base64 text"] = found["base64 text"].rstrip("=")
    found["base64 packed"] = base64.b64encode(packed).decode().rstrip("=")
    return found


@settings(max_examples=max(3, min(EXAMPLES, 12)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_fuzz_an_echo_in_any_spelling_reaches_no_output(
        data: st.DataObject, tmp_path_factory: pytest.TempPathFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every server the round talks to (web, data centres, resolver) echoes the vantage's
    address in spellings drawn from the list, in the Location header, the body and raw
    bytes; no output (evidence, /api/status, /api/target, the page, /metrics, the log)
    holds any of them."""
    tmp_path = tmp_path_factory.mktemp("echo")
    forms = spellings(OWN)
    chosen = data.draw(st.lists(st.sampled_from(sorted(forms)), min_size=3, max_size=len(forms), unique=True))
    # (digits run together are one number: no empty glue)
    glue = data.draw(st.sampled_from([b" ", b"/", b"=", b"\x00", b"&ip=", b","]))
    echoed = [forms[name] for name in chosen]
    CASES["scrub/echoed spellings"] += len(echoed)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        payload = glue.join(spellings(peer)[name] for name in chosen)
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(reader.read(4096), 2)
        path = urllib.parse.quote(payload, safe="/=&:%")
        writer.write(b"HTTP/1.1 302 Found " + payload.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
                     b"Location: http://portal.example/" + path.encode() + b"?ip=" + path.encode() + b"\r\n"
                     b"X-Your-Address: " + path.encode() + b"\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def resolve(query: bytes) -> list[bytes]:
        garbage = query[:2] + b"\x81\x80" + glue.join(echoed)  # our id: parsed, then garbage
        wrong = bytes([query[0] ^ 0xFF]) + query[1:2] + glue.join(echoed)
        return [wrong, garbage, good_reply(query, "127.0.0.1")]

    udp = ScriptedUDP(resolve)
    caplog.set_level(logging.DEBUG)
    try:
        async with udp:
            path = loopback_config(
                tmp_path / "probe.yaml", dc_port=port, source=OWN, evidence=tmp_path / "ev",
                resolvers=[{"name": "udp", "address": "127.0.0.1", "port": udp.port}],
                domains=[{"name": "web.telegram.org", "url": f"http://web.telegram.org:{port}/",
                          "port": port}],
                timeout=1)
            service = Service(path, load_config(path))
            await service.run_one()
            outputs: dict[str, str] = {}
            async with TestClient(TestServer(make_app(service))) as client:
                for url in ("/api/status", "/", "/metrics", "/api/target/telegram/dc0",
                            "/api/target/telegram/web.telegram.org/v4"):
                    response = await client.get(url)
                    outputs[url] = f"{response.status} {dict(response.headers)} {await response.text()}"
    finally:
        server.close()
        await server.wait_closed()
    outputs["evidence"] = (tmp_path / "ev" / "evidence.jsonl").read_text()
    outputs["log"] = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    for where, text in outputs.items():
        for name, needle in needles(OWN).items():
            at = text.lower().find(needle.lower())
            assert at < 0, (name, needle, where, text[max(0, at - 300):at + 100])
    assert SCRUBBED in outputs["evidence"]
