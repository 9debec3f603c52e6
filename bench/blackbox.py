"""prometheus-blackbox-exporter driven the way Prometheus drives it: one GET /probe per
target, `concurrency` requests in flight, each with the scrape-timeout header."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")


def config_text(ca_file: Path, sni: str, timeout: float) -> str:
    return f"""\
modules:
  tcp_connect:
    prober: tcp
    timeout: {timeout}s
  tls:
    prober: tcp
    timeout: {timeout}s
    tcp:
      tls: true
      tls_config:
        ca_file: {ca_file}
        server_name: {sni}
"""


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def proc_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Exporter:
    workdir: Path
    ca_file: Path
    sni: str
    timeout: float
    cpus: set[int] | None = None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> None:
        binary = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
        if binary is None:
            raise RuntimeError("prometheus-blackbox-exporter not found "
                               "(apt-get install prometheus-blackbox-exporter)")
        conf = self.workdir / "blackbox.yml"
        conf.write_text(config_text(self.ca_file, self.sni, self.timeout))
        self.port = free_port()
        cpus = self.cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(
            [binary, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=error"],
            preexec_fn=pin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("blackbox exporter did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    async def _drive(self, targets: list[str], module: str, concurrency: int) -> tuple[int, int]:
        queue = iter(targets)
        ok = failed = 0
        url = f"http://127.0.0.1:{self.port}/probe"
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(self.timeout + 1)}

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal ok, failed
            for target in queue:
                async with session.get(url, params={"target": target, "module": module},
                                       headers=headers) as response:
                    body = await response.read()
                if response.status == 200 and b"\nprobe_success 1" in body:
                    ok += 1
                else:
                    failed += 1

        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout + 30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return ok, failed

    def run_pass(self, targets: list[str], module: str, concurrency: int) -> dict[str, Any]:
        """One full pass in a fresh exporter, so its peak RSS is this pass's."""
        self.start()
        assert self.proc is not None
        try:
            pid = self.proc.pid
            cpu0, t0 = proc_cpu(pid), time.perf_counter()
            ok, failed = asyncio.run(self._drive(targets, module, concurrency))
            wall, cpu = time.perf_counter() - t0, proc_cpu(pid) - cpu0
            hwm = proc_hwm_kb(pid)
        finally:
            self.stop()
        return {"wall": wall, "cpu": cpu, "rss_peak_kb": hwm, "checks": ok + failed, "ok": ok,
                "failed": failed}
