"""Hugging Face transformers models (a ``save_pretrained`` folder, or a ``PreTrainedModel``
a FILE.py:NAME factory returns) lowered to ONNX. Runs in the adapter's child process.

A decoder (task ``text-generation-with-past``) is exported as one model with its KV cache
as inputs and outputs, named the way onnxruntime-genai and Optimum name them:

    inputs   input_ids [batch, sequence], attention_mask [batch, total_sequence],
             position_ids [batch, sequence] (where the model takes them),
             past_key_values.N.key / .value [batch, kv_heads, past_sequence, head_dim]
    outputs  logits [batch, sequence, vocab], present.N.key / .value
             [batch, kv_heads, total_sequence, head_dim]

The first step is fed an empty past (past_sequence 0). The check's samples are real
decoding steps: each prompt's first step (empty past) and the step after it (the
prompt's own cache, the token it chose). Besides, the source's greedy decode of the
first prompt (transformers' own ``generate``) is recorded for the token-by-token check
(checker/decode.py).

Other tasks export the model's forward with its standard inputs (input_ids and
attention_mask for text, pixel_values for images) through the PyTorch adapter's usual
exporters.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.adapters import Lowered, LowerRequest, save_check_data
from convertkit.adapters.hf_folder import (
    Task,
    check_folder,
    offline_environment,
    read_config,
    resolve_task,
)
from convertkit.checker.decode import DECODE_FILE, DecodeReference
from convertkit.checker.samples import plan_samples
from convertkit.errors import ConversionError, UsageError, first_line
from convertkit.spec import InputSpec

PROMPT_TOKENS = 8  # a generated prompt's length
DECODER_OPSET = 17
# The cache the model is traced with: any length but 0 (the exported graph takes 0 too).
TRACE_PAST = 3


@dataclass(frozen=True)
class CacheLayout:
    """The shape of a decoder's KV cache, as the model itself returns it."""

    layers: int
    kv_heads: int
    head_dim: int
    takes_position_ids: bool

    @property
    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.layers)
                for kind in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    @property
    def input_names(self) -> list[str]:
        return (["input_ids", "attention_mask"]
                + (["position_ids"] if self.takes_position_ids else []) + self.past_names)

    def empty_past(self, batch: int = 1) -> dict[str, np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {name: np.zeros(shape, np.float32) for name in self.past_names}


def load_folder(folder: Path, task_name: str | None, trust_code: bool,
                ) -> tuple[Any, Task, list[str]]:
    """The model a save_pretrained folder holds, its task, and notes."""
    config = read_config(folder)
    task = resolve_task(config, task_name)
    notes = check_folder(folder, config, trust_code)
    offline_environment()
    import transformers

    auto = getattr(transformers, task.auto_class)
    try:
        model = auto.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_code,
            attn_implementation="eager", dtype="float32")
    except MemoryError:
        raise
    except Exception as error:  # a config or weights file transformers cannot read
        raise UsageError(
            f"transformers cannot load {folder.name} as {task.name} ({task.auto_class}): "
            f"{type(error).__name__}: {first_line(error)}",
            hint="pass the folder save_pretrained wrote, with --task naming what it is",
            code="bad-hf-folder") from error
    model.eval()
    notes.append(f"Hugging Face folder: {type(model).__name__} ({config['model_type']}), "
                 f"task {task.name}, loaded offline with transformers "
                 f"{transformers.__version__}")
    return model, task, notes


