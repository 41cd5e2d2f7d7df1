"""The options of a conversion, declared once.

``ConvertOptions`` is the one record of what a user can ask of ``convert`` and, for the
options they share, of ``check`` and ``inspect``. Every entry point builds it the same
way, with ``ConvertOptions.parse``: the CLI (cli.py makes each command's flags from the
fields below), the Python API (keyword arguments) and a batch manifest entry (its keys
are the field names). The adapter request, the batch job and its cache key derive from
it. Adding an option is one field here, with its flag; the README's options table is
tested against ``markdown_table()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from convertkit.config import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S
from convertkit.errors import UsageError, did_you_mean
from convertkit.reports import REPORT_FORMATS
from convertkit.spec import InputSpec, Precision, TargetSpec

COMMANDS = ("convert", "check", "inspect")
MIN_OPSET, MAX_OPSET = 7, 30


@dataclass(frozen=True)
class Flag:
    """How one option is written on the command line, and which commands take it."""

    names: tuple[str, ...]  # ("-i", "--input")
    help: str
    commands: tuple[str, ...] = COMMANDS
    metavar: str | None = None
    repeatable: bool = False  # given once per value: -i a -i b
    is_switch: bool = False  # a boolean: --name (default off) or --name/--no-name (on)
    choices: tuple[str, ...] = ()
    # Only some adapters take it; the others refuse it (adapters.check_adapter_options).
    source_specific: bool = False
    # A batch manifest takes this key in its place (a job's own limit), not the field.
    job_limit: str | None = None

    @property
    def long_name(self) -> str:
        return next(name for name in self.names if name.startswith("--"))


def _flag(*names: str, help: str, parse: Callable[[Any], Any], **flag: Any) -> dict[str, Any]:
    """A field's metadata: its flag, and the parser of its values."""
    return {"flag": Flag(tuple(names), help, **flag), "parse": parse}


# --- parsers: each takes a CLI string, a manifest value or a Python value -------------------

def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"must be a non-empty string, not {value!r}", code="bad-option")
    return value.strip()


