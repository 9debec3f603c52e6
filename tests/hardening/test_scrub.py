"""Issue 12, finding 6: one scrubber (probe/sinks/scrub.py) for every output. A server that echoes
the client's address (in a `Location` header) must not get the vantage's own address into
/api/status, the status page, /metrics, the evidence log or the service's log."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from probe.inputs.config import load_config
from probe.serve.server import make_app
from probe.serve.service import Service
from probe.sinks.scrub import SCRUBBED, Scrubber, ScrubFilter, host_addresses
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
        return web.Response(status=302, headers={"Location": f"http://portal.example/?ip={request.remote}"})

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
    assert OWN in raw  # ... into the observations: only the outputs are scrubbed
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
            self.send_header("Location", f"http://portal.example/?ip={self.client_address[0]}")
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
    assert OWN not in result.stdout and "portal.example/?ip=[vantage]" in result.stdout
    json.loads(result.stdout)
    assert table.returncode == 0 and OWN not in table.stdout
