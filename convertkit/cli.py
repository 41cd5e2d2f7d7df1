"""The command line: parse options into specs, call the library, render, exit.

Only this module calls sys.exit. Frameworks are imported by the library inside the
commands that need them, never at start-up, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TYPE_CHECKING

import click

from convertkit import __version__
from convertkit.config import is_debug
from convertkit.errors import ConvertkitError, UsageError

if TYPE_CHECKING:
    from convertkit.report import Report

FRAMEWORKS = ("pytorch", "tensorflow", "paddle", "mindspore", "onnx")
EXIT_CODES_HELP = """Exit codes: 0 every artifact built and passed its check; 1 a numerical
check failed; 2 bad usage or unreadable input; 3 the conversion failed; 4 a needed
framework or toolchain is missing. When several apply: the first of 2, 4, 3, 1."""
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEFAULT_FORMATS = "json,html,junit"
BUDGET_FILE_HELP = ("A TOML file of budgets per precision, e.g. [fp16] atol = 0.02 "
                    "rtol = 0.02; --atol/--rtol override it.")
REPORT_FORMAT_HELP = ("Reports to write into the output folder, comma-separated: json "
                      "(always), html (report.html), junit (junit.xml).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "--version", prog_name="convertkit")
def cli() -> None:
    """Port a deep-learning model to CPU, GPU and NPU targets through ONNX, and prove
    with numbers that every artifact computes what the source model computes."""


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("source")
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="Output folder, written whole or not at all.")
@click.option("-f", "--framework", type=click.Choice(FRAMEWORKS),
              help="Source framework (default: detected from SOURCE).")
@click.option("-i", "--input", "inputs", multiple=True, metavar="NAME:DIMS[:DTYPE]",
              help="An input, e.g. x:1x3x224x224:float32; a name in place of a number makes "
              "that axis dynamic (ids:batchx128:int64). Repeatable.")
@click.option("-t", "--target", "targets", multiple=True, metavar="TARGET",
              help="FAMILY[:TOOLCHAIN][@DEVICE], e.g. cpu, cpu:ort. Repeatable; `onnx` is "
              "always built. `convertkit targets` lists them.")
@click.option("--data", type=click.Path(), help="An .npz of real inputs for the check.")
@click.option("--weights", type=click.Path(), help="Weights to load into the model a "
              "FILE.py:NAME factory returns (a PyTorch state_dict, a Keras .weights.h5).")
@click.option("--opset", type=click.IntRange(7, 30), help="ONNX opset to export or convert to.")
@click.option("--signature", metavar="NAME", help="TensorFlow: the SavedModel or TFLite "
              "signature (or tf.Module tf.function) to convert; default serving_default, "
              "or the only one.")
@click.option("--output", "output_names", multiple=True, metavar="TENSOR",
              help="Frozen GraphDef (.pb): an output tensor, e.g. logits or logits:0. "
              "Repeatable or comma-separated.")
@click.option("--inputs-as-nchw", "inputs_as_nchw", multiple=True, metavar="NAME",
              help="TensorFlow: make this NHWC input NCHW in the ONNX model (and in -i, "
              "--data and the check feeds). Repeatable or comma-separated.")
@click.option("--trust-code", is_flag=True, help="Keras .keras/.h5: allow Python code in the "
              "file (Lambda layers) to be deserialised. Only for files you trust.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Precision to build at (default: each target's best); with `-t cpu` "
              "it limits the candidates.")
@click.option("--optimize/--no-optimize", default=True, show_default=True,
              help="Constant folding, dead-node removal and standard fusions on the ONNX "
              "model (checked like every artifact).")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance of the check.")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance of the check.")
@click.option("--budget-file", type=click.Path(), help=BUDGET_FILE_HELP)
@click.option("--report-format", "report_formats", default=DEFAULT_FORMATS, show_default=True,
              help=REPORT_FORMAT_HELP)
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--debug", is_flag=True, help="Show framework output and tracebacks.")
def convert(source: str, out: str, framework: str | None, inputs: tuple[str, ...],
            targets: tuple[str, ...], data: str | None, weights: str | None,
            opset: int | None, signature: str | None, output_names: tuple[str, ...],
            inputs_as_nchw: tuple[str, ...], trust_code: bool, precision: str | None,
            optimize: bool, atol: float | None, rtol: float | None,
            budget_file: str | None, report_formats: str, force: bool, debug: bool) -> None:
    """Convert SOURCE for each target and check every artifact against SOURCE.

    SOURCE is a model file or folder (.onnx, TorchScript .pt, ExportedProgram .pt2,
    SavedModel folder, .keras, .h5, .tflite, frozen GraphDef .pb), or FILE.py:NAME /
    package.module:NAME naming a model or a function that returns one.
    """
    from convertkit.pipeline import convert as run_conversion

    report = run_conversion(
        source, out, framework=framework, inputs=inputs, targets=targets, data=data,
        weights=weights, opset=opset, optimize=optimize, precision=precision, atol=atol,
        rtol=rtol, force=force,
        signature=signature, output_names=output_names, inputs_as_nchw=inputs_as_nchw,
        trust_code=trust_code, budget_file=budget_file, report_formats=report_formats,
        show_framework_output=debug or is_debug(),
        progress=lambda message: click.echo(f"... {message}", err=True),
    )
    _render_and_exit(report, f"report: {out}/report.json")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("reference")
@click.argument("candidate")
@click.option("-o", "--out", "out", type=click.Path(),
              help="Output folder for the reports and repro/, written whole or not at all. "
              "Without it nothing is written.")
@click.option("-f", "--framework", type=click.Choice(FRAMEWORKS),
              help="Framework of a side that is a source model (default: detected).")
@click.option("-i", "--input", "inputs", multiple=True, metavar="NAME:DIMS[:DTYPE]",
              help="An input of the reference, as for convert. Repeatable.")
@click.option("--data", type=click.Path(), help="An .npz of real inputs for both models.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Budget to judge by (default: the looser of the two models' precisions).")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance of the check.")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance of the check.")
@click.option("--budget-file", type=click.Path(), help=BUDGET_FILE_HELP)
@click.option("--report-format", "report_formats", default=DEFAULT_FORMATS, show_default=True,
              help=REPORT_FORMAT_HELP)
@click.option("--localize/--no-localize", default=True, show_default=True,
              help="Find the first diverging node when a check fails.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--debug", is_flag=True, help="Show framework output and tracebacks.")
def check(reference: str, candidate: str, out: str | None, framework: str | None,
          inputs: tuple[str, ...], data: str | None, precision: str | None,
          atol: float | None, rtol: float | None, budget_file: str | None,
          report_formats: str, localize: bool, force: bool, debug: bool) -> None:
    """Compare CANDIDATE with REFERENCE on the same inputs, under a budget.

    Each is an ONNX model (fp32, fp16 or quantised), an OpenVINO IR (.xml + .bin), a
    source model (any SOURCE convert takes) or a folder written by convert.
    """
    from convertkit.comparison import check as run_check

    report = run_check(
        reference, candidate, out, framework=framework, inputs=inputs, data=data,
        precision=precision, atol=atol, rtol=rtol, budget_file=budget_file,
        report_formats=report_formats, localize=localize, force=force,
        show_framework_output=debug or is_debug(),
        progress=lambda message: click.echo(f"... {message}", err=True),
    )
    _render_and_exit(report, f"report: {out}/report.json" if out else "no -o: nothing written")


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
            state = "prepares" if getattr(platform, "prepares_when_missing", False) else "missing"
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

    from convertkit.toolchains import load_toolchains, toolchain_status, toolchains_dir

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
@click.option("-t", "--target", "targets", multiple=True, metavar="TARGET",
              help="Give the verdict of these targets only (default: every known target).")
@click.option("-f", "--framework", type=click.Choice(FRAMEWORKS),
              help="Source framework (default: detected from SOURCE).")
@click.option("-i", "--input", "inputs", multiple=True, metavar="NAME:DIMS[:DTYPE]",
              help="Input shapes: needed to lower PyTorch sources; concrete dims satisfy "
              "targets that need static shapes.")
@click.option("--weights", type=click.Path(), help="Weights for a FILE.py:NAME factory.")
@click.option("--opset", type=click.IntRange(1, 30), help="Judge the model at this opset.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--debug", is_flag=True, help="Show framework output and tracebacks.")
def inspect(source: str, targets: tuple[str, ...], framework: str | None,
            inputs: tuple[str, ...], weights: str | None, opset: int | None, as_json: bool,
            debug: bool) -> None:
    """Describe an ONNX model (or any SOURCE, lowered first) and say which targets take it.

    Exit 0 when every target accepts the model (possibly after preparation), 3 otherwise.
    """
    import json

    from convertkit.inspection import format_inspection, inspect_model

    inspection = inspect_model(source, targets=targets, framework=framework, inputs=inputs,
                               weights=weights, opset=opset,
                               show_framework_output=debug or is_debug())
    click.echo(json.dumps(inspection.to_dict(), indent=2) if as_json
               else format_inspection(inspection))
    sys.exit(inspection.exit_code)


BATCH_EXIT_CODES_HELP = """Exit codes: 0 every job passed; 1 a numerical check failed;
2 the manifest or the command is wrong (nothing ran); 3 a job failed to convert (unsupported
op, shape, crash, timeout, ...); 4 a job's framework or toolchain is missing. When several
apply: the first of 2, 4, 3, 1."""


@cli.command(epilog=BATCH_EXIT_CODES_HELP)
@click.argument("manifest", type=click.Path())
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="Output folder: jobs/NAME per job, summary.json, summary.html, junit.xml.")
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
    from convertkit.report import format_findings, format_table
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
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


class _LowercaseLevelFormatter(logging.Formatter):
    """`warning: ...`, like the CLI's own `error:` and `hint:` lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
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
