"""What `probe run` costs on the wire with the shipped defaults, and what it still detects.

`python -m bench traffic [--minutes 12]` (root: it builds the namespace lab). The subject
and control vantages run `probe run` with the three messengers, the lab's endpoints and
the shipped schedule and budget (30 MB/day); a real Prometheus scrapes them with the
shipped rules (unchanged: `for`, windows, 15 s scrapes, 10 s evaluation). Then:

- bytes on the subject's uplink (`ip -s link`, frames as the interface counts them) over
  the run, extrapolated to a day, next to the probe's own count (reach_bytes_total);
- at minute 1, one WhatsApp chat endpoint (no sentinel watches it) is blackholed: how long
  until the probe's verdict for it is a block (the sweep's job);
- halfway, every address of one messenger (`--block`, Telegram by default) is blackholed:
  onset -> MessengerBlocked firing. `--block none` blocks nothing (not e7 either): the
  run measures what a quiet day costs.

Prints a report and writes build/bench-traffic.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from probe.model.verdicts import BLOCKING_VERDICTS
from tests.fleet import promstack
from tests.lab import plan
from tests.lab.configs import probe_config
from tests.lab.scenarios import drop_to
from tests.lab.topology import PROBE_BIN, ROOT, Lab, LabLock, lab_available, ns_exec, ns_run

RESULTS = ROOT / "build" / "bench-traffic.json"
PORT = 9650
SCRAPE = "15s"  # configs/prometheus/prometheus.yml
SINGLE = plan.WHATSAPP_CHAT[6]  # e7.whatsapp.net: no sentinel watches it
SINGLE_TARGET = f"{SINGLE.name}/v4:443"
#: what a whole-messenger block blackholes: every address the lab gives the messenger
BLOCKED = {
    "telegram": [*plan.dc_addresses(), *plan.addresses(plan.FRONTS)],
    "whatsapp": plan.addresses((*plan.WHATSAPP_CHAT, plan.WHATSAPP_GATEWAY, *plan.WHATSAPP_FRONTS)),
    "signal": plan.addresses((*plan.SIGNAL_PINNED_CA, *plan.SIGNAL_LAB_CA)),
}


def interface_bytes() -> tuple[int, int]:
    """(sent, received) bytes of the subject's uplink, as the kernel counts its frames."""
    out = json.loads(ns_run(plan.SUBJECT, "ip", "-s", "-j", "link", "show", "dev",
                            plan.SUBJECT_LINK.left_if))
    stats = out[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])


def socket_bytes(url: str) -> tuple[int, int]:
    """(sent, received) summed over reach_bytes_total of a probe's /metrics."""
    _, body = promstack.http_get(f"{url}/metrics", timeout=10)
    sent = received = 0
    for line in body.decode().splitlines():
        match = re.match(r'reach_bytes_total\{.*direction="(sent|received)".*\} (\d+)', line)
        if match:
            if match[1] == "sent":
                sent += int(match[2])
            else:
                received += int(match[2])
    return sent, received


def verdict_of(url: str, target: str) -> tuple[str | None, str | None]:
    """(verdict, measured) of one target in a probe's /api/status."""
    status = promstack.http_get_json(f"{url}/api/status", timeout=10)
    for verdict in ((status.get("round") or {}).get("verdicts") or []):
        if verdict["target"] == target:
            return verdict["verdict"], verdict.get("measured")
    return None, None


def shipped_config(vantage: str, lab: Lab, workdir: Path) -> dict[str, Any]:
    """The lab's config for a vantage with the shipped schedule, budget, baseline sample and
    HTTP limits (only the endpoints, resolvers and trust anchors are the lab's)."""
    config = probe_config(vantage, lab.workdir, lab.ca_dir / "ca.pem", plan.MESSENGERS)
    config.pop("schedule", None)
    config.pop("http", None)
    config.pop("budget", None)
    config["baseline"].pop("samples", None)
    config["evidence"] = {"directory": str(workdir / "evidence")}
    return config


def start_probe(vantage: str, lab: Lab, workdir: Path) -> promstack.Probe:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "probe.yaml"
    path.write_text(yaml.safe_dump(shipped_config(vantage, lab, workdir), sort_keys=False))
    host = plan.mgmt_link(vantage).ns_addr
    argv = [*ns_exec(vantage), str(PROBE_BIN), "run", "--config", str(path),
            "--listen", f"{host}:{PORT}"]
    probe = promstack.Probe(promstack.ManagedProcess(argv, workdir / "probe.log"), PORT, workdir)
    probe.url = f"http://{host}:{PORT}"
    return probe


def page_firing(prom: promstack.Prometheus, messenger: str) -> bool:
    return any(a["labels"].get("vantage") == "lab-subject"
               and a["labels"].get("messenger") == messenger
               for a in prom.firing("MessengerBlocked"))


