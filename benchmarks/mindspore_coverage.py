r"""How many mindcv classification models convertkit converts and checks, next to what
MindSpore's own ONNX exporter manages alone.

A hand-run benchmark, not a test. From the repository root (mindcv installed with
`pip install --no-deps mindcv==0.3.0`):

    .venv/bin/python benchmarks/mindspore_coverage.py                 # one model per family
    .venv/bin/python benchmarks/mindspore_coverage.py --all           # every registered model
    .venv/bin/python benchmarks/mindspore_coverage.py --models resnet18,vit_b_32_224 \
        --jobs 2 --timeout 300 --json coverage.json

Each model runs through the real CLI in its own process (`python -m convertkit convert
benchmarks/mindspore_coverage.py:seeded_NAME -f mindspore -i x:1x3xSxS -o TMP`: mindcv's
factory for NAME, called after `mindspore.set_seed(0)` so that its random weights, and
with them the numbers, are the same from run to run), with a time limit per model. S is
64 where the model accepts it, else the model's own input size (tried when the CLI exits
2 because the model rejects the smaller input). The default list takes the smallest
variant of each mindcv architecture family (models share their family's code, so one
variant stands for the others); nn layers (LSTM, GRU, TransformerEncoderLayer) come from
this file itself, as small Cells.

Models MindSpore itself cannot build or run on CPU at their own input size (the CLI
exits 2: the factory raises, or the reference run fails; or the model's code fails in
MindSpore, e.g. calling an op this MindSpore lacks) are listed as `no-run` and left
out of the share. Columns: `native` is what mindspore.onnx.export does on its own (ok,
fails on a primitive, or writes a model the ONNX checker rejects), read from the report's
notes; `convertkit` is the report's status; max abs / max rel are the worst over the ONNX
artifact's outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL_SIZE = 64
NOT_RUNNABLE = "no-run"  # MindSpore cannot build or run the model on CPU (CLI exit 2)
# The smallest registered variant of each mindcv 0.3.0 family (module), by parameters.
FAMILIES = {
    "bit": "BiT_resnet50", "cait": "cait_xxs24_224", "cmt": "cmt_tiny",
    "coat": "coat_lite_tiny", "convit": "convit_tiny", "convnext": "convnext_tiny",
    "convnextv2": "convnextv2_atto", "crossvit": "crossvit_9", "densenet": "densenet121",
    "dpn": "dpn92", "edgenext": "edgenext_xx_small", "efficientnet": "efficientnet_b0",
    "ghostnet": "ghostnet_050", "googlenet": "googlenet", "halonet": "halonet_50t",
    "hrnet": "hrnet_w32", "inceptionv3": "inception_v3", "inceptionv4": "inception_v4",
    "mae": "mae_b_16_224_finetune", "mixnet": "mixnet_s", "mlpmixer": "mlp_mixer_s_p32",
    "mnasnet": "mnasnet_050", "mobilenetv1": "mobilenet_v1_025",
    "mobilenetv2": "mobilenet_v2_035_96", "mobilenetv3": "mobilenet_v3_small_075",
    "mobilevit": "mobilevit_xx_small", "nasnet": "nasnet_a_4x1056", "pit": "pit_ti",
    "pnasnet": "pnasnet", "poolformer": "poolformer_s12", "pvt": "pvt_tiny",
    "pvtv2": "pvt_v2_b0", "regnet": "regnet_x_200mf", "repmlp": "repmlp_t224",
    "repvgg": "repvgg_a0", "res2net": "res2net50", "resnest": "resnest14",
    "resnet": "resnet18", "resnetv2": "resnetv2_50", "rexnet": "rexnet_09",
    "senet": "seresnet18", "shufflenetv1": "shufflenet_v1_g3_05",
    "shufflenetv2": "shufflenet_v2_x0_5", "sknet": "skresnet18",
    "squeezenet": "squeezenet1_0", "swintransformer": "swin_tiny",
    "swintransformerv2": "swinv2_tiny_window8", "vgg": "vgg11", "visformer": "visformer_tiny",
    "vit": "vit_b_32_224", "volo": "volo_d1", "xception": "xception",
    "xcit": "xcit_tiny_12_p16_224",
}
# Families whose smallest variant differs in kind from the rest: one more each.
EXTRA = ("resnet50", "regnet_y_200mf", "mobilenet_v3_large_075", "efficientnet_v2_s",
         "resnext50_32x4d", "seresnext26_32x4d", "skresnext50_32x4d", "coat_tiny")
# nn layers: Cells defined below, as SOURCE benchmarks/mindspore_coverage.py:NAME.
LAYERS = {"layer_lstm": "x:2x6x16", "layer_gru": "x:2x6x16",
          "layer_transformer_encoder": "x:2x6x32"}
# SOURCE benchmarks/mindspore_coverage.py:seeded_NAME builds mindcv's NAME, seeded.
SEEDED = "seeded_"


@dataclass
class Row:
    model: str
    size: str
    native: str
    convertkit: str
    max_abs: float | None
    max_rel: float | None
    seconds: float
    detail: str = ""


def mindcv_models(run_all: bool) -> list[str]:
    from mindcv.models import registry

    names = registry.list_models()
    if run_all:
        return names
    modules = registry._module_to_models
    chosen = []
    for module in sorted(modules):
        family = module.rsplit(".", 1)[-1]
        models = sorted(modules[module])
        chosen.append(FAMILIES.get(family) if FAMILIES.get(family) in models else models[0])
    return chosen + [m for m in EXTRA if m in names and m not in chosen]


def default_size(name: str) -> int:
    """The model's own input size: its pretrained config's, else the image size its
    factory passes to the architecture, else 224."""
    import inspect

    from mindcv.models import registry

    size = registry.get_pretrained_cfg_value(name, "input_size")
    if size:
        return int(size[-1])
    factory = registry.model_entrypoint(name)
    try:
        source = inspect.getsource(factory)
    except (OSError, TypeError):
        return 224
    found = re.search(r"\b(?:image_size|img_size)\s*=\s*(\d+)", source)
    if found:
        return int(found.group(1))
    built = re.search(r"model\s*=\s*(\w+)\(", source)
    architecture = getattr(sys.modules[factory.__module__], built.group(1), None) \
        if built else None
    try:
        parameters = inspect.signature(architecture).parameters if architecture else {}
    except (TypeError, ValueError):
        parameters = {}
    for key in ("image_size", "img_size"):
        if key in parameters and isinstance(parameters[key].default, int):
            return parameters[key].default
    return 224


def convert(source: str, inputs: list[str], timeout_s: float,
            framework: str = "mindspore") -> tuple[int | None, dict | None, str]:
    out = Path(tempfile.mkdtemp(prefix="ms-coverage-"))
    command = [sys.executable, "-m", "convertkit", "convert", source, "-f", framework,
               "-o", str(out / "out")]
    for spec in inputs:
        command += ["-i", spec]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        shutil.rmtree(out, ignore_errors=True)
        return None, None, f"timed out after {timeout_s:.0f} s"
    report_path = out / "out" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    shutil.rmtree(out, ignore_errors=True)
    return done.returncode, report, errors[0][7:] if errors else ""


def native_result(report: dict | None, error: str) -> str:
    notes = (report or {}).get("source", {}).get("notes", [])
    for note in notes:
        if note.startswith("native mindspore.onnx.export:"):
            text = note.split(":", 1)[1].strip()
            if text == "ok":
                return "ok"
            primitive = re.search(r"Exporting (\w+) operator|the (\w+) operator in your "
                                  r"model is not support", text)
            if primitive:
                return f"fails: {primitive.group(1) or primitive.group(2)}"
            if text.startswith("wrote an invalid model"):
                return "invalid ONNX"
            return "fails"
    message = error or ((report or {}).get("error") or {}).get("message", "")
    first = re.search(r"after rewriting (\w+)", message) or re.search(
        r"does not support primitive (\w+)", message)
    if first:
        return f"fails: {first.group(1)}"
    return "?"


def run_one(name: str, inputs: list[str] | None, timeout_s: float) -> Row:
    start = time.monotonic()
    is_layer = name in LAYERS
    source = f"benchmarks/mindspore_coverage.py:{name if is_layer else SEEDED + name}"
    sizes = [None] if is_layer else [SMALL_SIZE, default_size(name)]
    tried = []
    for size in dict.fromkeys(sizes):
        specs = [LAYERS[name]] if is_layer else inputs or [f"x:1x3x{size}x{size}"]
        code, report, error = convert(source, specs, timeout_s)
        tried.append(specs[0].split(":", 1)[1])
        if code != 2:  # 2: the model rejected this input size (or another usage error)
            break
    row = Row(name, tried[-1], native_result(report, error), "", None, None,
              time.monotonic() - start)
    if code is None:
        row.convertkit, row.detail = "timeout", error
        return row
    status = (report or {}).get("status", "error")
    error_code = ((report or {}).get("error") or {}).get("code")
    if code == 2 or error_code == "model-code-failed":
        # At its own input size, MindSpore itself cannot build or run the model on CPU
        # (the factory raises, the reference run fails, its code calls what this
        # MindSpore lacks): nothing to convert.
        status = NOT_RUNNABLE
    row.convertkit = status
    artifacts = (report or {}).get("artifacts", [])
    metrics = next((a["metrics"] for a in artifacts if a["target"] == "onnx"), {}) or {}
    abs_values = [m["max_abs"] for m in metrics.values() if m.get("max_abs") is not None]
    rel_values = [m["max_rel"] for m in metrics.values() if m.get("max_rel") is not None]
    row.max_abs = max(abs_values) if abs_values else None
    row.max_rel = max(rel_values) if rel_values else None
    if status != "pass":
        row.detail = error or ((report or {}).get("error") or {}).get("message", "") or \
            f"exit {code}"
    return row


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def print_table(rows: list[Row]) -> None:
    header = ("model", "input", "native export", "convertkit", "max abs", "max rel", "s")
    lines = [(r.model, r.size, r.native, r.convertkit, _number(r.max_abs), _number(r.max_rel),
              f"{r.seconds:.0f}") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    for line in (header, tuple("-" * w for w in widths), *lines):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    failed = [r for r in rows if r.convertkit != "pass"]
    for row in failed:
        print(f"  {row.model}: {row.convertkit}: {row.detail}")


def summary(rows: list[Row]) -> str:
    tried = [r for r in rows if r.model not in LAYERS]
    models = [r for r in tried if r.convertkit != NOT_RUNNABLE]
    layers = [r for r in rows if r.model in LAYERS]
    passed = sum(r.convertkit == "pass" for r in models)
    native = sum(r.native == "ok" for r in models)
    layer_pass = sum(r.convertkit == "pass" for r in layers)
    share = 100 * passed / len(models) if models else 0.0
    skipped = [r.model for r in tried if r.convertkit == NOT_RUNNABLE]
    return (f"mindcv: {passed}/{len(models)} models that MindSpore builds and runs on CPU "
            f"pass with convertkit ({share:.0f}%), {native}/{len(models)} export validly "
            f"with mindspore.onnx.export alone"
            + (f"; {len(skipped)} do not build or run on CPU ({', '.join(skipped)})"
               if skipped else "")
            + f"; nn layers: {layer_pass}/{len(layers)} pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every registered mindcv model")
    parser.add_argument("--models", help="comma-separated model names (mindcv or layer_*)")
    parser.add_argument("-i", "--input", action="append", help="input spec for --models")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model")
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = parser.parse_args()
    names = (args.models.split(",") if args.models
             else [*mindcv_models(args.all), *LAYERS])
    started = time.monotonic()

    def one(name: str) -> Row:
        row = run_one(name, args.input, args.timeout)
        print(f"[{time.monotonic() - started:5.0f} s] {row.model}: {row.native} / "
              f"{row.convertkit} {row.detail}".rstrip(), file=sys.stderr, flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, names))
    print_table(rows)
    print(summary(rows) + f" ({time.monotonic() - started:.0f} s, {args.jobs} jobs)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


# --- nn layers, as Cells for the CLI (imported only when the CLI names them) ------------

def _layer_cells():
    import mindspore as ms
    from mindspore import nn

    class Lstm(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(16, 24, num_layers=2, batch_first=True, bidirectional=True)

        def construct(self, x: ms.Tensor) -> ms.Tensor:
            y, _ = self.rnn(x)
            return y[:, -1, :]

    class Gru(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(16, 24, num_layers=1, batch_first=True)

        def construct(self, x: ms.Tensor) -> ms.Tensor:
            y, _ = self.rnn(x)
            return y

    class Encoder(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0,
                                                    batch_first=True)

        def construct(self, x: ms.Tensor) -> ms.Tensor:
            return self.layer(x)

    return Lstm, Gru, Encoder


def seeded_mindcv_model(name: str):
    """mindcv's model NAME, as `mindcv.models:NAME` builds it (pretrained=False), with
    MindSpore's and NumPy's random generators seeded first: unseeded, the random weights
    differ between runs, and so do the numbers (skresnext50_32x4d passed in one run and
    failed in another)."""
    import mindspore as ms
    import numpy as np
    from mindcv.models import registry

    ms.set_seed(0)
    np.random.seed(0)
    return registry.model_entrypoint(name)()


def __getattr__(attribute: str):
    # seeded_NAME, for the CLI's SOURCE: a factory building mindcv's NAME, seeded.
    if attribute.startswith(SEEDED):
        import functools

        return functools.partial(seeded_mindcv_model, attribute[len(SEEDED):])
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


def layer_lstm():
    return _layer_cells()[0]()


def layer_gru():
    return _layer_cells()[1]()


def layer_transformer_encoder():
    return _layer_cells()[2]()


if __name__ == "__main__":
    main()
