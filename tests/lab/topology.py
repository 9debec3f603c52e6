"""Build, reset and tear down the censorship lab (network namespaces, veths, servers).

Why a single module: the lab touches the machine (namespaces, iptables, tc, processes).
Everything that creates state is here, and so is the one teardown that removes it all, so a
failed or interrupted run cannot leave half a lab behind. Deleting a namespace removes its
veths, addresses, routes, iptables rules and qdiscs with it; lab processes are stopped by
their pids first (and any straggler in a lab namespace by ``ip netns pids``).

Topology (see docs/lab.md)::

  subject --(198.18.10/24)-- censor --(198.18.11/24)-- internet --(198.18.12/24)-- control

The internet namespace holds the lab copies of the service (DCs, web fronts), the control
resolvers, the baseline site and a decoy host on its loopback; the censor namespace holds
the subject's ISP resolver, a blockpage server and a TLS-intercepting server.

Optionally (``add_mgmt_links``, used by the fleet end-to-end test) each vantage gets an
out-of-band management veth to the root namespace (198.19.254.0/24, one /30 each) so that
a Prometheus on the host can scrape probes independently of the measured network. Its
root-side end would survive a failed namespace deletion, so teardown removes it by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from tests.lab import plan
from tests.support._common import format_addr

ROOT = Path(__file__).resolve().parents[2]
_SUFFIX = f"-{plan.INSTANCE}" if plan.INSTANCE else ""
#: Per lab instance (tests/lab/plan.py INSTANCE): /run/reach-lab, /run/reach-lab-2, ...
WORKDIR = Path(os.environ.get("REACH_LAB_DIR", f"/run/reach-lab{_SUFFIX}"))
LOCK_FILE = Path(os.environ.get("REACH_LAB_LOCK", f"/run/reach-lab{_SUFFIX}.lock"))
#: The probe console script of the interpreter running the tests (the project's venv).
PROBE_BIN = Path(sys.executable).parent / "probe"

#: Upper bound for any single command the lab runs (ip, iptables, tc, sysctl).
CMD_TIMEOUT = 20

#: The censor's ICMP errors are not rate-limited. A censor that rejects with ICMP (scenario
#: 19a: administratively prohibited) answers every packet it rejects; Linux's defaults would
#: let the censor namespace send the subject (one peer) a burst of 6 errors and then one
#: per net.ipv4.icmp_ratelimit (1000 ms) or net.ipv6.icmp.ratelimit (100 ms on 6.x), and a
#: round's dozens of parallel connects to the DCs mostly saw silence and timed out (measured:
#: 131 IPv4 and 80 IPv6 errors suppressed in one round, IcmpOutRateLimitHost). The global
#: limit (net.ipv4.icmp_msgs_per_sec 1000/s, burst 50; IPv6 shares it) is raised too. Only
#: the censor namespace: nothing else in the lab sends ICMP errors that a test reads.
CENSOR_ICMP_SYSCTLS = [
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv6.icmp.ratelimit=0",
    "net.ipv4.icmp_msgs_per_sec=100000",
    "net.ipv4.icmp_msgs_burst=10000",
]


class LabError(RuntimeError):
    """The lab could not be built or a lab command failed."""


def run(cmd: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    """Run a command; return stdout; raise LabError with stderr on failure (if check)."""
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ns_exec(ns: str) -> list[str]:
    """The argv prefix that runs a command in a lab namespace (a role such as
    ``plan.SUBJECT``; this lab instance's namespace is used)."""
    return ["ip", "netns", "exec", plan.netns(ns)]


def ns_run(ns: str, *cmd: str, check: bool = True) -> str:
    """Run a command inside a lab namespace (by role, see ns_exec)."""
    return run([*ns_exec(ns), *cmd], check=check)


def ip_batch(ns: str | None, lines: Sequence[str]) -> None:
    """Run many ``ip`` commands in one process (fast; fails on the first bad line).
    ``ns``: a lab role (this instance's namespace is used) or None for the root namespace."""
    cmd = ["ip", "-batch", "-"] if ns is None else ["ip", "-n", plan.netns(ns), "-batch", "-"]
    run(cmd, stdin="\n".join(lines) + "\n")


def existing_namespaces() -> list[str]:
    """Names of the namespaces that exist right now."""
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def lab_available() -> str | None:
    """None if the lab can run here, else the reason it cannot (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the censorship lab needs root (network namespaces, iptables, tc)"
    for tool in ("ip", "iptables", "ip6tables", "tc"):
        if shutil.which(tool) is None:
            return f"the censorship lab needs {tool!r} (apt-get install iproute2 iptables)"
    try:
        run(["ip", "netns", "list"])
    except (LabError, OSError) as exc:
        return f"'ip netns' is unavailable: {exc}"
    if not PROBE_BIN.exists():
        return f"no probe console script at {PROBE_BIN} (pip install -e .)"
    return None


# ------------------------------------------------------------------------------ locking


class LabLock:
    """An exclusive fcntl lock so that two lab runs on one machine take turns.

    Why: the namespace names are fixed per instance (developers type them), so concurrent
    runs of one instance would tear down each other's lab; other instances have their own.
    The lock is released when the process exits, even on kill.
    """

    def __init__(self, path: Path = LOCK_FILE, timeout: float = 900) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LabError(f"another lab run holds {self.path}") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LabLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def results_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside a results file while it is read, merged and rewritten:
    lab instances running side by side add their records to the same build/*.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ processes


@dataclass
class ServiceSpec:
    """A lab server process: which namespace, which tests.support module, which args."""

    name: str
    ns: str
    module: str
    listens: list[tuple[str, int]]
    args: list[str] = field(default_factory=list)
    #: part of the service itself (stopped in the outage scenario)
    service: bool = False

    def argv(self) -> list[str]:
        listen = [x for h, p in self.listens for x in ("--listen", format_addr(h, p))]
        return [sys.executable, "-m", f"tests.support.{self.module}", *listen, *self.args]


class LabProcess:
    """A running lab server; reads its stdout lines (``ready``, ``reloaded``) with timeouts."""

    def __init__(self, spec: ServiceSpec, logdir: Path) -> None:
        self.spec = spec
        self._log: TextIO = (logdir / f"{spec.name}.log").open("a")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*ns_exec(spec.ns), *spec.argv()],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,  # Ctrl-C of the test run reaches us, we stop them
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, prefix: str, timeout: float = 15) -> str:
        """Wait for a stdout line starting with ``prefix``; LabError on timeout or exit."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(prefix):
                    return text
                if text.startswith(("reload-error", "error")):
                    raise LabError(f"{self.spec.name}: {text}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"{self.spec.name}: no {prefix!r} line within {timeout}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    rc = self.proc.wait(5)
                    raise LabError(
                        f"{self.spec.name} exited ({rc}) before {prefix!r}; see its log in {self._log.name}"
                    )
                self._buf += chunk

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: always leaves the process reaped."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


# ------------------------------------------------------------------------------ the lab


def _dump_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Lab:
    """The censorship lab. ``up()``, then per scenario ``reset()`` + ``apply(...)``, ``down()``.

    Use ``with Lab() as lab:`` (or the pytest session fixture) so that down() always runs.
    """

    def __init__(self, workdir: Path = WORKDIR) -> None:
        self.workdir = workdir
        self.processes: dict[str, LabProcess] = {}
        self.ca_dir = workdir / "ca"
        self.censor_ca_dir = workdir / "censor-ca"
        #: Signal's own CA in the lab: the pinned `signal` anchor (tls.trust in the config).
        self.signal_ca_dir = workdir / "signal-ca"
        self.logdir = workdir / "logs"
        self.isp_dns_config = workdir / "isp-dns.yaml"
        self.control_dns_config = workdir / "control-dns.yaml"

    # ----------------------------------------------------------------- build

    def up(self) -> None:
        """Build everything; on any failure tear down what was built and re-raise."""
        try:
            self._cleanup_stale()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._build_network()
            self._write_files()
            self._start_services()
            self._write_state()
        except BaseException:
            self.down()
            raise

    def _cleanup_stale(self) -> None:
        """Remove lab namespaces (and their processes) left by an earlier, killed run."""
        stale = [ns for ns in plan.NETNS if ns in existing_namespaces()]
        for ns in stale:
            _kill_namespace_processes(ns)
            run(["ip", "netns", "del", ns], check=False)
        self.remove_mgmt_links()

    def _build_network(self) -> None:
        for ns in plan.NAMESPACES:
            run(["ip", "netns", "add", plan.netns(ns)])
            ip_batch(ns, ["link set lo up"])
            sysctls = [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ]
            if ns in (plan.CENSOR, plan.INTERNET):
                sysctls += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
            if ns == plan.CENSOR:
                sysctls += CENSOR_ICMP_SYSCTLS
            ns_run(ns, "sysctl", "-qw", *sysctls)
        for link in plan.LINKS:
            ip_batch(
                link.left_ns,
                [f"link add {link.left_if} type veth peer name {link.right_if} "
                 f"netns {plan.netns(link.right_ns)}"],
            )
        self.configure_addresses()

    def configure_addresses(self) -> None:
        """Addresses, link state and routes; idempotent (re-run by reset after a cut)."""
        for link in plan.LINKS:
            ip_batch(
                link.left_ns,
                [
                    f"link set {link.left_if} up",
                    f"addr replace {link.left4()}/24 dev {link.left_if}",
                    f"addr replace {link.left6()}/64 dev {link.left_if} nodad",
                ],
            )
            ip_batch(
                link.right_ns,
                [
                    f"link set {link.right_if} up",
                    f"addr replace {link.right4()}/24 dev {link.right_if}",
                    f"addr replace {link.right6()}/64 dev {link.right_if} nodad",
                ],
            )
        s, c, k = plan.SUBJECT_LINK, plan.CENSOR_LINK, plan.CONTROL_LINK
        ip_batch(
            plan.SUBJECT,
            [f"route replace default via {s.right4()}", f"route replace ::/0 via {s.right6()}"],
        )
        ip_batch(
            plan.CENSOR,
            [f"route replace default via {c.right4()}", f"route replace ::/0 via {c.right6()}"]
            + [_host_addr(a) for a in plan.CENSOR_HOSTS],
        )
        ip_batch(
            plan.INTERNET,
            [
                f"route replace {s.v4_net}.0/24 via {c.left4()}",
                f"route replace {s.v6_net}::/64 via {c.left6()}",
                f"route replace {plan.CENSOR_HOST_NETS[0]} via {c.left4()}",
                f"route replace {plan.CENSOR_HOST_NETS[1]} via {c.left6()}",
            ]
            + [_host_addr(a) for a in plan.internet_hosts()],
        )
        ip_batch(
            plan.CONTROL,
            [f"route replace default via {k.right4()}", f"route replace ::/0 via {k.right6()}"],
        )

    def _write_files(self) -> None:
        from tests.support.tlsserver import LabCA

        LabCA.load_or_create(self.ca_dir)
        LabCA(organization="Censor interception CA").save(
            self.censor_ca_dir / "ca.pem", self.censor_ca_dir / "ca.key"
        )
        LabCA(organization="lab Signal Messenger CA").save(
            self.signal_ca_dir / "ca.pem", self.signal_ca_dir / "ca.key"
        )
        from tests.support.noiseserver import root_pem

        (self.workdir / "whatsapp-root.pem").write_bytes(root_pem())
        self.set_isp_dns(reload=False)
        _dump_yaml(self.control_dns_config, {"zone": plan.zone(), "behaviour": "answer"})
        (self.workdir / "subject-resolv.conf").write_text(
            f"# lab: the subject's ISP resolver, run by the censor\nnameserver {plan.ISP_RESOLVER[0]}\n"
        )
        (self.workdir / "control-resolv.conf").write_text(
            f"# lab: the control vantage's own resolver\nnameserver {plan.CONTROL_ISP_RESOLVER[0]}\n"
        )

    def service_specs(self) -> list[ServiceSpec]:
        """Every lab server process."""
        names = [x for f in plan.FRONTS for x in ("--name", f.name)]
        rate = ["--rate", str(plan.PATH_RATE_BPS)]
        front_body = f"/={plan.FRONT_BODY_BYTES}"
        blob = f"/blob={plan.BASELINE_BLOB_BYTES}"
        return [
            ServiceSpec(
                "dc-mtproto",
                plan.INTERNET,
                "mtproto",
                [(a, p) for a in plan.dc_addresses() for p in plan.DC_PORTS],
                service=True,
            ),
            ServiceSpec(
                "fronts-tls",
                plan.INTERNET,
                "tlsserver",
                [(a, 443) for a in plan.front_addresses()],
                ["--ca-dir", str(self.ca_dir), *names, "--blob", front_body, *rate],
                service=True,
            ),
            ServiceSpec(
                "fronts-http",
                plan.INTERNET,
                "tcpserver",
                [(a, 80) for a in plan.front_addresses()],
                ["--mode", "http", "--blob", front_body, *rate],
                service=True,
            ),
            *self._other_service_specs(),
            ServiceSpec(
                "control-resolvers",
                plan.INTERNET,
                "dnsserver",
                [(a, 53) for a in (*plan.CONTROL_RESOLVER, *plan.CONTROL_ISP_RESOLVER)],
                ["--config", str(self.control_dns_config)],
            ),
            ServiceSpec(
                "control-doh",
                plan.INTERNET,
                "dohserver",
                [(a, 443) for a in plan.CONTROL_DOH],
                ["--ca-dir", str(self.ca_dir), *[x for a in plan.CONTROL_DOH for x in ("--name", a)],
                 "--config", str(self.control_dns_config)],
            ),
            ServiceSpec(
                "baseline-tls",
                plan.INTERNET,
                "tlsserver",
                [(a, 443) for a in plan.BASELINE],
                ["--ca-dir", str(self.ca_dir), "--name", plan.BASELINE_NAME, "--blob", blob, *rate],
            ),
            ServiceSpec(
                "baseline-http",
                plan.INTERNET,
                "tcpserver",
                [(a, 80) for a in plan.BASELINE],
                ["--mode", "http", "--blob", blob, *rate],
            ),
            ServiceSpec(
                "decoy-tls",
                plan.INTERNET,
                "tlsserver",
                [(a, 443) for a in plan.DECOY],
                ["--ca-dir", str(self.ca_dir), "--name", "parked.reach-lab.example"],
            ),
            ServiceSpec(
                "decoy-http",
                plan.INTERNET,
                "tcpserver",
                [(a, 80) for a in plan.DECOY],
                ["--mode", "http", "--body", "parked domain\n"],
            ),
            ServiceSpec(
                "isp-resolver",
                plan.CENSOR,
                "dnsserver",
                [(a, 53) for a in plan.ISP_RESOLVER],
                ["--config", str(self.isp_dns_config)],
            ),
            ServiceSpec(
                "censor-blockpage",
                plan.CENSOR,
                "tcpserver",
                [(a, 80) for a in plan.CENSOR_BLOCKPAGE],
                ["--mode", "blockpage"],
            ),
            ServiceSpec(
                "domestic-tls",
                plan.CENSOR,
                "tlsserver",
                [(a, 443) for a in plan.DOMESTIC_SITE],
                ["--ca-dir", str(self.ca_dir), "--name", plan.DOMESTIC_SITE_NAME],
            ),
            ServiceSpec(
                "censor-tls",
                plan.CENSOR,
                "tlsserver",
                [(a, 443) for a in plan.CENSOR_TLS],
                ["--ca-dir", str(self.censor_ca_dir), "--blob", front_body,
                 *[x for n in plan.SERVICE_NAMES for x in ("--name", n)]],
            ),
        ]

    def _other_service_specs(self) -> list[ServiceSpec]:
        """WhatsApp's and Signal's stand-ins: chat listeners, TLS fronts (Signal's chat
        service from the separate Signal CA), and WhatsApp Web's redirect on :80."""
        def tls(name: str, ca_dir: Path, hosts: tuple[plan.Front, ...]) -> ServiceSpec:
            return ServiceSpec(name, plan.INTERNET, "tlsserver",
                               [(a, 443) for a in plan.addresses(hosts)],
                               ["--ca-dir", str(ca_dir), *[x for h in hosts for x in ("--name", h.name)]],
                               service=True)

        web = plan.WHATSAPP_WEB
        gateway = plan.WHATSAPP_GATEWAY
        return [
            tls("telegram-web-client", self.ca_dir, plan.TELEGRAM_WEB_CLIENT),
            # WhatsApp's chat servers and gateway: the Noise responder, its chain from the
            # lab's test root (the `whatsapp` anchor of the lab config:
            # tests.support.noiseserver.root_pem)
            ServiceSpec("whatsapp-chat", plan.INTERNET, "noiseserver",
                        [(a, p) for a in plan.addresses(plan.WHATSAPP_CHAT)
                         for p in plan.WHATSAPP_CHAT_PORTS]
                        + [(a, p) for a in (gateway.v4, gateway.v6)
                           for p in plan.WHATSAPP_GATEWAY_PORTS], service=True),
            tls("whatsapp-tls", self.ca_dir, plan.WHATSAPP_FRONTS),
            ServiceSpec("whatsapp-web-http", plan.INTERNET, "tcpserver",
                        [(a, 80) for a in (web.v4, web.v6)],
                        ["--mode", "http", "--status", "301",
                         "--header", f"Location=https://{web.name}/"], service=True),
            tls("signal-tls-pinned", self.signal_ca_dir, plan.SIGNAL_PINNED_CA),
            tls("signal-tls", self.ca_dir, plan.SIGNAL_LAB_CA),
        ]

    def _start_services(self, only: Sequence[str] | None = None) -> None:
        started = []
        for spec in self.service_specs():
            if only is not None and spec.name not in only:
                continue
            proc = LabProcess(spec, self.logdir)
            self.processes[spec.name] = proc
            started.append(proc)
        for proc in started:
            proc.wait_line("ready")

    def start_extra(self, specs: Sequence[ServiceSpec]) -> None:
        """Start servers beyond the standard set (a scenario module's own), tracked like the
        rest: down() stops them, the stale-process cleanup knows them."""
        for spec in specs:
            self.processes[spec.name] = LabProcess(spec, self.logdir)
        for spec in specs:
            self.processes[spec.name].wait_line("ready")
        self._write_state()

    def _write_state(self) -> None:
        state = {name: p.pid for name, p in self.processes.items()}
        (self.workdir / "state.json").write_text(json.dumps({"pids": state}, indent=1))

    # ----------------------------------------------------------------- per scenario

    def set_isp_dns(self, config: dict[str, Any] | None = None, reload: bool = True) -> None:
        """Give the subject's ISP resolver a new behaviour (file + SIGHUP, no restart)."""
        data: dict[str, Any] = {"zone": plan.zone(), "behaviour": "answer"}
        data.update(config or {})
        _dump_yaml(self.isp_dns_config, data)
        proc = self.processes.get("isp-resolver")
        if reload and proc is not None and proc.alive():
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait_line("reloaded", timeout=10)

    def reset(self) -> None:
        """Undo every scenario change: rules, qdiscs, cut links, DNS behaviour, stopped servers."""
        flush = "; ".join(
            f"{tool} -t {table} -F && {tool} -t {table} -X"
            for tool in ("iptables", "ip6tables")
            for table in ("filter", "nat", "mangle")
        )
        for ns in (plan.CENSOR, plan.INTERNET, plan.SUBJECT):
            ns_run(ns, "sh", "-c", flush)  # one process per namespace: resets stay fast
        ns_run(
            plan.CENSOR,
            "sh",
            "-c",
            "tc qdisc del dev sub0 root 2>/dev/null; tc qdisc del dev up0 root 2>/dev/null; true",
        )
        self.configure_addresses()
        self.set_isp_dns()
        dead = [n for n, p in self.processes.items() if not p.alive()]
        for name in dead:
            self.processes.pop(name).stop()
        if dead:
            self._start_services(dead)
            self._write_state()

    def stop_service(self) -> None:
        """Outage: stop every server that is part of the service (DCs and web fronts)."""
        for spec in self.service_specs():
            if spec.service and spec.name in self.processes:
                self.processes[spec.name].stop()

    def cut_subject_uplink(self) -> None:
        """The subject's access link goes down (its own network, not the service, fails)."""
        ip_batch(plan.SUBJECT, [f"link set {plan.SUBJECT_LINK.left_if} down"])

    def censor(self, commands: Sequence[Sequence[str]]) -> None:
        """Run censor commands (iptables/ip6tables/tc argv lists) in the censor namespace."""
        for cmd in commands:
            ns_run(plan.CENSOR, *cmd)

    # ----------------------------------------------------------------- probes

    def write_probe_config(self, vantage: str, name: str | None = None) -> Path:
        """The probe config for a vantage (see tests/lab/configs.py)."""
        from tests.lab.configs import probe_config

        return _dump_yaml(
            self.workdir / "configs" / f"{name or vantage}.yaml",
            probe_config(vantage, self.workdir, self.ca_dir / "ca.pem", plan.MESSENGERS),
        )

    def run_probes(self, timeout: float = 90,
                   configs: dict[str, Path] | None = None) -> dict[str, dict[str, Any]]:
        """``probe once --format json`` in both vantages concurrently; parsed JSON per vantage.
        ``configs``: a config per vantage instead of the standard ones."""
        procs = {}
        for vantage in (plan.SUBJECT, plan.CONTROL):
            config = configs[vantage] if configs else self.write_probe_config(vantage)
            procs[vantage] = subprocess.Popen(
                [
                    *ns_exec(vantage),
                    str(PROBE_BIN),
                    "once",
                    "--config",
                    str(config),
                    "--format",
                    "json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        results: dict[str, dict[str, Any]] = {}
        errors = []
        for vantage, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                errors.append(f"{vantage}: probe did not finish within {timeout}s")
                continue
            if proc.returncode != 0:
                errors.append(f"{vantage}: probe exit {proc.returncode}: {err.strip()[-2000:]}")
                continue
            try:
                results[vantage] = json.loads(out)
            except json.JSONDecodeError as exc:
                errors.append(f"{vantage}: probe printed no JSON ({exc}): {out[:500]!r}")
        if errors:
            raise LabError("; ".join(errors))
        return results

    # ----------------------------------------------------------------- management path

    def add_mgmt_links(self) -> None:
        """Out-of-band management: a veth per vantage to the root namespace (a /30 each).

        Only the connected route exists on either end (no default route is touched), IPv4
        forwarding is off on both ends and IPv6 is disabled on them, so lab traffic never
        takes this path; it only carries the host's scrapes of the probes. Idempotent.
        On failure, what was added is removed again.
        """
        try:
            for link in plan.MGMT_LINKS:
                if link.root_if not in root_mgmt_links():
                    add = (f"link add {link.root_if} type veth peer name {link.ns_if} "
                           f"netns {plan.netns(link.ns)}")
                    ip_batch(None, [add])
                run(
                    [
                        "sysctl",
                        "-qw",
                        f"net.ipv6.conf.{link.root_if}.disable_ipv6=1",
                        f"net.ipv4.conf.{link.root_if}.forwarding=0",
                    ]
                )
                ns_run(
                    link.ns,
                    "sysctl",
                    "-qw",
                    f"net.ipv6.conf.{link.ns_if}.disable_ipv6=1",
                    f"net.ipv4.conf.{link.ns_if}.forwarding=0",
                )
                ip_batch(
                    None,
                    [
                        f"addr replace {link.root_addr}/{link.prefix} dev {link.root_if}",
                        f"link set {link.root_if} up",
                    ],
                )
                ip_batch(
                    link.ns,
                    [
                        f"addr replace {link.ns_addr}/{link.prefix} dev {link.ns_if}",
                        f"link set {link.ns_if} up",
                    ],
                )
        except BaseException:
            self.remove_mgmt_links()
            raise

    def remove_mgmt_links(self) -> None:
        """Delete the management veths (the root-side end; its peer goes with it)."""
        for name in root_mgmt_links():
            run(["ip", "link", "del", name], check=False)

    @contextlib.contextmanager
    def managed(self) -> Iterator[Lab]:
        """The lab (brought up again if an earlier test tore it down) with the management
        links, which are removed again afterwards, and the censor reset."""
        if not self.status()["namespaces"]:
            self.up()
        self.add_mgmt_links()
        try:
            yield self
        finally:
            self.remove_mgmt_links()
            self.reset()

    # ----------------------------------------------------------------- teardown

    def down(self) -> None:
        """Stop every lab process and delete every lab namespace. Safe to call twice."""
        for proc in self.processes.values():
            with contextlib.suppress(Exception):
                proc.stop()
        self.processes.clear()
        _stop_pids_from_state(self.workdir / "state.json")
        for ns in plan.NETNS:
            if ns in existing_namespaces():
                _kill_namespace_processes(ns)
                run(["ip", "netns", "del", ns], check=False)
        self.remove_mgmt_links()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "state.json").unlink()

    def status(self) -> dict[str, Any]:
        """Which lab namespaces and processes exist (for the CLI and the final check)."""
        return {
            "namespaces": [ns for ns in existing_namespaces() if ns in plan.NETNS],
            "processes": {ns: namespace_pids(ns) for ns in plan.NETNS if ns in existing_namespaces()},
            "mgmt_links": root_mgmt_links(),
        }

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def root_mgmt_links() -> list[str]:
    """Lab management veths present in the root namespace (by their fixed names)."""
    names = {link.root_if for link in plan.MGMT_LINKS}
    out = run(["ip", "-o", "link", "show"], check=False)
    found = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name in names:
                found.append(name)
    return found


def _host_addr(address: str) -> str:
    """ip-batch line putting a lab host address on the namespace's loopback."""
    if plan.is_v6(address):
        return f"addr replace {address}/128 dev lo nodad"
    return f"addr replace {address}/32 dev lo"


def namespace_pids(ns: str) -> list[int]:
    """Pids of the processes inside a namespace."""
    out = run(["ip", "netns", "pids", plan.netns(ns)], check=False)
    return [int(x) for x in out.split() if x.isdigit()]


def _kill_namespace_processes(ns: str) -> None:
    """Stop processes left inside a lab namespace (only lab servers/probes run there)."""
    pids = namespace_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours still "exists"; reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _stop_pids_from_state(path: Path) -> None:
    """Stop processes recorded by a previous ``up`` (the CLI's ``down`` is a new process)."""
    try:
        pids = json.loads(path.read_text()).get("pids", {})
    except (OSError, ValueError):
        return
    for pid in pids.values():
        # only if it still is one of our servers (pids get reused)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"tests.support." in cmdline or b"netns" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def running_lab(workdir: Path = WORKDIR) -> Iterator[Lab]:
    """Lock, build, yield, and always tear down (also on Ctrl-C and failures)."""
    with LabLock():
        lab = Lab(workdir)
        try:
            lab.up()
            yield lab
        finally:
            lab.down()
