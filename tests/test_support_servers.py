"""Each test server does what it claims, checked with raw clients (dnspython, sockets, ssl).

Why: engine tests, the lab and the fuzzers trust these servers to produce exact wire
behaviour; a broken server would make a correct probe look wrong. Kept fast (< a few s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from tests.support._common import (
    IRAN_BLOCKPAGE_BODY,
    HttpSpec,
    ThreadedServer,
    format_addr,
    parse_listen,
)
from tests.support.dnsserver import DnsServer
from tests.support.mtproto import (
    FINGERPRINTS,
    PQ,
    RES_PQ,
    MtprotoServer,
    build_req_pq_multi,
)
from tests.support.tcpserver import ResetServer, TarpitServer, TcpServer
from tests.support.tlsserver import WRONG_NAME, LabCA, TlsServer

ROOT = Path(__file__).resolve().parent.parent
ZONE = {"web.telegram.org": {"A": ["198.18.64.10"], "AAAA": ["2001:db8:64::10"]}}


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HOSTS = ["127.0.0.1"] + (["::1"] if _has_ipv6_loopback() else [])


# ------------------------------------------------------------------------------ common


def test_parse_listen_roundtrip() -> None:
    assert parse_listen("198.18.1.53:53") == ("198.18.1.53", 53)
    assert parse_listen("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_listen(":80") == ("127.0.0.1", 80)
    assert format_addr("2001:db8::1", 443) == "[2001:db8::1]:443"
    with pytest.raises(ValueError):
        parse_listen("2001:db8::1:443")


# ------------------------------------------------------------------------------ DNS


async def _query(server: DnsServer, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    if tcp:
        return await dns.asyncquery.tcp(q, server.host, port=server.port, timeout=2)
    return await dns.asyncquery.udp(q, server.host, port=server.port, timeout=2)


def _addresses(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("tcp", [False, True])
async def test_dns_answers_from_zone(host: str, tcp: bool) -> None:
    async with DnsServer(host, zone=ZONE) as srv:
        a = await _query(srv, "web.telegram.org", "A", tcp)
        aaaa = await _query(srv, "WEB.telegram.org.", "AAAA", tcp)
        other = await _query(srv, "nope.telegram.org", "A", tcp)
        mx = await _query(srv, "web.telegram.org", "MX", tcp)
    assert _addresses(a) == ["198.18.64.10"]
    assert _addresses(aaaa) == ["2001:db8:64::10"]
    assert other.rcode() == dns.rcode.NXDOMAIN
    assert mx.rcode() == dns.rcode.NOERROR and not mx.answer
    assert srv.queries[0] == ("tcp" if tcp else "udp", "web.telegram.org.", "A")


@pytest.mark.parametrize(
    ("behaviour", "rcode"),
    [
        ("nxdomain", dns.rcode.NXDOMAIN),
        ("servfail", dns.rcode.SERVFAIL),
        ("refused", dns.rcode.REFUSED),
        ("noanswer", dns.rcode.NOERROR),
    ],
)
async def test_dns_error_behaviours(behaviour: str, rcode: int) -> None:
    async with DnsServer(zone=ZONE, behaviours={"web.telegram.org": behaviour}) as srv:
        r = await _query(srv, "web.telegram.org", "A")
        r_tcp = await _query(srv, "web.telegram.org", "A", tcp=True)
    assert r.rcode() == rcode and not r.answer
    assert r_tcp.rcode() == rcode


async def test_dns_bogon_answers_forged_addresses() -> None:
    async with DnsServer(zone=ZONE, behaviour="bogon") as srv:
        a = await _query(srv, "web.telegram.org", "A")
        aaaa = await _query(srv, "web.telegram.org", "AAAA")
        srv.forged = {"A": ["198.18.99.99"]}
        plausible = await _query(srv, "web.telegram.org", "A")
    assert _addresses(a) == ["10.10.34.34"]
    assert _addresses(aaaa) == ["d0::11"]
    assert _addresses(plausible) == ["198.18.99.99"]


async def test_dns_silent_never_answers() -> None:
    async with DnsServer(zone=ZONE, behaviour="silent") as srv:
        q = dns.message.make_query("web.telegram.org", "A")
        with pytest.raises(dns.exception.Timeout):
            await dns.asyncquery.udp(q, srv.host, port=srv.port, timeout=0.3)
        assert srv.queries  # it did receive the query


def test_dns_race_sends_forged_then_real() -> None:
    with ThreadedServer(DnsServer(zone=ZONE, behaviour="race", race_delay=0.1)) as srv:
        q = dns.message.make_query("web.telegram.org", "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(q.to_wire(), srv.address)
            first = dns.message.from_wire(s.recv(4096))
            second = dns.message.from_wire(s.recv(4096))
    assert first.id == second.id == q.id
    assert _addresses(first) == ["10.10.34.34"]
    assert _addresses(second) == ["198.18.64.10"]


def test_dns_survives_junk() -> None:
    with (
        ThreadedServer(DnsServer(zone=ZONE)) as srv,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
    ):
        s.settimeout(1)
        s.sendto(b"\x12\x34" + os.urandom(20), srv.address)
        reply = s.recv(4096)
        s.sendto(dns.message.make_query("web.telegram.org", "A").to_wire(), srv.address)
        ok = dns.message.from_wire(s.recv(4096))
    assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 1  # FORMERR
    assert _addresses(ok) == ["198.18.64.10"]


# ------------------------------------------------------------------------------ MTProto


async def _mtproto_exchange(
    srv: MtprotoServer, payload: bytes, timeout: float = 2.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(payload)
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("host", HOSTS)
async def test_mtproto_intermediate_res_pq(host: str) -> None:
    nonce = os.urandom(16)
    req = build_req_pq_multi(nonce)
    async with MtprotoServer(host) as srv:
        reader, writer = await _mtproto_exchange(srv, b"\xee\xee\xee\xee" + struct.pack("<i", len(req)) + req)
        (length,) = struct.unpack("<i", await asyncio.wait_for(reader.readexactly(4), 2))
        body = await reader.readexactly(length)
        writer.close()
    auth_key_id, msg_id, mlen, ctor = struct.unpack_from("<qqiI", body)
    assert (auth_key_id, ctor, mlen) == (0, RES_PQ, length - 20)
    assert msg_id % 4 == 1
    assert body[24:40] == nonce
    assert body[56] == 8 and int.from_bytes(body[57:65], "big") == PQ
    (count,) = struct.unpack_from("<i", body, 72)
    fps = struct.unpack_from(f"<{count}Q", body, 76)
    assert 0xD09D1D85DE64FD85 in fps and fps == FINGERPRINTS
    assert srv.nonces == [nonce]


async def test_mtproto_abridged_res_pq() -> None:
    nonce = os.urandom(16)
    req = build_req_pq_multi(nonce)
    async with MtprotoServer() as srv:
        reader, writer = await _mtproto_exchange(srv, b"\xef" + bytes([len(req) // 4]) + req)
        words = (await asyncio.wait_for(reader.readexactly(1), 2))[0]
        body = await reader.readexactly(words * 4)
        writer.close()
    assert struct.unpack_from("<I", body, 20)[0] == RES_PQ and body[24:40] == nonce


def _intermediate(nonce: bytes) -> bytes:
    req = build_req_pq_multi(nonce)
    return b"\xee\xee\xee\xee" + struct.pack("<i", len(req)) + req


async def test_mtproto_transport_error_bytes() -> None:
    async with MtprotoServer(mode="transport_error") as srv:
        reader, writer = await _mtproto_exchange(srv, _intermediate(os.urandom(16)))
        data = await asyncio.wait_for(reader.readexactly(8), 2)
        writer.close()
    assert data == b"\x04\x00\x00\x00\x6c\xfe\xff\xff"


async def test_mtproto_wrong_nonce_and_garbage() -> None:
    nonce = os.urandom(16)
    async with MtprotoServer(mode="wrong_nonce") as srv:
        reader, writer = await _mtproto_exchange(srv, _intermediate(nonce))
        (length,) = struct.unpack("<i", await asyncio.wait_for(reader.readexactly(4), 2))
        body = await reader.readexactly(length)
        writer.close()
        assert struct.unpack_from("<I", body, 20)[0] == RES_PQ and body[24:40] != nonce
        srv.mode = "garbage"
        reader, writer = await _mtproto_exchange(srv, _intermediate(nonce))
        junk = await asyncio.wait_for(reader.readexactly(64), 2)
        writer.close()
    assert len(junk) == 64


async def test_mtproto_silent_close_reset() -> None:
    async with MtprotoServer(mode="silent") as srv:
        reader, writer = await _mtproto_exchange(srv, _intermediate(os.urandom(16)))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.close()
        srv.mode = "close"
        reader, writer = await _mtproto_exchange(srv, _intermediate(os.urandom(16)))
        assert await asyncio.wait_for(reader.read(1), 2) == b""
        writer.close()
        srv.mode = "reset"
        reader, writer = await _mtproto_exchange(srv, _intermediate(os.urandom(16)))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 2)
        writer.close()


async def test_mtproto_answers_http_like_a_dc() -> None:
    async with MtprotoServer() as srv:
        reader, writer = await _mtproto_exchange(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 2)
        writer.close()
    assert data.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert b"Server: nginx/0.3.33" in data


# ------------------------------------------------------------------------------ TLS


async def _https_get(srv: TlsServer, ctx: ssl.SSLContext, sni: str, path: str = "/") -> tuple[bytes, int]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(srv.host, srv.port, ssl=ctx, server_hostname=sni), 2
    )
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, len(body)


@pytest.mark.parametrize("host", HOSTS)
async def test_tls_good_cert_and_http(host: str, tmp_path: Path) -> None:
    ca = LabCA()
    pem = ca.write_ca_pem(tmp_path / "ca.pem")
    ctx = ssl.create_default_context(cafile=str(pem))
    spec = HttpSpec(status=200, body=b"hello", blobs={"/blob": 300_000})
    async with TlsServer(host, ca=ca, names=["web.telegram.org", "t.me"], http=spec) as srv:
        head, n = await _https_get(srv, ctx, "web.telegram.org")
        assert head.startswith(b"HTTP/1.1 200 OK") and n == 5
        head, n = await _https_get(srv, ctx, "t.me", "/blob")
        assert n == 300_000
        # any SNI completes the handshake (the certificate does not match, we do not check)
        loose = ssl.create_default_context()
        loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
        head, _ = await _https_get(srv, loose, "neutral.example")
        assert head.startswith(b"HTTP/1.1 200")
    assert srv.server_names == ["web.telegram.org", "t.me", "neutral.example"]


async def test_tls_wrong_name_and_unknown_ca() -> None:
    ca = LabCA()
    ctx = ca.client_context()
    async with TlsServer(ca=ca, names=["web.telegram.org"], mode="wrong_name") as srv:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await _https_get(srv, ctx, "web.telegram.org")
        assert info.value.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
        assert WRONG_NAME not in ("web.telegram.org",)
    async with TlsServer(ca=ca, names=["web.telegram.org"], mode="unknown_ca") as srv:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await _https_get(srv, ctx, "web.telegram.org")
        assert info.value.verify_code in (19, 20)  # self-signed in chain / unable to get issuer


def test_lab_ca_roundtrip(tmp_path: Path) -> None:
    ca = LabCA()
    ca.save(tmp_path / "ca.pem", tmp_path / "ca.key")
    again = LabCA.load_or_create(tmp_path)
    assert again.ca.cert_pem.bytes() == ca.ca.cert_pem.bytes()
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"


# ------------------------------------------------------------------------------ TCP


async def test_tcp_reset_at_accept() -> None:
    async with ResetServer() as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        with pytest.raises(ConnectionResetError):
            writer.write(b"x" * 10)
            await writer.drain()
            await asyncio.wait_for(reader.read(1), 2)
        writer.close()


async def test_tcp_tarpit_accepts_and_never_answers() -> None:
    async with TarpitServer() as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        writer.close()
    assert srv.connections == 1


@pytest.mark.parametrize("host", HOSTS)
async def test_tcp_http_and_blockpage(host: str) -> None:
    spec = HttpSpec(status=404, body=b"nope", blobs={"/blob": 100_000})
    async with TcpServer(host, mode="http", http=spec) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 2)
        assert data.startswith(b"HTTP/1.1 404 Not Found") and data.endswith(b"nope")
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"GET /blob HTTP/1.1\r\nHost: a\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        assert len(data.partition(b"\r\n\r\n")[2]) == 100_000
    async with TcpServer(host, mode="blockpage") as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: telegram.org\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 2)
    assert data.startswith(b"HTTP/1.1 403 Forbidden")
    assert data.endswith(IRAN_BLOCKPAGE_BODY)
    assert b'<iframe src="http://10.10.34.34?type=Invalid Site&policy=MainPolicy"' in data


async def test_stop_ends_open_connections() -> None:
    srv = MtprotoServer(mode="silent")
    await srv.start()
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(_intermediate(os.urandom(16)))
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.stop(), 3)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


# ------------------------------------------------------------------------------ standalone


@pytest.mark.parametrize(
    "args",
    [
        ["tests.support.dnsserver", "--record", "t.me=198.18.64.9"],
        ["tests.support.mtproto", "--mode", "ok"],
        ["tests.support.tcpserver", "--mode", "blockpage"],
        ["tests.support.tlsserver", "--name", "t.me"],
    ],
    ids=["dns", "mtproto", "tcp", "tls"],
)
def test_standalone_ready_and_sigterm(args: list[str], tmp_path: Path) -> None:
    extra = ["--ca-dir", str(tmp_path)] if args[0].endswith("tlsserver") else []
    listens = [x for h in HOSTS for x in ("--listen", format_addr(h, 0))]
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, *extra, *listens],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "ready", proc.stderr.read() if proc.stderr else ""
        host, port = parse_listen(line[2])
        with socket.create_connection((host, port), timeout=2):
            pass
        assert len(line) == 2 + len(HOSTS)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
    assert rc == 0