def _items(value: Any, split_commas: bool) -> list[Any]:
    """A list of items from a list, or from one string (comma-separated when allowed)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise UsageError(f"must be a list, not {value!r}", code="bad-option")
    items = []
    for item in value:
        if isinstance(item, InputSpec | TargetSpec):
            items.append(item)
        elif split_commas:
            items += [part.strip() for part in _text(item).split(",") if part.strip()]
        else:
            items.append(_text(item))
    return items


def _names(value: Any) -> tuple[str, ...]:
    """Names given repeatedly and comma-separated (--output a,b --output c), in order."""
    return tuple(dict.fromkeys(_items(value, split_commas=True)))


def _framework(value: Any) -> str:
    from convertkit.registry import adapter_names

    name = _text(value).lower()
    known = adapter_names()
    if name not in known:
        raise UsageError(f"unknown framework {name!r}",
                         hint=did_you_mean(name, known) + f"known: {', '.join(known)}",
                         code="unknown-framework")
    return name


def _inputs(value: Any) -> tuple[InputSpec, ...]:
    return tuple(item if isinstance(item, InputSpec) else InputSpec.parse(item)
                 for item in _items(value, split_commas=False))


def _targets(value: Any) -> tuple[TargetSpec, ...]:
    """Targets as written (whether a platform builds each is the registry's question,
    asked where they are resolved), without duplicates."""
    return tuple(dict.fromkeys(item if isinstance(item, TargetSpec) else TargetSpec.parse(item)
                               for item in _items(value, split_commas=False)))


def _path(value: Any) -> Path:
    return value if isinstance(value, Path) else Path(_text(value))


def _opset(value: Any) -> int:
    number = _whole(value)
    if not MIN_OPSET <= number <= MAX_OPSET:
        raise UsageError(f"opset {number} is out of range",
                         hint=f"pass an opset from {MIN_OPSET} to {MAX_OPSET}", code="bad-option")
    return number


def _whole(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"must be a whole number >= 1, not {value!r}", code="bad-option")
    return value


def _tolerance(value: Any) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise UsageError(f"must be a number >= 0, not {value!r}", code="bad-option")
    return float(value)


def _limit(value: Any) -> float | int:
    """A --timeout or --memory-mb value: a number >= 0, 0 for no limit."""
    number = _tolerance(value)
    return int(number) if number.is_integer() else number


def _megabytes(value: Any) -> int:
    return round(_limit(value))


def _switch(value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"must be true or false, not {value!r}", code="bad-option")
    return value


def parse_precision(value: Any) -> Precision:
    if isinstance(value, Precision):
        return value
    try:
        return Precision(_text(value).lower())
    except ValueError:
        raise UsageError(f"unknown precision {value!r}",
                         hint=f"use one of: {', '.join(p.value for p in Precision)}",
                         code="bad-precision") from None


def _report_formats(value: Any) -> tuple[str, ...]:
    """'json,html' (or a list of names) -> ('json', 'html'); json is always written."""
    chosen = {"json"}
    for name in _items(value, split_commas=True):
        name = name.lower()
        if name == "all":
            chosen.update(REPORT_FORMATS)
        elif name in REPORT_FORMATS:
            chosen.add(name)
        else:
            raise UsageError(f"unknown report format {name!r}",
                             hint=f"use a comma-separated list of: {', '.join(REPORT_FORMATS)}",
                             code="bad-report-format")
    return tuple(name for name in REPORT_FORMATS if name in chosen)


_CHECK_COMMANDS = ("convert", "check")


@dataclass(frozen=True)
class ConvertOptions:
    """What a user asks of one conversion (the SOURCE and OUT aside). Plain data: it
    crosses process boundaries as JSON and its canonical form is the batch cache key."""

    # -- the source, and how it is lowered --------------------------------------------------
    framework: str | None = field(default=None, metadata=_flag(
        "-f", "--framework", parse=_framework, metavar="FRAMEWORK",
        help="The source's framework: pytorch, tensorflow, paddle, mindspore or onnx "
        "(default: detected from SOURCE)."))
    inputs: tuple[InputSpec, ...] = field(default=(), metadata=_flag(
        "-i", "--input", parse=_inputs, metavar="NAME:DIMS[:DTYPE]", repeatable=True,
        help="An input, e.g. x:1x3x224x224:float32; a name in place of a number makes that "
        "axis dynamic (ids:batchx128:int64). Repeatable."))
    weights: Path | None = field(default=None, metadata=_flag(
        "--weights", parse=_path, metavar="FILE",
        help="Weights to load into the model a FILE.py:NAME factory returns (a PyTorch "
        "state_dict, a Keras .weights.h5, a Paddle .pdparams, a MindSpore .ckpt)."))
    opset: int | None = field(default=None, metadata=_flag(
        "--opset", parse=_opset, metavar="N",
        help=f"The ONNX opset to export or convert to ({MIN_OPSET}-{MAX_OPSET})."))
    signature: str | None = field(default=None, metadata=_flag(
        "--signature", parse=_text, metavar="NAME", source_specific=True,
        help="TensorFlow: the SavedModel or TFLite signature (or tf.Module tf.function) "
        "to convert; default serving_default, or the only one."))
    output_names: tuple[str, ...] = field(default=(), metadata=_flag(
        "--output", parse=_names, metavar="TENSOR", repeatable=True, source_specific=True,
        help="Frozen GraphDef (.pb): an output tensor, e.g. logits or logits:0. Repeatable "
        "or comma-separated."))
    inputs_as_nchw: tuple[str, ...] = field(default=(), metadata=_flag(
        "--inputs-as-nchw", parse=_names, metavar="NAME", repeatable=True,
        source_specific=True,
        help="TensorFlow: make this NHWC input NCHW in the ONNX model (and in -i, --data "
        "and the check feeds). Repeatable or comma-separated."))
    trust_code: bool = field(default=False, metadata=_flag(
        "--trust-code", parse=_switch, is_switch=True, source_specific=True,
        help="Let a model file run code it holds: Python code in Keras .keras/.h5 (Lambda "
        "layers); pickled objects and code in PyTorch .pt2 and --weights .pt/.pth and in "
        "Paddle --weights .pdparams (refused without it, exit 2). Only for files you "
        "trust."))
    task: str | None = field(default=None, metadata=_flag(
        "--task", parse=_text, metavar="TASK", source_specific=True,
        help="A Hugging Face folder (or PreTrainedModel): what to export it as, in "
        "Optimum's task names: text-generation-with-past (a decoder with its KV cache), "
        "text-generation, feature-extraction, text-classification, token-classification, "
        "fill-mask, image-classification (default: from config.json's architectures)."))
    # -- what is built --------------------------------------------------------------------
    targets: tuple[TargetSpec, ...] = field(default=(), metadata=_flag(
        "-t", "--target", parse=_targets, metavar="TARGET", repeatable=True,
        commands=("convert", "inspect"),
        help="FAMILY[:TOOLCHAIN][@DEVICE], e.g. cpu, cpu:ort, npu:rknn@rk3588. Repeatable; "
        "convert always builds `onnx`, inspect without -t judges every target. "
        "`convertkit targets` lists them."))
    precision: Precision | None = field(default=None, metadata=_flag(
        "--precision", parse=parse_precision, commands=_CHECK_COMMANDS,
        choices=tuple(p.value for p in Precision),
        help="convert: the precision to build at (default: each target's best; with "
        "`-t cpu` it limits the candidates). check: the budget to judge by (default: the "
        "looser of the two models' precisions)."))
    optimize: bool = field(default=True, metadata=_flag(
        "--optimize/--no-optimize", parse=_switch, is_switch=True,
        commands=("convert",),
        help="Constant folding, dead-node removal and standard fusions on the ONNX model "
        "(checked like every artifact)."))
    mixed_precision: bool = field(default=True, metadata=_flag(
        "--mixed-precision/--no-mixed-precision", parse=_switch, is_switch=True,
        commands=("convert",),
        help="When an int8 build misses its budget, keep its most sensitive nodes in "
        "higher precision, as few as the budget allows (searched on the calibration "
        "samples, at most half the quantisable nodes), and check the result like any "
        "artifact (cpu:ort, cpu:openvino, gpu:tensorrt, npu:rknn, npu:qnn, npu:sophgo)."))
    # -- the check ------------------------------------------------------------------------
    data: Path | None = field(default=None, metadata=_flag(
        "--data", parse=_path, metavar="FILE.npz|DIR",
        help="Real samples: an .npz with one array per model input, named after it (an "
        "array with one more axis than the input stacks samples), or a folder of such "
        "files. Without --calib-data, the odd samples calibrate and the even ones are "
        "checked; they also give the input shapes of a model that records none."))
    calib_data: Path | None = field(default=None, metadata=_flag(
        "--calib-data", parse=_path, metavar="FILE.npz|DIR", commands=("convert",),
        help="Samples for int8 calibration and the fp16 search (as --data); --data is "
        "then checked whole. Never graded on: calibration and check samples stay apart."))
    labels: Path | None = field(default=None, metadata=_flag(
        "--labels", parse=_path, metavar="FILE.npy", commands=_CHECK_COMMANDS,
        help="One integer class per --data sample ([N], or [N, batch]): the report gives "
        "the source's and each artifact's top-1 accuracy, judged by max_accuracy_drop. A "
        "`labels` array inside the --data .npz does the same."))
    max_accuracy_drop: float | None = field(default=None, metadata=_flag(
        "--max-accuracy-drop", parse=_tolerance, commands=_CHECK_COMMANDS, metavar="POINTS",
        help="With labels: the most top-1 accuracy, in percentage points, an artifact may "
        "lose (default per precision: fp32 0, fp16/bf16 0.5, int8 1)."))
    atol: float | None = field(default=None, metadata=_flag(
        "--atol", parse=_tolerance, commands=_CHECK_COMMANDS, metavar="A",
        help="Absolute tolerance of the check."))
    rtol: float | None = field(default=None, metadata=_flag(
        "--rtol", parse=_tolerance, commands=_CHECK_COMMANDS, metavar="R",
        help="Relative tolerance of the check."))
    budget_file: Path | None = field(default=None, metadata=_flag(
        "--budget-file", parse=_path, commands=_CHECK_COMMANDS, metavar="FILE.toml",
        help="A TOML file of budgets per precision, e.g. [fp16] atol = 0.02 rtol = 0.02; "
        "--atol/--rtol override it."))
    decode_steps: int = field(default=16, metadata=_flag(
        "--decode-steps", parse=_whole, commands=("convert",), metavar="N",
        help="A decoder with a KV cache: how many new tokens the token-by-token check "
        "decodes greedily in each artifact, against transformers' own generate."))
    localize: bool = field(default=True, metadata=_flag(
        "--localize/--no-localize", parse=_switch, is_switch=True,
        commands=_CHECK_COMMANDS,
        help="Find the first diverging node of a failed ONNX or OpenVINO artifact, and "
        "write a repro."))
    report_formats: tuple[str, ...] = field(default=REPORT_FORMATS, metadata=_flag(
        "--report-format", parse=_report_formats, metavar="FORMATS",
        commands=_CHECK_COMMANDS,
        help="Reports to write into the output folder, comma-separated: json (always), "
        "html (report.html), junit (junit.xml). Default: all three."))

    # -- how long and how much ------------------------------------------------------------
    timeout: float = field(default=DEFAULT_TIMEOUT_S, metadata=_flag(
        "--timeout", parse=_limit, metavar="SECONDS", job_limit="timeout_s",
        help=f"Stop the run's work after this many seconds, exit 3 (default "
        f"{DEFAULT_TIMEOUT_S:g}; 0: no limit). Steps not finished by then are reported "
        "as timed out."))
    memory_mb: int = field(default=DEFAULT_MEMORY_MB, metadata=_flag(
        "--memory-mb", parse=_megabytes, metavar="MB", job_limit="memory_mb",
        help=f"The memory each of the run's child processes may allocate (default "
        f"{DEFAULT_MEMORY_MB}; 0: no limit); one that needs more fails with exit 3."))

    @classmethod
    def parse(cls, values: Mapping[str, Any], *, command: str = "convert") -> ConvertOptions:
        """The record from option values (CLI strings, manifest values or Python values,
        by field name). A value of None (or () for a list) leaves the default. Unknown
        names and options ``command`` does not take are usage errors."""
        parsed = {}
        for name, value in values.items():
            spec = option_field(name, command)
            if value is None or (spec.flag.repeatable and value == ()):
                continue
            try:
                parsed[name] = spec.parse(value)
            except UsageError as error:
                if command and error.code == "bad-option":  # say which option
                    error.message = f"{spec.flag.long_name} {error.message}"
                raise
        return cls(**parsed)

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form: every field, as the CLI would write it."""
        return {spec.name: _to_json(getattr(self, spec.name)) for spec in option_fields()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConvertOptions:
        return cls.parse({name: value for name, value in data.items()
                          if value is not None}, command="")

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults, in JSON form (report.json's
        ``options``: what the run was asked)."""
        default = ConvertOptions()
        return {spec.name: _to_json(getattr(self, spec.name)) for spec in option_fields()
                if getattr(self, spec.name) != getattr(default, spec.name)}


def options_from(options: ConvertOptions | None, values: Mapping[str, Any], *,
                 command: str) -> ConvertOptions:
    """A library call's options: the record it was given, or one built from its keyword
    arguments (not both)."""
    if options is None:
        return ConvertOptions.parse(values, command=command)
    if values:
        raise UsageError(f"pass either options or keyword options, not both (got "
                         f"{', '.join(values)})", hint="fold them into the ConvertOptions",
                         code="bad-option")
    return options


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, InputSpec | TargetSpec | Path):
        return str(value)
    if isinstance(value, Precision):
        return value.value
    return value


@dataclass(frozen=True)
class OptionField:
    """One field of ConvertOptions with its flag and parser."""

    name: str
    default: Any
    flag: Flag
    parse: Callable[[Any], Any]


def option_fields(command: str = "") -> list[OptionField]:
    """The fields of ConvertOptions in declaration order (those ``command`` takes)."""
    found = [OptionField(f.name, f.default, f.metadata["flag"], f.metadata["parse"])
             for f in fields(ConvertOptions)]
    return [spec for spec in found if not command or command in spec.flag.commands]


def option_field(name: str, command: str = "") -> OptionField:
    """The field ``name``; a UsageError for an unknown one or one ``command`` does not
    take (``command`` empty: any)."""
    every = {spec.name: spec for spec in option_fields()}
    if name not in every:
        raise UsageError(f"unknown option {name!r}",
                         hint=did_you_mean(name, every) + "known: " + ", ".join(every),
                         code="unknown-option")
    spec = every[name]
    if command and command not in spec.flag.commands:
        raise UsageError(f"{spec.flag.long_name} does not apply to `convertkit {command}`",
                         hint=f"it applies to: {', '.join(spec.flag.commands)}",
                         code="option-not-applicable")
    return spec


def source_specific_options() -> dict[str, str]:
    """Options only some adapters take, by field name, with their flag."""
    return {spec.name: spec.flag.long_name for spec in option_fields()
            if spec.flag.source_specific}


def markdown_table() -> str:
    """The README's table of options (tested against it: tests/unit/test_options.py)."""
    rows = ["| option | manifest key | convert | check | inspect | meaning |",
            "|---|---|---|---|---|---|"]
    for spec in option_fields():
        flag = ", ".join(f"`{name}`" for name in spec.flag.names)
        if spec.flag.metavar:
            flag += f" `{spec.flag.metavar}`"
        marks = " | ".join("yes" if c in spec.flag.commands else "" for c in COMMANDS)
        key = (f"`{spec.flag.job_limit}` (the job's limit)" if spec.flag.job_limit else
               f"`{spec.name}`")
        cells = (flag, key, marks, spec.flag.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") if cell is not marks else cell
                                      for cell in cells) + " |")
    return "\n".join(rows)