def is_pretrained_model(module: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return isinstance(module, PreTrainedModel)


def task_of_model(model: Any, task_name: str | None) -> Task:
    """The task of a PreTrainedModel a factory returned: --task, else its class name."""
    config = {"model_type": model.config.model_type,
              "architectures": [type(model).__name__]}
    return resolve_task(config, task_name)


# --- decoders with a KV cache ------------------------------------------------------------

def lower_decoder(model: Any, request: LowerRequest, notes: list[str]) -> Lowered:
    """Export ``model`` (a causal LM) with its KV cache, and write the check's samples, the
    source's outputs for them, and its greedy decode."""
    import torch

    if request.options.inputs:
        raise UsageError("-i does not apply to a decoder with a KV cache: its inputs are "
                         "input_ids, attention_mask, position_ids and the cache",
                         hint="drop -i; give prompts as --data (an input_ids array)",
                         code="option-not-applicable")
    torch.manual_seed(0)
    layout = _cache_layout(model, torch)
    step = _DecoderStep(model, layout)
    _export_decoder(step, layout, request, torch)

    spec = InputSpec("input_ids", (PROMPT_TOKENS,) if request.options.data is None
                     else ("sequence",), "int64")
    from convertkit.ir.io import load_model

    plan = plan_samples([spec], load_model(request.export_path, load_external_data=False),
                        data=request.options.data, calib_data=request.options.calib_data,
                        labels=None, seed=request.seed, calibrate=request.calibrate)
    vocabulary = vocabulary_size(model)
    prompts = [prompt_ids(sample["input_ids"], vocabulary)
               for sample in plan.evaluation.samples]
    evaluation, references = [], []
    for prompt in prompts:
        for feeds in _decoding_steps(step, layout, prompt, torch):
            evaluation.append(feeds)
            references.append(_run_step(step, layout, feeds, torch))
    calibration = [feeds for sample in plan.calibration.samples
                   for feeds in _decoding_steps(step, layout,
                                                prompt_ids(sample["input_ids"], vocabulary),
                                                torch)]
    plan = replace(plan, evaluation=replace(plan.evaluation, samples=tuple(evaluation)),
                   calibration=replace(plan.calibration, samples=tuple(calibration)))
    check = save_check_data(request, plan, references)
    reference = _greedy_decode(model, prompts[0], request.options.decode_steps, torch)
    reference.save(request.work_dir / DECODE_FILE)
    notes.append(f"decoder exported with its KV cache ({layout.layers} layers, "
                 f"{layout.kv_heads} KV heads of {layout.head_dim}); check samples: each "
                 "prompt's first step (empty cache) and the step after it")
    specs = (InputSpec("input_ids", ("batch", "sequence"), "int64"),
             InputSpec("attention_mask", ("batch", "total_sequence"), "int64"),
             *((InputSpec("position_ids", ("batch", "sequence"), "int64"),)
               if layout.takes_position_ids else ()),
             *(InputSpec(name, ("batch", layout.kv_heads, "past_sequence", layout.head_dim))
               for name in layout.past_names))
    return Lowered(
        framework="pytorch", onnx_path=request.export_path,
        check=replace(check, decode_path=request.work_dir / DECODE_FILE),
        exporter="torch.onnx (torchscript), decoder with KV cache",
        inputs=specs, output_names=("logits", *layout.present_names), notes=tuple(notes))


class _DecoderStep:
    """One decoding step of ``model`` on flat tensors: what is exported."""

    def __init__(self, model: Any, layout: CacheLayout) -> None:
        import torch

        keyword = cache_keyword(model)

        class Step(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, *rest):
                from transformers import DynamicCache

                position_ids = rest[0] if layout.takes_position_ids else None
                past = rest[1:] if layout.takes_position_ids else rest
                cache = DynamicCache([(past[2 * i], past[2 * i + 1])
                                      for i in range(layout.layers)],
                                     config=self.model.config)
                extra = {"position_ids": position_ids} if layout.takes_position_ids else {}
                extra[keyword] = cache
                out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                 use_cache=True, **extra)
                present = []
                for layer in returned_cache(out).layers:
                    present += [layer.keys, layer.values]
                return (out.logits, *present)

        self.module = Step().eval()


def cache_keyword(module: Any) -> str:
    """transformers 5 renames a forward's past_key_values to cache (the old name is
    deprecated): the one ``module``'s forward declares."""
    parameters = inspect.signature(module.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The cache a forward returned (``cache``, formerly ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _cache_layout(model: Any, torch) -> CacheLayout:
    from transformers import DynamicCache

    with torch.no_grad():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.int64), use_cache=True)
    cache = returned_cache(out)
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers or any(
            getattr(layer, "keys", None) is None or layer.keys.dim() != 4
            for layer in layers):
        raise ConversionError(
            f"{type(model).__name__} keeps a {type(cache).__name__} cache, not a "
            "DynamicCache of per-layer key and value tensors",
            hint="export it without the cache: --task text-generation",
            code="unsupported-cache")
    keys = layers[0].keys
    takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
    return CacheLayout(len(layers), int(keys.shape[1]), int(keys.shape[3]), takes_position_ids)


