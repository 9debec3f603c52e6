"""Ground truth for timing fidelity: plain blocking sockets, one at a time, in their own
process, against the same targets while the tool under test is loaded.

Prints one JSON line of durations (seconds) when stdin closes or after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler")
    parser.add_argument("--kind", choices=("tcp", "tls"), required=True)
    parser.add_argument("--ca")
    parser.add_argument("--sni")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--max-samples", type=int, default=20000)
    parser.add_argument("targets", help="file of ADDRESS:PORT lines")
    args = parser.parse_args(argv)
    with open(args.targets) as f:
        targets = [(a, int(p)) for a, p in (line.strip().rsplit(":", 1) for line in f if line.strip())]
    context = ssl.create_default_context(cafile=args.ca) if args.kind == "tls" else None
    stop = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    print("ready", flush=True)
    samples: list[float] = []
    stamps: list[float] = []
    errors = 0
    deadline = time.monotonic() + args.max_seconds
    i = 0
    while not stop.is_set() and time.monotonic() < deadline and len(samples) < args.max_samples:
        address, port = targets[i % len(targets)]
        i += 1
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(5)
            t0 = time.perf_counter()
            sock.connect((address, port))
            if context is None:
                elapsed = time.perf_counter() - t0  # the connect alone, as reach reports it
            else:
                tls = context.wrap_socket(sock, server_hostname=args.sni)
                tls.close()
                elapsed = time.perf_counter() - t0  # connect + handshake
            sock.close()
        except OSError:
            errors += 1
            continue
        samples.append(elapsed)
        stamps.append(time.time())
        time.sleep(0.001)  # a light sampler: it must not load the targets itself
    # attempts: every connect tried (the farm's count of accepted connections includes them)
    json.dump({"samples": samples, "stamps": stamps, "errors": errors, "attempts": i}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