def run(minutes: float, workdir: Path, blocked: str | None = "telegram") -> dict[str, Any]:
    """`blocked`: the messenger blackholed halfway (and e7 at minute 1); None: nothing is
    blocked, the run measures what a quiet day costs."""
    if workdir.exists():
        shutil.rmtree(workdir)
    results: dict[str, Any] = {"minutes": minutes, "blocked": blocked}
    started: list[Any] = []
    with LabLock(), Lab() as lab, lab.managed():
        try:
            probes = {v: start_probe(v, lab, workdir / v) for v in (plan.SUBJECT, plan.CONTROL)}
            started += probes.values()
            for probe in probes.values():
                probe.wait_ready(timeout=180)  # the first (full) round is done
            subject = probes[plan.SUBJECT].url
            first = socket_bytes(subject)
            results["first_round_socket_bytes"] = sum(first)
            prom = promstack.start_prometheus(
                workdir / "prometheus",
                scrape_configs=[promstack.scrape_job(
                    "reach", [f"{plan.mgmt_link(v).ns_addr}:{PORT}" for v in probes], SCRAPE)],
                evaluation_interval=SCRAPE)
            started.append(prom)
            promstack.load_rules_once_scraping(prom, sorted(promstack.RULES_DIR.glob("*.yml")), 2)
            t0 = time.monotonic()
            wall0 = time.time()
            iface0, socket0 = interface_bytes(), socket_bytes(subject)
            single_onset = whole_onset = None
            single_seen = whole_paged = None
            whole_at = minutes * 60 / 2
            while True:
                now = time.monotonic() - t0
                if blocked and single_onset is None and now >= 60:
                    lab.censor(drop_to([SINGLE.v4]))
                    single_onset = now
                    results["single_onset_wall"] = time.time()
                    print(f"[{now:6.0f}s] blackholed {SINGLE_TARGET} ({SINGLE.v4})", flush=True)
                if blocked and whole_onset is None and now >= whole_at:
                    lab.censor(drop_to(BLOCKED[blocked]))
                    whole_onset = now
                    results["whole_onset_wall"] = time.time()
                    print(f"[{now:6.0f}s] blackholed every {blocked} address", flush=True)
                if single_onset is not None and single_seen is None:
                    with contextlib.suppress(OSError, ValueError):
                        verdict, measured = verdict_of(subject, SINGLE_TARGET)
                        if verdict not in (None, "ok"):
                            single_seen = now
                            print(f"[{now:6.0f}s] {SINGLE_TARGET}: {verdict} "
                                  f"(measured {measured})", flush=True)
                if blocked and whole_onset is not None and whole_paged is None:
                    with contextlib.suppress(OSError, promstack.StackError):
                        if page_firing(prom, blocked):
                            whole_paged = now
                            print(f"[{now:6.0f}s] MessengerBlocked firing for {blocked}", flush=True)
                # past the goals (page 3 min, single endpoint 15 min) a miss is a miss
                page_over = whole_paged is not None or (
                    whole_onset is not None and now - whole_onset > 600)
                single_over = single_seen is not None or (
                    single_onset is not None and now - single_onset > 900 + 60)
                done = now >= minutes * 60 and ((page_over and single_over) or not blocked)
                if done or now >= minutes * 60 + 20 * 60:
                    break
                time.sleep(2)
            iface1, socket1 = interface_bytes(), socket_bytes(subject)
            elapsed = time.monotonic() - t0
            with contextlib.suppress(OSError, ValueError):  # what the budget buys, as learnt
                status = promstack.http_get_json(f"{subject}/api/status", timeout=10)
                results["budget"] = (status.get("round") or {}).get("budget")
        finally:
            for server in reversed(started):
                with contextlib.suppress(Exception):
                    server.stop()
    results["rounds"] = rounds_since(workdir / plan.SUBJECT / "evidence", wall0, results)
    iface = (iface1[0] - iface0[0], iface1[1] - iface0[1])
    sock = (socket1[0] - socket0[0], socket1[1] - socket0[1])
    per_day = sum(iface) / elapsed * 86400
    results.update({
        "seconds": round(elapsed, 1),
        "interface_bytes": {"sent": iface[0], "received": iface[1]},
        "socket_bytes": {"sent": sock[0], "received": sock[1]},
        "socket_vs_interface": round(sum(sock) / sum(iface), 4) if sum(iface) else None,
        "bytes_per_day": round(per_day),
        "single_endpoint": {"target": SINGLE_TARGET,
                            "detected_seconds": None if single_seen is None or single_onset is None
                            else round(single_seen - single_onset, 1)},
        "whole_block": {"messenger": blocked,
                        "onset_to_page_seconds": None if whole_paged is None
                        or whole_onset is None else round(whole_paged - whole_onset, 1)},
    })
    return results


