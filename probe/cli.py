"""The `probe` command line (typer). Bad input is one line on stderr and exit 2."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import select
import sys
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import yaml
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from probe import __version__
from probe.inputs import catalog, plan
from probe.inputs.config import ConfigError, load_config


class _NoFlagMetavar:
    """typer 0.29 labels every flag `<bool>` in --help, though a flag takes no value: drop
    the label (what --help shows is pinned by a test, whatever typer version is installed)."""

    def get_params(self, ctx: Any) -> Any:  # typer's own (vendored) click types
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_NoFlagMetavar, TyperCommand):
    pass


class _Group(_NoFlagMetavar, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="reach: a reachability monitor for messaging services that governments block.",
)
EXIT_BAD_INPUT = 2
T = TypeVar("T")


EXIT_OUTPUT = 74  # EX_IOERR: the output could not be written whole


class OutputError(Exception):
    """stdout refused part of the output: never exit 0 with half a document."""


def write_stdout(text: str) -> None:
    """Write `text` to stdout whole, or raise OutputError. A short write is continued; a
    pipe that another process set O_NONBLOCK (the description is shared) answers EAGAIN when
    full, which is waited out, not dropped (this once cut `probe once --format json` at
    exactly 64 KiB with exit 0); any other failure is an error."""
    data = text.encode(sys.stdout.encoding or "utf-8", "replace")
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None
    fd = sys.stdout.fileno()
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except (BlockingIOError, InterruptedError):
            select.select([], [fd], [])  # full: wait for the reader
            continue
        except OSError as exc:
            raise OutputError(f"cannot write to stdout: {exc.strerror or exc} after "
                              f"{len(data) - len(view)} of {len(data)} bytes") from None
        view = view[written:]


def fail(message: str) -> NoReturn:
    """One clear line on stderr, exit 2: the contract for every kind of bad input."""
    print(f"probe: error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_BAD_INPUT)


def run_loop(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """Run the probe's coroutine on the configured event loop."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                fail("schedule.event_loop is uvloop, but uvloop is not installed "
                     "(pip install 'reach-probe[fast]')")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def _version(value: bool) -> None:
    if value:
        print(f"probe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """reach probe."""


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Probe config (YAML).")]


class RoundFormat(StrEnum):
    """How `probe once` prints a round: a table for people, JSON for programs, and one line
    per target (TSV, JSON Lines) for pipes."""

    table = "table"
    json = "json"
    tsv = "tsv"
    jsonl = "jsonl"


@app.command(cls=_Command)
def once(
    config: ConfigOption,
    format: Annotated[RoundFormat, typer.Option(
        help="table (people), json (one object), tsv or jsonl (one line per target, for pipes).",
    )] = RoundFormat.table,
    fail_on_block: Annotated[bool, typer.Option(help="Exit 1 when a target is blocked.")] = False,
) -> None:
    """Run one round, print its verdicts, exit 0 (1 with --fail-on-block and a block)."""
    from probe.measure.round import run_round
    from probe.sinks.report import blocked, make_console, print_table, round_json, write_jsonl, write_tsv

    try:
        cfg = load_config(config)
        plans = plan.plan(cfg)  # one the config allows but that cannot be made (two same targets)
    except ConfigError as exc:
        fail(str(exc))
    from probe.sinks import scrub

    scrub.shared.configure(scrub.vantage_addresses(cfg.vantage))  # the checks' raw bytes too
    err = Console(stderr=True)
    if format is RoundFormat.table and err.is_terminal:
        with err.status("probing...") as status:
            def progress(done: int, planned: int) -> None:
                status.update(f"probing: {done}/{planned} checks")
            result = run_loop(run_round(cfg, progress, plans=plans), cfg.schedule.event_loop)
    else:
        result = run_loop(run_round(cfg, plans=plans), cfg.schedule.event_loop)
    from probe.sinks.evidence import EvidenceLog
    from probe.sinks.scrub import Scrubber

    EvidenceLog.for_config(cfg).append_round(result)
    out = io.StringIO()  # printed through the scrubber: no own address on a terminal either
    if format is RoundFormat.json:
        json.dump(round_json(result), out, indent=1)
        out.write("\n")
    elif format is RoundFormat.tsv:
        write_tsv(result, out)
    elif format is RoundFormat.jsonl:
        write_jsonl(result, out)
    else:
        console = make_console()
        with console.capture() as captured:
            print_table(result, console)
        out.write(captured.get())
    write_stdout(Scrubber.for_vantage(cfg.vantage).text(out.getvalue()))
    if fail_on_block and blocked(result):
        raise typer.Exit(1)


@app.command(cls=_Command)
def run(
    config: ConfigOption,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve metrics and status on.")] = ":9650",
    web_config_file: Annotated[Path | None, typer.Option(
        help="Prometheus web-config file: TLS and basic auth for the HTTP endpoints.")] = None,
    web_enable_lifecycle: Annotated[bool, typer.Option(
        "--web-enable-lifecycle",
        help="Enable POST /-/reload (off by default, like Prometheus' --web.enable-lifecycle). "
             "Needs --web-config-file with basic_auth_users or required client certificates; "
             "same-origin only, at most one every 5 s, and a reload never starts a round early. "
             "SIGHUP always reloads.")] = False,
    health_socket: Annotated[Path | None, typer.Option(
        envvar="REACH_HEALTH_SOCKET",
        help="Also serve /healthz, without TLS or auth, on this Unix socket (for a container "
             "HEALTHCHECK when the port needs client certificates).")] = None,
) -> None:
    """Run rounds on the schedule and serve /metrics, /healthz, /api/status and a status page."""
    from probe.serve.server import serve
    from probe.serve.service import parse_listen
    from probe.serve.webconfig import load_web_config

    try:
        host, port = parse_listen(listen)
        cfg = load_config(config)
        plan.plan(cfg)  # a plan the config allows but that cannot be made (two same targets)
        web_cfg = load_web_config(web_config_file) if web_config_file is not None else None
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if web_enable_lifecycle and (web_cfg is None or not web_cfg.authenticates):
        fail("--web-enable-lifecycle needs --web-config-file with basic_auth_users or "
             "client_auth_type: RequireAndVerifyClientCert (an open /-/reload lets anyone "
             "reload the probe)")
    code = run_loop(serve(config, cfg, host, port, web_cfg, web_enable_lifecycle, health_socket),
                    cfg.schedule.event_loop)
    raise typer.Exit(code)


@app.command("check-config", cls=_Command)
def check_config(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Probe config (YAML).")] = None,
    file: Annotated[Path | None, typer.Argument(help="The config, as the older positional form.",
                                                show_default=False)] = None,
) -> None:
    """Validate a config (-c PATH, as once and run take it); print a summary, or the error
    with file, line and key (exit 2)."""
    if (config is None) == (file is None):
        fail("check-config: give the config once, as -c PATH (or as PATH)")
    path = config or file
    assert path is not None
    try:
        cfg = load_config(path)
        plans = plan.plan(cfg)
    except ConfigError as exc:
        fail(str(exc))
    targets = sum(len(p.target_names) for p in plans)
    print(f"{path}: ok (vantage {cfg.vantage.name}, {cfg.vantage.role}; "
          f"{len(plans)} messenger(s), {targets} targets)")
    from probe.inputs import freshness

    try:
        stale = freshness.warnings(cfg)
    except ConfigError as exc:  # an unreadable anchor file is the TLS checks' error to give
        stale = [str(exc)]
    for line in stale:  # warnings only: the config is valid
        print(f"probe: warning: {line}", file=sys.stderr)


class EvidenceFormat(StrEnum):
    text = "text"
    json = "json"


@app.command("evidence", cls=_Command)
def evidence(
    path: Annotated[Path, typer.Argument(help="Evidence log file, or the evidence directory.")],
    format: Annotated[EvidenceFormat, typer.Option(help="text or json.")] = EvidenceFormat.text,
) -> None:
    """Summarise an evidence log; report torn lines (a crash mid-write), exit 1 if any."""
    from probe.sinks.evidence import summarise

    if not path.exists():
        fail(f"{path}: no such file or directory")
    try:
        summary = summarise(path)
    except OSError as exc:
        fail(f"{path}: cannot read: {exc}")
    if format is EvidenceFormat.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{path}: {summary['rounds']} rounds, {summary['observations']} observations "
              f"in {len(summary['files'])} file(s), {summary['first_round']} .. {summary['last_round']}")
        for name, count in summary["verdicts"].items():
            print(f"  {name}: {count}")
        for torn in summary["torn_lines"]:
            print(f"  torn line skipped: {torn['file']}:{torn['line']} ({torn['bytes']} bytes)")
    if summary["torn_lines"]:
        raise typer.Exit(1)


class RulesFormat(StrEnum):
    table = "table"
    markdown = "markdown"
    tsv = "tsv"


@app.command("rules", cls=_Command)
def show_rules(
    format: Annotated[RulesFormat, typer.Option(
        help="table (people), markdown (docs/classifier.md) or tsv (pipes).")] = RulesFormat.table,
) -> None:
    """Print the classifier's rule table: rule id, verdict and condition, in order."""
    from probe.judge.classify import RULES, rules_markdown
    from probe.sinks.report import make_console, print_rows

    if format is RulesFormat.markdown:
        print(rules_markdown(), end="")
    elif format is RulesFormat.tsv:
        print("#\trule\tverdict\tcondition")
        for number, rule in enumerate(RULES, 1):
            print(f"{number}\t{rule.id}\t{rule.verdict}\t{rule.condition}")
    else:
        rows = [[str(n), rule.id, rule.verdict, rule.condition] for n, rule in enumerate(RULES, 1)]
        print_rows(make_console(), ("#", "rule", "verdict", "condition"), rows, identifiers=3)


@app.command("export-config", cls=_Command)
def export_config(
    directory: Annotated[Path, typer.Argument(help="Where to write the deployment.")],
    force: Annotated[bool, typer.Option(help="Overwrite files that already exist.")] = False,
) -> None:
    """Write the rules, Alertmanager config, boards and example config of this version.

    The files land in the layout compose.yaml expects (configs/..., grafana/...)."""
    from probe.export import ExportError, write_deployment

    try:
        written = write_deployment(directory, force)
    except ExportError as exc:
        fail(str(exc))
    for path in written:
        print(path)


@app.command("catalog", cls=_Command)
def show_catalog(
    messenger: Annotated[str | None, typer.Argument(help="Messenger; all when omitted.")] = None,
    sources: Annotated[bool, typer.Option("--sources", help="Only where each catalogue comes "
                                          "from and when it was reviewed (text).")] = False,
) -> None:
    """Print the built-in endpoints (YAML), with their sources and review dates."""
    names = [messenger] if messenger else catalog.available()
    try:
        if sources:
            print("\n".join(catalog.provenance_lines(name) for name in names), end="")
            return
        data = [catalog.describe(name) for name in names]
    except ConfigError as exc:
        fail(str(exc))
    print(yaml.safe_dump_all(data, sort_keys=False), end="")


@app.command("prefixes", cls=_Command)
def refresh_prefixes(
    asn: Annotated[str | None, typer.Argument(help="The AS number, like AS32934; every "
                                              "shipped list when omitted.")] = None,
    from_file: Annotated[Path | None, typer.Option("--from", help="A saved RIPEstat "
                                                   "announced-prefixes answer (JSON): rewrite "
                                                   "the list from it.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write here instead of the shipped "
                                                "probe/data/prefixes/AS<N>.txt.")] = None,
) -> None:
    """Show where an AS's prefix list came from (source, date, verified), or rewrite it
    (a catalogue's address_space_asn) from RIPEstat's JSON with --from."""
    from probe.inputs import prefixes

    try:
        if from_file is None:
            asns = [prefixes.parse_asn(asn)] if asn else prefixes.bundled_asns()
            for number in asns:
                print(prefixes.describe(number))
            return
        if asn is None:
            raise ConfigError("--from needs the AS number it answers for (like AS32934)")
        path, count = prefixes.refresh(prefixes.parse_asn(asn), from_file, output)
        fields = prefixes.file_provenance(path)
    except ConfigError as exc:
        fail(str(exc))
    print(f"{path}: {count} prefixes; source: {fields.get('source', '?')}; "
          f"date: {fields.get('date', '?')}; verified: {fields.get('verified', 'no')}")


def _output_failed(exc: BaseException) -> NoReturn:
    message = str(exc) if isinstance(exc, OutputError) else \
        f"cannot write to stdout: {getattr(exc, 'strerror', None) or exc}"
    print(f"probe: error: {message}", file=sys.stderr)
    with contextlib.suppress(OSError):  # nothing more to flush at exit (no second message)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_OUTPUT)


def main() -> None:
    """Entry point: typer without tracebacks, and usage errors as one line, exit 2."""
    try:
        code = app(standalone_mode=False)
        sys.stdout.flush()  # print()ed output: a failed write is an error, not lost at exit
    except (OutputError, OSError) as exc:
        _output_failed(exc)
    except typer.Exit as exc:
        try:
            sys.stdout.flush()
        except OSError as flush_error:
            _output_failed(flush_error)
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors: bad option, missing argument
        message = exc.format_message().replace("Value error, ", "")
        print(f"probe: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except typer.Abort:
        print("probe: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
