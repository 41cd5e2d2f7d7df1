"""The command line: parse options into specs, call the library, render, exit.

Only this module calls sys.exit. Frameworks are imported by the library inside the
commands that need them, never at start-up, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from convertkit import __version__
from convertkit.config import is_debug
from convertkit.errors import ConvertkitError, InternalError, UsageError
from convertkit.options import option_fields
from convertkit.safe_text import printable

if TYPE_CHECKING:
    from convertkit.reports.record import Report

EXIT_CODES_HELP = """Exit codes: 0 every artifact built and passed its check; 1 a numerical
check failed; 2 bad usage or unreadable input; 3 the conversion failed; 4 a needed
framework or toolchain is missing; 5 convertkit itself failed (a bug: the message names
the log with the traceback). When several apply: the first of 2, 5, 4, 3, 1."""
F = TypeVar("F", bound=Callable[..., Any])


def conversion_options(command: str) -> Callable[[F], F]:
    """The flags of every ConvertOptions field ``command`` takes (convertkit/options.py),
    so that convert, check and inspect cannot drift apart."""

    def decorate(function: F) -> F:
        for spec in reversed(option_fields(command)):
            flag = spec.flag
            settings: dict[str, Any] = {"help": flag.help}
            if flag.is_switch and "/" in flag.names[0]:  # --name/--no-name
                settings.update(default=spec.default, show_default=True)
            elif flag.is_switch:
                settings["is_flag"] = True
            elif flag.choices:
                settings["type"] = click.Choice(flag.choices, case_sensitive=False)
            if flag.repeatable:
                settings["multiple"] = True
            if flag.metavar:
                settings["metavar"] = flag.metavar
            function = click.option(*flag.names, spec.name, **settings)(function)
        return function

    return decorate


def output_folder_option(*, required: bool, help: str) -> Callable[[F], F]:
    """-o/--out; the folder is remembered for the crash log of an unexpected failure."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        _OUTPUT_FOLDER["out"] = Path(value) if value else None
        return value

    return click.option("-o", "--out", "out", required=required, type=click.Path(),
                        callback=remember, help=help)


def run_options(function: F) -> F:
    """--force and --debug, for the commands that write an output folder."""
    function = click.option("--debug", is_flag=True,
                            help="Show framework output and tracebacks.")(function)
    return click.option("--force", is_flag=True,
                        help="Replace the output folder if it exists.")(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "--version", prog_name="convertkit")
def cli() -> None:
    """Port a deep-learning model to CPU, GPU and NPU targets through ONNX, and prove
    with numbers that every artifact computes what the source model computes."""


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("source")
@output_folder_option(required=True, help="Output folder, written whole or not at all.")
@conversion_options("convert")
@run_options
def convert(source: str, out: str, force: bool, debug: bool, **values: Any) -> None:
    """Convert SOURCE for each target and check every artifact against SOURCE.

    SOURCE is a model file or folder (.onnx, TorchScript .pt, ExportedProgram .pt2,
    SavedModel folder, .keras, .h5, .tflite, frozen GraphDef .pb, Paddle inference model,
    .mindir), or FILE.py:NAME / package.module:NAME naming a model or a function that
    returns one.
    """
    from convertkit.options import ConvertOptions
    from convertkit.pipeline import convert as run_conversion

    options = ConvertOptions.parse(values, command="convert")
    report = run_conversion(source, out, options, force=force,
                            show_framework_output=debug or is_debug(), progress=_progress)
    _render_and_exit(report, f"report: {out}/report.json")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("reference")
@click.argument("candidate")
@output_folder_option(required=False, help="Output folder for the reports and repro/, "
                      "written whole or not at all. Without it nothing is written.")
@conversion_options("check")
@run_options
def check(reference: str, candidate: str, out: str | None, force: bool, debug: bool,
          **values: Any) -> None:
    """Compare CANDIDATE with REFERENCE on the same inputs, under a budget.

    Each is an ONNX model (fp32, fp16 or quantised), an OpenVINO IR (.xml + .bin), a
    source model (any SOURCE convert takes; the source options apply to it) or a folder
    written by convert.
    """
    from convertkit.check_models import check_models
    from convertkit.options import ConvertOptions

    options = ConvertOptions.parse(values, command="check")
    report = check_models(reference, candidate, out, options, force=force,
                          show_framework_output=debug or is_debug(), progress=_progress)
    _render_and_exit(report, f"report: {out}/report.json" if out else "no -o: nothing written")


def _progress(message: str) -> None:
    click.echo(f"... {printable(message)}", err=True)


@cli.command()
@click.option("--ops", "ops_of", metavar="TARGET",
              help="Print the operator table of TARGET (domain, op, opset versions).")