def _export_decoder(step: _DecoderStep, layout: CacheLayout, request: LowerRequest,
                    torch) -> None:
    batch, sequence = 1, 2
    feeds = {"input_ids": torch.zeros((batch, sequence), dtype=torch.int64),
             "attention_mask": torch.ones((batch, TRACE_PAST + sequence), dtype=torch.int64)}
    if layout.takes_position_ids:
        feeds["position_ids"] = torch.arange(TRACE_PAST, TRACE_PAST + sequence)[None]
    for name in layout.past_names:
        feeds[name] = torch.randn(batch, layout.kv_heads, TRACE_PAST, layout.head_dim)
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"}}
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in layout.past_names})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in layout.present_names})
    try:
        with torch.no_grad():
            torch.onnx.export(step.module, tuple(feeds.values()), str(request.export_path),
                              input_names=list(feeds), dynamic_axes=axes,
                              output_names=["logits", *layout.present_names],
                              opset_version=request.options.opset or DECODER_OPSET,
                              dynamo=False)
    except Exception as error:
        request.export_path.unlink(missing_ok=True)
        raise ConversionError(
            f"PyTorch could not export the decoder with its cache: "
            f"{type(error).__name__}: {first_line(error)}",
            hint="the exporter's full output is in logs/export.log",
            code="export-failed") from error


def prompt_ids(ids: np.ndarray, vocabulary: int) -> np.ndarray:
    """One prompt of --data (or generated) as the model's input_ids [1, TOKENS]."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise UsageError(f"a prompt must be a non-empty 1-D array of token ids, not "
                         f"{ids.dtype} {list(ids.shape)}",
                         hint="--data: an input_ids array [N, TOKENS] holds N prompts",
                         code="bad-data")
    outside = ids[(ids < 0) | (ids >= vocabulary)]
    if outside.size:
        raise UsageError(f"token id {int(outside[0])} in a prompt is outside the model's "
                         f"vocabulary (0 to {vocabulary - 1})",
                         hint="--data: give token ids from this model's tokenizer",
                         code="bad-data")
    return ids.astype(np.int64)[None]


def vocabulary_size(model: Any) -> int:
    """How many token ids the model's input embedding takes."""
    return int(model.get_input_embeddings().num_embeddings)


def _decoding_steps(step: _DecoderStep, layout: CacheLayout, prompt: np.ndarray,
                    torch) -> list[dict[str, np.ndarray]]:
    """The prompt's first step (empty cache), and the step after it: the token the
    first step chose, with the cache it returned."""
    length = prompt.shape[1]
    first = {"input_ids": prompt, "attention_mask": np.ones_like(prompt)}
    if layout.takes_position_ids:
        first["position_ids"] = np.arange(length, dtype=np.int64)[None]
    first.update(layout.empty_past())
    outputs = _run_step(step, layout, first, torch)
    token = np.array([[int(outputs["logits"][0, -1].argmax())]], np.int64)
    second = {"input_ids": token, "attention_mask": np.ones((1, length + 1), np.int64)}
    if layout.takes_position_ids:
        second["position_ids"] = np.array([[length]], np.int64)
    second.update({past: outputs[present] for past, present in
                   zip(layout.past_names, layout.present_names, strict=True)})
    return [first, second]


def _run_step(step: _DecoderStep, layout: CacheLayout, feeds: dict[str, np.ndarray],
              torch) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outputs = step.module(*(torch.from_numpy(feeds[name]) for name in layout.input_names))
    return {name: value.numpy() for name, value in
            zip(["logits", *layout.present_names], outputs, strict=True)}


