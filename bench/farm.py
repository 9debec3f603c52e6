"""The target farm: nginx (TCP and TLS listeners) and an MTProto responder, on loopback.

Endpoints are spread over many 127.x.y.z addresses and several ports so that thousands of
short connections per pass do not exhaust ephemeral ports (TIME_WAIT is per 4-tuple).
Nothing here listens on or connects to an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SNI = "bench.reach.test"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


def addresses(second_octet: int, count: int) -> list[str]:
    """`count` loopback addresses 127.<second_octet>.x.y (never x.y = 0.0 or .255)."""
    out = []
    for i in range(count):
        third, fourth = divmod(i, 250)
        address = f"127.{second_octet}.{third}.{fourth + 1}"
        assert ipaddress.ip_address(address) in LOOPBACK
        out.append(address)
    return out


def endpoints(second_octet: int, n_addresses: int, ports: list[int]) -> list[Endpoint]:
    return [Endpoint(a, p) for a in addresses(second_octet, n_addresses) for p in ports]


@dataclass
class Farm:
    """Start with start(); stop() kills every process it started."""

    workdir: Path
    cpus: set[int] | None = None
    n_addresses: int = 100
    tcp_ports: list[int] = field(default_factory=lambda: list(range(20000, 20010)))
    tls_ports: list[int] = field(default_factory=lambda: list(range(21000, 21010)))
    mtproto_addresses: int = 50
    mtproto_ports: list[int] = field(default_factory=lambda: [22000, 22001, 22002, 22003])
    #: nginx's stub_status (its count of accepted connections: the bench's self-check)
    status_port: int = 20999
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def tcp(self) -> list[Endpoint]:
        return endpoints(10, self.n_addresses, self.tcp_ports)

    @property
    def tls(self) -> list[Endpoint]:
        return endpoints(20, self.n_addresses, self.tls_ports)

    @property
    def mtproto_addrs(self) -> list[str]:
        return addresses(30, self.mtproto_addresses)

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    def _preexec(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def _write_cert(self) -> None:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert(SNI)
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.workdir / "server.pem"))

    def _nginx_conf(self) -> str:
        tcp = "\n".join(f"    listen {e} backlog=4096;" for e in self.tcp)
        tls = "\n".join(f"    listen {e} ssl backlog=4096;" for e in self.tls)
        w = self.workdir
        return f"""\
worker_processes 1;
worker_rlimit_nofile 16384;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log error;
daemon off;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {w}/tmp;
  proxy_temp_path {w}/tmp;
  fastcgi_temp_path {w}/tmp;
  uwsgi_temp_path {w}/tmp;
  scgi_temp_path {w}/tmp;
  keepalive_timeout 0;
  ssl_session_cache off;
  ssl_session_tickets off;
  server {{
{tcp}
    location / {{ return 204; }}
  }}
  server {{
    listen 127.0.0.1:{self.status_port};
    location / {{ stub_status; }}
  }}
  server {{
{tls}
    server_name {SNI};
    ssl_certificate {w}/server.pem;
    ssl_certificate_key {w}/server.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ return 204; }}
  }}
}}
"""

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self._write_cert()
        conf = self.workdir / "nginx.conf"
        conf.write_text(self._nginx_conf())
        self.procs.append(subprocess.Popen(
            [nginx, "-p", str(self.workdir), "-c", str(conf), "-e", str(self.workdir / "nginx-error.log")],
            preexec_fn=self._preexec, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        listen = [a for addr in self.mtproto_addrs for p in self.mtproto_ports
                  for a in ("--listen", f"{addr}:{p}")]
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.responder", *listen],
            preexec_fn=self._preexec, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        ))
        mt = self.procs[-1]
        assert mt.stdout is not None
        line = mt.stdout.readline().decode()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"mtproto responder did not start: {line!r}")
        probes = [self.tcp[0], self.tcp[-1], self.tls[0], self.tls[-1]]
        deadline = time.monotonic() + 20
        for e in probes:
            while True:
                try:
                    socket.create_connection((e.address, e.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.procs[0].poll() is not None:
                        self.stop()
                        log = self.workdir / "nginx-error.log"
                        text = log.read_text() if log.exists() else ""
                        raise RuntimeError(f"nginx did not start: {text}") from None
                    time.sleep(0.05)

    def accepted(self) -> int:
        """Connections nginx has accepted so far, on every listener (its stub_status
        "accepts"; the request that reads it counts as one)."""
        with socket.create_connection(("127.0.0.1", self.status_port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: status\r\n\r\n")
            body = b""
            while chunk := sock.recv(4096):
                body += chunk
        lines = body.decode().split("\r\n\r\n", 1)[-1].splitlines()
        # "Active connections: 1" / "server accepts handled requests" / " 12 12 12"
        return int(lines[2].split()[0])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(Exception):
                if proc.stdout:
                    proc.stdout.close()
        self.procs.clear()