def targets(ops_of: str | None) -> None:
    """List every target convertkit knows and whether its runtime is installed here."""
    from convertkit.registry import load_platforms, resolve_target
    from convertkit.spec import TargetSpec

    if ops_of:
        platform = resolve_target(TargetSpec.parse(ops_of))
        requirements = platform.requirements
        low, high = requirements.opset_range()
        click.echo(f"{ops_of}: opsets {low}-{high}"
                   + (", static shapes only" if requirements.static_shapes else ""))
        click.echo(f"source: {requirements.ops.source}")
        rows = requirements.ops.table()
        width = max(len(op) for _, op, _ in rows)
        for domain, op, versions in rows:
            click.echo(f"{domain:<22} {op.ljust(width)}  {versions}")
        return
    rows = []
    for name, platform in load_platforms().items():
        family = platform.family.value
        label = family if name == family else f"{family}:{name}"
        if platform.is_family_default and name != family:
            label = f"{family}, {label}"
        if platform.is_available():
            state = "installed"
        else:  # a platform that prepares inputs for a toolchain on another machine
            state = "prepares" if platform.prepares_when_missing else "missing"
        rows.append((label, state, platform.description))
    width = max(len(r[0]) for r in rows)
    for label, state, description in rows:
        click.echo(f"{label.ljust(width)}  {state.ljust(9)}  {description}")


@cli.group()
def toolchains() -> None:
    """NPU toolchains, each in a virtual environment of its own (they pin old protobuf,
    numpy and onnx releases, or another Python)."""


@toolchains.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def toolchains_list(as_json: bool) -> None:
    """Show each toolchain, whether it is installed, where, and its versions."""
    import json

    from convertkit.config import toolchains_dir
    from convertkit.toolchains import load_toolchains, toolchain_status

    statuses = [toolchain_status(name) for name in load_toolchains()]
    if as_json:
        click.echo(json.dumps({"path": str(toolchains_dir()),
                               "toolchains": [s.to_dict() for s in statuses]}, indent=2))
        return
    width = max(len(s.name) for s in statuses)
    for status in statuses:
        versions = ", ".join(f"{n} {v}" for n, v in status.versions.items())
        detail = {"installed": f"{status.root}  {versions}  (Python {status.python_version})",
                  "broken": f"{status.root}  {status.reason}",
                  "missing": status.description}[status.state]
        click.echo(f"{status.name.ljust(width)}  {status.state.ljust(9)}  {detail}")
    click.echo(f"environments live in {toolchains_dir()} (set CONVERTKIT_TOOLCHAINS_DIR to "
               "move them)")


@toolchains.command("install")
@click.argument("name")
@click.option("--python", "python", metavar="PATH",
              help="Interpreter to build the environment with (default: the version the "
              "toolchain needs, found on PATH or under pyenv; else this one).")
@click.option("--force", is_flag=True, help="Rebuild it even if it is installed and intact.")
def toolchains_install(name: str, python: str | None, force: bool) -> None:
    """Create NAME's environment from the pinned requirements kept in convertkit. Installing
    an intact toolchain again does nothing; a broken one is rebuilt."""
    from convertkit.toolchains import install

    status, changed = install(name, python=python, force=force,
                              progress=lambda message: click.echo(f"... {message}", err=True))
    versions = ", ".join(f"{n} {v}" for n, v in status.versions.items())
    verb = "installed" if changed else "already installed"
    click.echo(f"{name}: {verb} at {status.root} ({versions})")


@toolchains.command("remove")
@click.argument("name")
def toolchains_remove(name: str) -> None:
    """Delete NAME's environment."""
    from convertkit.toolchains import remove

    click.echo(f"{name}: removed" if remove(name) else f"{name}: not installed")


@cli.command()
@click.argument("source")
@conversion_options("inspect")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--debug", is_flag=True, help="Show framework output and tracebacks.")
def inspect(source: str, as_json: bool, debug: bool, **values: Any) -> None:
    """Describe an ONNX model (or any SOURCE, lowered first) and say which targets take it.

    Exit 0 when every target accepts the model (possibly after preparation), 3 otherwise.
    """
    import json

    from convertkit.inspection import format_inspection, inspect_model
    from convertkit.options import ConvertOptions

    options = ConvertOptions.parse(values, command="inspect")
    inspection = inspect_model(source, options, show_framework_output=debug or is_debug())
    click.echo(json.dumps(inspection.to_dict(), indent=2) if as_json
               else format_inspection(inspection))
    sys.exit(inspection.exit_code)


BATCH_EXIT_CODES_HELP = """Exit codes: 0 every job passed; 1 a numerical check failed;
2 the manifest or the command is wrong (nothing ran); 3 a job failed to convert (unsupported
op, shape, crash, timeout, ...); 4 a job's framework or toolchain is missing; 5 convertkit
itself failed in a job or in the batch (a bug). When several apply: the first of 2, 5, 4,
3, 1."""