def rounds_since(directory: Path, since: float, results: dict[str, Any]) -> dict[str, Any]:
    """From the subject's evidence: the bytes of paced rounds (sentinels, screening,
    sweeps) and of full rounds (a change's, transfers) since `since`, and when the probe
    first published a blocking verdict of the blocked messenger after the onset."""
    paced = full = count_full = after = 0
    published = None
    onset = results.get("whole_onset_wall")
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                r = json.loads(line)
                finished = _unix(r["finished"])
                if finished < since:
                    continue
                traffic = r.get("traffic") or {}
                nbytes = int(traffic.get("bytes_sent", 0)) + int(traffic.get("bytes_received", 0))
                tier = str(traffic.get("tier", ""))
                if "full" in tier or "transfers" in tier:
                    full += nbytes
                    count_full += 1
                elif onset is not None and finished >= onset:
                    after += nbytes  # the block's other rounds (a new failure's loss sample)
                else:
                    paced += nbytes
                if onset is not None and published is None and finished >= onset and any(
                        v["messenger"] == results["blocked"] and v["verdict"] in BLOCKING_VERDICTS
                        for v in r.get("verdicts", [])):
                    published = round(finished - onset, 1)
    return {"paced_bytes": paced, "paced_seconds": round((onset or time.time()) - since, 1),
            "full_bytes": full, "full_rounds": count_full, "after_onset_bytes": after,
            "verdict_published_seconds": published}


def _unix(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def report(r: dict[str, Any]) -> str:
    iface, sock = r["interface_bytes"], r["socket_bytes"]
    single = r["single_endpoint"]["detected_seconds"]
    page, blocked = r["whole_block"]["onset_to_page_seconds"], r["whole_block"]["messenger"]
    return "\n".join([
        "traffic: probe run, shipped defaults (interval 30 s, sweep 600 s, budget 30 MB/day), "
        "three messengers, lab",
        f"  run                      {r['seconds'] / 60:.1f} min after the first full round "
        f"(that round: {r['first_round_socket_bytes'] / 1e3:.0f} kB by the sockets)",
        f"  interface (ip -s link)   {iface['sent'] / 1e3:.0f} kB sent, "
        f"{iface['received'] / 1e3:.0f} kB received",
        f"  sockets (reach_bytes)    {sock['sent'] / 1e3:.0f} kB sent, "
        f"{sock['received'] / 1e3:.0f} kB received "
        f"({r['socket_vs_interface']:.1%} of the interface's count)",
        f"  bytes per day            {r['bytes_per_day'] / 1e6:.1f} MB (interface count, extrapolated;"
        " goal <= 30 MB)",
        *([] if blocked is None else [
            f"  single endpoint blocked  {r['single_endpoint']['target']}: "
            + (f"verdict changed after {single:.0f} s (goal <= 900 s)" if single is not None
               else f"NOT detected in {(r['seconds'] - 60) / 60:.0f} min"),
            f"  whole {blocked:9} blocked onset -> MessengerBlocked firing "
            + (f"{page:.0f} s (goal <= 180 s)" if page is not None else "NOT firing")]),
        *phases(r),
        *pace(r.get("budget")),
    ])


def phases(r: dict[str, Any]) -> list[str]:
    rounds = r.get("rounds") or {}
    if not rounds or not r.get("seconds"):
        return []
    day = 86400 / max(1.0, rounds["paced_seconds"])
    lines = [f"  paced, to the onset      {rounds['paced_bytes'] / 1e3:.0f} kB in "
             f"{rounds['paced_seconds'] / 60:.1f} min ({rounds['paced_bytes'] * day / 1e6:.1f} MB/day:"
             " sentinels, screening, sweeps; by the sockets),",
             f"  full rounds              {rounds['full_bytes'] / 1e3:.0f} kB in "
             f"{rounds['full_rounds']} (a change's, transfers; the whole run)",
             f"  other rounds after onset {rounds['after_onset_bytes'] / 1e3:.0f} kB (by the sockets)"]
    if rounds.get("verdict_published_seconds") is not None:
        lines.append(f"  {r['whole_block']['messenger']:9} verdict       published by the probe "
                     f"{rounds['verdict_published_seconds']:.0f} s after onset")
    return lines


def pace(budget: dict[str, Any] | None) -> list[str]:
    """What the budget buys at the end of the run, as the subject worked it out."""
    if not budget or budget.get("sweep_seconds") is None:
        return []
    by = budget.get("sentinel_seconds_by_messenger") or {}
    return ["  the budget buys          a sentinel every "
            + ", ".join(f"{m} {s:.0f} s" for m, s in sorted(by.items()))
            + f"; every sentinel once per {budget['sentinel_cycle_seconds'] / 60:.0f} min;"
            + (f" every endpoint screened once per {budget['screen_seconds'] / 60:.0f} min,"
               if budget.get("screen_seconds") else "")
            + f" every endpoint at full depth once per {budget['sweep_seconds'] / 60:.0f} min"
            f" (bucket {budget['fill']:.0%} full, shedding {budget['shedding'] or 'nothing'})"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench traffic", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="run length (>= 10)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-traffic")
    parser.add_argument("--block", choices=[*sorted(BLOCKED), "none"], default="telegram",
                        help="the messenger blackholed halfway (default: telegram); none: "
                        "nothing blocked, only what a quiet day costs")
    args = parser.parse_args(argv)
    reason = lab_available()
    if reason:
        print(f"bench traffic: the lab cannot run here: {reason}")
        return 2
    if not promstack.have_prometheus():
        print("bench traffic: no prometheus binary (Debian package prometheus)")
        return 2
    results = run(args.minutes, args.workdir.resolve(), None if args.block == "none" else args.block)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(report(results))
    return 0