def _greedy_decode(model: Any, prompt: np.ndarray, steps: int, torch) -> DecodeReference:
    """transformers' own greedy ``generate``: ``steps`` new tokens, no stopping, no logits
    processors (so each token is the argmax of the raw logits it records)."""
    ids = torch.from_numpy(prompt)
    with neutral_generation(model, steps=steps, pad_token_id=0) as config, torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             generation_config=config)
    tokens = out.sequences[0, prompt.shape[1]:].numpy().astype(np.int64)
    logits = torch.stack([step[0] for step in out.logits]).float().numpy()
    check_greedy(tokens, logits, steps)
    return DecodeReference(prompt, tokens, logits,
                           f"transformers {_version()} generate (greedy)")


# Every setting of generate that could make a token other than the argmax of the raw logits.
NEUTRAL_GENERATION = {
    "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "length_penalty": 1.0, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "forced_decoder_ids": None, "bad_words_ids": None, "eos_token_id": None}


@contextlib.contextmanager
def neutral_generation(model: Any, **settings: Any) -> Iterator[Any]:
    """The GenerationConfig of a plain greedy decode of exactly ``max_new_tokens``, lent to
    ``model`` meanwhile: generate fills the settings a passed config leaves None (the end
    token, suppressed and forced tokens) from the model's own generation config."""
    from transformers import GenerationConfig

    steps = settings.pop("steps", None)
    neutral = {**NEUTRAL_GENERATION, **settings}
    if steps is not None:
        neutral.update(max_new_tokens=steps, min_new_tokens=steps)
    saved = model.generation_config
    model.generation_config = GenerationConfig(**neutral)
    try:
        yield GenerationConfig(**neutral, output_logits=True, return_dict_in_generate=True)
    finally:
        model.generation_config = saved


def check_greedy(tokens: np.ndarray, logits: np.ndarray, steps: int) -> None:
    """Refuse a reference that is not a plain greedy decode of ``steps`` tokens."""
    if logits.shape[0] != steps or len(tokens) != steps:
        raise ConversionError(f"generate returned {len(tokens)} tokens and {logits.shape[0]} "
                              f"steps of logits, not {steps}", code="bad-reference")
    if not np.array_equal(tokens, logits.argmax(axis=-1)):
        raise ConversionError("generate's tokens are not the argmax of its raw logits: a "
                              "logits processor changed the greedy pick",
                              hint="report the model", code="bad-reference")


def _version() -> str:
    import transformers

    return transformers.__version__


# --- encoders and other single-pass tasks -----------------------------------------------

TEXT_TOKENS = 16  # the sequence length a text model is exported at (-i overrides it)


def task_module(model: Any, task: Task) -> tuple[Any, list[str], list[InputSpec]]:
    """A module whose forward takes the task's standard inputs and returns plain tensors
    (no cache), its parameter names, and the inputs it is exported with by default."""
    import torch

    config = model.config
    if task.name == "image-classification":
        channels = int(getattr(config, "num_channels", 3))
        size = getattr(config, "image_size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
        parameters = ["pixel_values"]
        specs = [InputSpec("pixel_values", ("batch", channels, int(height), int(width)))]
    else:
        parameters = ["input_ids", "attention_mask"]
        specs = [InputSpec(name, (1, TEXT_TOKENS), "int64") for name in parameters]
    takes_cache = "use_cache" in inspect.signature(model.forward).parameters

    def main_output(**inputs: Any) -> Any:
        out = model(**inputs, return_dict=True,
                    **({"use_cache": False} if takes_cache else {}))
        # Named as Optimum names them: logits, else last_hidden_state.
        if getattr(out, "logits", None) is not None:
            return {"logits": out.logits}
        return {"last_hidden_state": out.last_hidden_state}

    class TextModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return main_output(input_ids=input_ids, attention_mask=attention_mask)

    class ImageModule(TextModule):
        def forward(self, pixel_values):  # type: ignore[override]
            return main_output(pixel_values=pixel_values)

    module = ImageModule() if parameters == ["pixel_values"] else TextModule()
    return module.eval(), parameters, specs