@cli.command(epilog=BATCH_EXIT_CODES_HELP)
@click.argument("manifest", type=click.Path())
@output_folder_option(required=True, help="Output folder: jobs/NAME per job, summary.json, "
                      "summary.html, junit.xml.")
@click.option("-j", "--jobs", "parallel", type=click.IntRange(min=1),
              help="Jobs run at once (local default: the number of cores; ray: no limit).")
@click.option("--executor", type=click.Choice(("local", "ray")), default="local",
              show_default=True, help="Run jobs here, or as Ray tasks.")
@click.option("--address", help="Ray cluster to use (HOST:PORT, or `auto`); default: start "
              "a local Ray instance.")
@click.option("--resume", is_flag=True, help="Finish a batch that was interrupted (complete "
              "jobs are kept).")
@click.option("--no-cache", "no_cache", is_flag=True, help="Redo every job, even those whose "
              "inputs are unchanged.")
def batch(manifest: str, out: str, parallel: int | None, executor: str, address: str | None,
          resume: bool, no_cache: bool) -> None:
    """Convert and check every model of MANIFEST (YAML), each job in its own process.

    A job whose inputs (source files, options, convertkit and toolchain versions) are
    unchanged since its last complete run in OUT is not redone.
    """
    from convertkit.batch.driver import run_batch
    from convertkit.batch.progress import ProgressDisplay
    from convertkit.batch.summary import format_summary

    display = ProgressDisplay(lambda text: click.echo(text, err=True, nl=False),
                              is_tty=sys.stderr.isatty())
    try:
        summary = run_batch(manifest, out, parallel=parallel, executor=executor,
                            address=address, resume=resume, use_cache=not no_cache,
                            progress=display)
    finally:
        display.close()
    click.echo(format_summary(summary))
    sys.exit(summary.exit_code)


def _render_and_exit(report: Report, where: str) -> None:
    """The table, the findings under it, every error, the status line; exit with the
    report's code."""
    from convertkit.reports.terminal import format_findings, format_table
    from convertkit.spec import Status

    if report.artifacts:
        click.echo(format_table(report))
    for line in format_findings(report):
        click.echo(line)
    if report.error:
        _print_error(report.error["message"], report.error["hint"])
    for artifact in report.artifacts:
        if artifact.error:
            _print_error(f"{artifact.target}: {artifact.error['message']}",
                         artifact.error["hint"])
    unchecked = [f"{a.target} {a.status.value}" for a in report.artifacts
                 if a.status in (Status.BUILT, Status.PREPARED)]
    note = f" ({len(unchecked)} not checked here: {', '.join(unchecked)})" if unchecked else ""
    click.echo(f"status: {report.status}{note}   {where}")
    sys.exit(report.exit_code)


def _print_error(message: str, hint: str) -> None:
    """One `error:` line and one `hint:` line; names from a model in them are escaped."""
    click.echo(f"error: {printable(message)}", err=True)
    if hint:
        click.echo(f"hint: {printable(hint)}", err=True)


class _LowercaseLevelFormatter(logging.Formatter):
    """`warning: ...`, like the CLI's own `error:` and `hint:` lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        # The message may quote names from a model: one line, escaped (a traceback under
        # --debug keeps its lines).
        record.msg, record.args = printable(record.getMessage()), None
        return super().format(record)


def main() -> None:
    debug = "--debug" in sys.argv or is_debug()
    handler = logging.StreamHandler()
    handler.setFormatter(_LowercaseLevelFormatter(
        "%(levelname)s %(name)s: %(message)s" if debug else "%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(UsageError.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except ConvertkitError as exc:
        if debug:
            traceback.print_exc()
        _print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: one line, the traceback in a file, its own code
        if debug:
            traceback.print_exc()
        error = InternalError.from_exception(exc, str(_write_crash_log()))
        _print_error(error.message, error.hint)
        sys.exit(error.exit_code)


def _write_crash_log() -> Path:
    """The traceback of the exception being handled, in OUT/logs/ when the command's
    output folder exists (a batch's, or one written earlier), else in a temp file."""
    out = _OUTPUT_FOLDER.get("out")
    folder = out / "logs" if out is not None and out.is_dir() else None
    text = f"$ convertkit {' '.join(sys.argv[1:])}\nconvertkit {__version__}\n\n"
    text += traceback.format_exc()
    if child_traceback := getattr(sys.exc_info()[1], "child_traceback", ""):
        text += f"\nin the child process that ran the step:\n{child_traceback}"
    if folder is not None:
        try:
            folder.mkdir(exist_ok=True)
            path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            path.write_text(text)
            return path
        except OSError:
            pass
    import tempfile

    handle, name = tempfile.mkstemp(prefix="convertkit-crash-", suffix=".log")
    with os.fdopen(handle, "w") as log:
        log.write(text)
    return Path(name)


# The output folder of the running command, for the crash log (output_folder_option).
_OUTPUT_FOLDER: dict[str, Path | None] = {}
