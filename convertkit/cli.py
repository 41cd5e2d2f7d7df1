"""The command line: parse options into specs, call the library, render, exit.

Only this module calls sys.exit. Frameworks are imported by the library inside the
commands that need them, never at start-up, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from convertkit import __version__
from convertkit.config import is_debug
from convertkit.errors import ConvertkitError, UsageError

FRAMEWORKS = ("pytorch", "tensorflow", "paddle", "mindspore", "onnx")
EXIT_CODES_HELP = """Exit codes: 0 every artifact built and passed its check; 1 a numerical
check failed; 2 bad usage or unreadable input; 3 the conversion failed; 4 a needed
framework or toolchain is missing. When several apply: the first of 2, 4, 3, 1."""


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
              "FILE.py:NAME factory returns (a PyTorch state_dict).")
@click.option("--opset", type=click.IntRange(7, 30), help="ONNX opset to export or convert to.")
@click.option("--optimize/--no-optimize", default=True, show_default=True,
              help="Constant folding, dead-node removal and standard fusions on the ONNX "
              "model (checked like every artifact).")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance of the check.")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance of the check.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--debug", is_flag=True, help="Show framework output and tracebacks.")
def convert(source: str, out: str, framework: str | None, inputs: tuple[str, ...],
            targets: tuple[str, ...], data: str | None, weights: str | None,
            opset: int | None, optimize: bool, atol: float | None, rtol: float | None,
            force: bool, debug: bool) -> None:
    """Convert SOURCE for each target and check every artifact against SOURCE.

    SOURCE is a model file or folder (.onnx, TorchScript .pt, ExportedProgram .pt2), or
    FILE.py:NAME / package.module:NAME naming a model or a function that returns one.
    """
    from convertkit.pipeline import convert as run_conversion
    from convertkit.report import format_table

    report = run_conversion(
        source, out, framework=framework, inputs=inputs, targets=targets, data=data,
        weights=weights, opset=opset, optimize=optimize, atol=atol, rtol=rtol, force=force,
        show_framework_output=debug or is_debug(),
        progress=lambda message: click.echo(f"... {message}", err=True),
    )
    if report.artifacts:
        click.echo(format_table(report))
    if report.error:
        _print_error(report.error["message"], report.error["hint"])
    for artifact in report.artifacts:
        if artifact.error:
            _print_error(f"{artifact.target}: {artifact.error['message']}",
                         artifact.error["hint"])
    click.echo(f"status: {report.status}   report: {out}/report.json")
    sys.exit(report.exit_code)


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
        rows.append((label, "installed" if platform.is_available() else "missing",
                     platform.description))
    width = max(len(r[0]) for r in rows)
    for label, state, description in rows:
        click.echo(f"{label.ljust(width)}  {state.ljust(9)}  {description}")


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


def _print_error(message: str, hint: str) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


def main() -> None:
    debug = "--debug" in sys.argv or is_debug()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
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
