"""Output is never silently truncated: `probe once` writes a large round whole through a
pipe read late, and through one another process set O_NONBLOCK (the case that cut the JSON at
exactly 64 KiB with exit 0); a reader that goes away is an error line and exit 74."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.hardening.util import PROBE, ROOT, loopback_config

FORMATS = ["json", "jsonl", "tsv", "table"]
TARGETS = 300


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("output") / "probe.yaml"
    return loopback_config(path, dc_port=9, datacenters=TARGETS, timeout=0.3)  # port 9: refused


def _unread(fd: int) -> int:
    import array
    import termios

    size = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, size)
    return int(size[0])


def run_into_pipe(config: Path, format: str, nonblocking: bool) -> tuple[int, bytes, bytes]:
    """`probe once` into a pipe nobody reads until it is full (or the probe is done)."""
    read_end, write_end = os.pipe()
    if nonblocking:  # as a sibling sharing the pipe would have set it
        fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    process = subprocess.Popen([*PROBE, "once", "--config", str(config), "--format", format],
                               stdout=write_end, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(write_end)
    deadline = time.monotonic() + 120
    while process.poll() is None and _unread(read_end) < 65536 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the writer is now waiting on a full pipe: read late
    chunks = []
    with os.fdopen(read_end, "rb") as reader:
        while chunk := reader.read(65536):
            chunks.append(chunk)
    assert process.stderr is not None
    error = process.stderr.read()
    return process.wait(60), b"".join(chunks), error


def complete(format: str, output: bytes) -> None:
    text = output.decode()
    if format == "json":
        data = json.loads(text)
        assert len(data["verdicts"]) == TARGETS
    elif format == "jsonl":
        lines = text.splitlines()
        assert len(lines) == TARGETS and all(json.loads(line) for line in lines)
    elif format == "tsv":
        assert len(text.splitlines()) >= TARGETS and text.endswith("\n")
    else:
        assert all(f"dc{i}" in text for i in range(TARGETS)) and text.endswith("\n")


@pytest.mark.parametrize("nonblocking", [False, True], ids=["blocking", "O_NONBLOCK"])
@pytest.mark.parametrize("format", FORMATS)
def test_a_large_round_arrives_whole_through_a_pipe_read_late(
        config: Path, format: str, nonblocking: bool) -> None:
    code, output, error = run_into_pipe(config, format, nonblocking)
    assert code == 0, error
    assert error == b""
    if format == "json":
        assert len(output) > 200_000, len(output)  # hundreds of KB, several pipe buffers
    complete(format, output)


def test_a_reader_that_goes_away_is_an_error_not_exit_0(config: Path) -> None:
    read_end, write_end = os.pipe()
    process = subprocess.Popen([*PROBE, "once", "--config", str(config), "--format", "json"],
                               stdout=write_end, stderr=subprocess.PIPE, cwd=ROOT)
    os.close(write_end)
    deadline = time.monotonic() + 120
    while process.poll() is None and _unread(read_end) < 65536 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.close(read_end)  # the reader is gone with the output half written
    assert process.stderr is not None
    error = process.stderr.read().decode()
    assert process.wait(60) == 74
    assert error.count("\n") == 1 and error.startswith("probe: error: cannot write to stdout"), error
