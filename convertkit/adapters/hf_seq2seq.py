"""Encoder-decoder transformers models (T5, BART, Whisper...) lowered to ONNX as two models,
the way Optimum and onnxruntime-genai split them, and checked token by token.

``encoder.onnx`` runs once per input:

    inputs   input_ids [batch, encoder_sequence], attention_mask [batch, encoder_sequence]
             (text models), or input_features [batch, mel_bins, frames] (speech)
    outputs  encoder_hidden_states [batch, encoder_sequence, d_model],
             present.N.encoder.key / .value [batch, heads, encoder_sequence, head_dim]:
             the cross-attention cache of every decoder layer

``decoder.onnx`` runs once per generated token, with its own self-attention cache:

    inputs   input_ids [batch, sequence] (decoder tokens),
             encoder_attention_mask [batch, encoder_sequence] (text models),
             past_key_values.N.decoder.key / .value [batch, heads, past_sequence, head_dim]
             (empty on the first step), past_key_values.N.encoder.key / .value
             [batch, heads, encoder_sequence, head_dim] (the encoder's present.N.encoder.*)
    outputs  logits [batch, sequence, vocab],
             present.N.decoder.key / .value [batch, heads, total_sequence, head_dim]
             (total_sequence = past_sequence + sequence)

The decoder never sees the encoder's hidden states: its cross-attention reads keys and
values from the cache alone (transformers' EncoderDecoderCache marked as filled), and the
positions (T5's relative bias, BART's and Whisper's position embeddings) follow from the
self-attention cache's length, so no cache position input is needed.

The encoder computes the cross-attention cache with the decoder's own cross-attention
modules (found by hooks on a first step: the innermost modules called with
key_value_states, one per layer), each called on the encoder's hidden states with an
empty EncoderDecoderCache that it fills as it does in ``generate``; the query they are
given is a dummy whose result is not in the graph, so the encoder holds the encoder and
the cross-attention key and value projections, nothing else of the decoder. Where the
modules cannot be found, or what they give is not the model's own cache, the whole
decoder is run once on the start token instead (correct, but shapes can tie more of the
decoder to the graph: Whisper's attention reshapes by the query's batch).

Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.adapters.hf_export import cache_keyword, returned_cache
from convertkit.errors import ConversionError

SEQ2SEQ_OPSET = 17
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
# What the models are traced with: any lengths but 0 (the graphs take 0 past too).
TRACE_ENCODER_TOKENS = 5
TRACE_PAST = 3

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Seq2SeqLayout:
    """What the two exported models take and return."""

    layers: int  # decoder layers
    heads: int  # self-attention cache heads
    head_dim: int
    encoder_heads: int  # cross-attention cache heads
    encoder_head_dim: int
    vocab: int
    decoder_start_token_id: int
    encoder_input: str  # "text" (input_ids, attention_mask) or "features" (input_features)
    features_shape: tuple[int, int] | None = None  # (mel_bins, frames) of "features"
    encoder_path: Path | None = None
    decoder_path: Path | None = None

    @property
    def is_text(self) -> bool:
        return self.encoder_input == "text"

    @property
    def encoder_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] if self.is_text else ["input_features"]

    @property
    def cross_names(self) -> list[str]:
        """The encoder's outputs that are the cross-attention cache."""
        return [f"present.{i}.encoder.{kind}" for i in range(self.layers)
                for kind in ("key", "value")]

    @property
    def encoder_output_names(self) -> list[str]:
        return ["encoder_hidden_states", *self.cross_names]

    @property
    def past_names(self) -> list[str]:
        """The decoder's cache inputs, per layer: decoder key, value, encoder key, value."""
        return [f"past_key_values.{i}.{part}.{kind}" for i in range(self.layers)
                for part in ("decoder", "encoder") for kind in ("key", "value")]

    @property
    def self_past_names(self) -> list[str]:
        return [name for name in self.past_names if ".decoder." in name]

    @property
    def cross_past_names(self) -> list[str]:
        return [name for name in self.past_names if ".encoder." in name]

    @property
    def present_names(self) -> list[str]:
        """The decoder's cache outputs: its self-attention cache."""
        return [f"present.{i}.decoder.{kind}" for i in range(self.layers)
                for kind in ("key", "value")]

    @property
    def decoder_input_names(self) -> list[str]:
        return (["input_ids"] + (["encoder_attention_mask"] if self.is_text else [])
                + self.past_names)

    @property
    def decoder_output_names(self) -> list[str]:
        return ["logits", *self.present_names]

    def empty_self_past(self, batch: int = 1) -> dict[str, np.ndarray]:
        shape = (batch, self.heads, 0, self.head_dim)
        return {name: np.zeros(shape, np.float32) for name in self.self_past_names}

    def start_tokens(self, batch: int = 1) -> np.ndarray:
        return np.full((batch, 1), self.decoder_start_token_id, np.int64)

    @staticmethod
    def past_for(present: str) -> str:
        """present.N.decoder.key (or the encoder's present.N.encoder.key) -> the decoder
        input it feeds."""
        return "past_key_values." + present.removeprefix("present.")


# --- export ---------------------------------------------------------------------------

def export_seq2seq(model: Any, folder: Path, opset: int = SEQ2SEQ_OPSET) -> Seq2SeqLayout:
    """Write ``folder/encoder.onnx`` and ``folder/decoder.onnx`` for ``model`` (a
    transformers encoder-decoder: ...ForConditionalGeneration), and say what they take."""
    import torch

    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    layout = replace(_layout(model, torch), encoder_path=folder / ENCODER_FILE,
                     decoder_path=folder / DECODER_FILE)
    encoder_feeds = _trace_encoder_inputs(layout, torch)
    encoder, decoder = torch_steps(model, layout)
    with torch.no_grad():
        encoded = encoder(*encoder_feeds.values())
    batch = 1
    generator = torch.Generator().manual_seed(0)
    decoder_feeds: dict[str, Any] = {"input_ids": torch.zeros((batch, 2), dtype=torch.int64)}
    if layout.is_text:
        decoder_feeds["encoder_attention_mask"] = encoder_feeds["attention_mask"]
    cross = dict(zip(layout.cross_names, encoded[1:], strict=True))
    for name in layout.past_names:
        if ".decoder." in name:
            decoder_feeds[name] = torch.randn(batch, layout.heads, TRACE_PAST, layout.head_dim,
                                              generator=generator)
        else:
            decoder_feeds[name] = cross[name.replace("past_key_values.", "present.")]

    encoder_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "encoder_sequence"},
        "attention_mask": {0: "batch", 1: "encoder_sequence"},
        "input_features": {0: "batch"},
        "encoder_hidden_states": {0: "batch", 1: "encoder_sequence"}}
    encoder_axes.update({name: {0: "batch", 2: "encoder_sequence"}
                         for name in layout.cross_names})
    decoder_axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "encoder_attention_mask": {0: "batch", 1: "encoder_sequence"},
        "logits": {0: "batch", 1: "sequence"}}
    decoder_axes.update({name: {0: "batch", 2: "past_sequence"}
                         for name in layout.self_past_names})
    decoder_axes.update({name: {0: "batch", 2: "encoder_sequence"}
                         for name in layout.cross_past_names})
    decoder_axes.update({name: {0: "batch", 2: "total_sequence"}
                         for name in layout.present_names})
    for module, feeds, outputs, axes, path in (
            (encoder, encoder_feeds, layout.encoder_output_names, encoder_axes,
             layout.encoder_path),
            (decoder, decoder_feeds, layout.decoder_output_names, decoder_axes,
             layout.decoder_path)):
        assert path is not None
        try:
            with torch.no_grad():
                torch.onnx.export(module, tuple(feeds.values()), str(path),
                                  input_names=list(feeds), output_names=outputs,
                                  dynamic_axes={name: axis for name, axis in axes.items()
                                                if name in feeds or name in outputs},
                                  opset_version=opset, dynamo=False)
        except Exception:
            path.unlink(missing_ok=True)
            raise
        _name_cache_dims(path, layout)
    return layout


def torch_steps(model: Any, layout: Seq2SeqLayout) -> tuple[Any, Any]:
    """The encoder and decoder of ``model`` as modules on flat tensors, taking and returning
    what encoder.onnx and decoder.onnx do: what is exported, and what computes the check's
    references."""
    import torch

    encoder_feeds = _trace_encoder_inputs(layout, torch)
    with torch.no_grad():
        out = model(**encoder_feeds, decoder_input_ids=_start_tensor(layout, torch),
                    use_cache=True, return_dict=True)
    expected = [tensor for layer in returned_cache(out).cross_attention_cache.layers
                for tensor in (layer.keys, layer.values)]
    # The cross-attention cache from the cross-attention modules alone, checked against
    # the model's own; else from a pass of the whole decoder.
    for cross_attentions in (_cross_attentions(model, layout, torch), []):
        encoder, decoder = _modules(model, layout, torch, cross_attentions)
        with torch.no_grad():
            encoded = encoder(*encoder_feeds.values())
        if len(encoded) - 1 == len(expected) and all(
                torch.allclose(got, want, rtol=1e-5, atol=1e-6)
                for got, want in zip(encoded[1:], expected, strict=True)):
            return encoder, decoder
    raise RuntimeError(f"{type(model).__name__}: the encoder's cross-attention cache is "
                       "not the one the model computes")


def _name_cache_dims(path: Path, layout: Seq2SeqLayout) -> None:
    """Write the heads and head_dim of every cache input and output into the model's
    signature: the exporter leaves them symbolic where it computed them (Whisper's
    cross-attention reshapes), and readers take the cache's shape from there."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    cross = set(layout.cross_names) | set(layout.cross_past_names)
    changed = False
    for value in [*model.graph.input, *model.graph.output]:
        if not value.name.startswith(("past_key_values.", "present.")):
            continue
        heads, head_dim = ((layout.encoder_heads, layout.encoder_head_dim)
                           if value.name in cross else (layout.heads, layout.head_dim))
        dims = value.type.tensor_type.shape.dim
        for index, size in ((1, heads), (3, head_dim)):
            if dims[index].dim_value != size:
                dims[index].Clear()
                dims[index].dim_value = size
                changed = True
    if changed:
        onnx.save(model, str(path))


def _layout(model: Any, torch) -> Seq2SeqLayout:
    """The cache shapes, read from what the model itself returns on a first step."""
    config = model.config
    if not getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{type(model).__name__} is not an encoder-decoder")
    start = _decoder_start_token(model)
    features = _takes_features(model)
    features_shape = None
    kwargs: dict[str, Any]
    if features:
        features_shape = _features_shape(config)
        kwargs = {"input_features": torch.zeros((1, *features_shape))}
    else:
        ids = torch.ones((1, TRACE_ENCODER_TOKENS), dtype=torch.int64)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        out = model(**kwargs, decoder_input_ids=torch.full((1, 1), start, dtype=torch.int64),
                    use_cache=True, return_dict=True)
    cache = returned_cache(out)
    self_layers = cache.self_attention_cache.layers
    cross_layers = cache.cross_attention_cache.layers
    key, cross_key = self_layers[0].keys, cross_layers[0].keys
    return Seq2SeqLayout(
        layers=len(self_layers), heads=int(key.shape[1]), head_dim=int(key.shape[3]),
        encoder_heads=int(cross_key.shape[1]), encoder_head_dim=int(cross_key.shape[3]),
        vocab=int(out.logits.shape[-1]), decoder_start_token_id=start,
        encoder_input="features" if features else "text", features_shape=features_shape)


def _cross_attentions(model: Any, layout: Seq2SeqLayout, torch) -> list[tuple[Any, int]]:
    """The decoder's cross-attention modules, in the order a forward calls them, with the
    size of their query: the modules called with key_value_states, seen by hooks on a
    first step. Empty when they cannot be told apart (one per layer is expected)."""
    import inspect

    found: dict[int, tuple[Any, int]] = {}

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states = kwargs.get("key_value_states")
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if states is not None and hidden is not None and id(module) not in found:
            found[id(module)] = (module, int(hidden.shape[-1]))

    handles = []
    for module in model.get_decoder().modules():
        try:
            parameters = inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            continue
        if "key_value_states" in parameters and "hidden_states" in parameters:
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(**_trace_encoder_inputs(layout, torch),
                  decoder_input_ids=_start_tensor(layout, torch), use_cache=True,
                  return_dict=True)
    finally:
        for handle in handles:
            handle.remove()
    # The innermost ones: T5's layer wrapper (T5LayerCrossAttention) takes
    # key_value_states too, and calls the attention (T5Attention) with them.
    modules = [(module, size) for module, size in found.values()
               if not any(_contains(module, other) for other, _ in found.values())]
    return modules if len(modules) == layout.layers else []


def _contains(module: Any, other: Any) -> bool:
    return any(sub is other for sub in module.modules() if sub is not module)


def _start_tensor(layout: Seq2SeqLayout, torch) -> Any:
    return torch.from_numpy(layout.start_tokens())


def _decoder_start_token(model: Any) -> int:
    for holder in (getattr(model, "generation_config", None), model.config):
        start = getattr(holder, "decoder_start_token_id", None)
        if start is not None:
            return int(start)
    start = getattr(model.config, "pad_token_id", None)  # T5's convention
    if start is None:
        raise ValueError(f"{type(model).__name__} names no decoder_start_token_id")
    return int(start)


def _takes_features(model: Any) -> bool:
    import inspect

    return "input_features" in inspect.signature(model.forward).parameters


def _features_shape(config: Any) -> tuple[int, int]:
    """(mel_bins, frames): Whisper's encoder takes exactly 2 frames per position."""
    mel_bins = int(config.num_mel_bins)
    frames = 2 * int(config.max_source_positions)
    return mel_bins, frames


def _trace_encoder_inputs(layout: Seq2SeqLayout, torch) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    if layout.is_text:
        ids = torch.randint(1, max(2, layout.vocab), (1, TRACE_ENCODER_TOKENS),
                            generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    assert layout.features_shape is not None
    return {"input_features": torch.randn((1, *layout.features_shape), generator=generator)}


def _modules(model: Any, layout: Seq2SeqLayout, torch,
             cross_attentions: list[tuple[Any, int]]) -> tuple[Any, Any]:
    """The encoder and decoder steps of ``model`` on flat tensors: what is exported. The
    encoder computes the cross-attention cache with ``cross_attentions`` (the decoder's
    cross-attention modules, in layer order, and their query size), else by running the
    decoder once."""
    cache_kwarg = cache_keyword(model)

    def caches(self_past: list[Any], cross_past: list[Any]) -> Any:
        from transformers import DynamicCache, EncoderDecoderCache

        def pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
            return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]

        return EncoderDecoderCache(DynamicCache(pairs(self_past) or None),
                                   DynamicCache(pairs(cross_past) or None))

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            kwargs = dict(zip(layout.encoder_input_names, inputs, strict=True))
            if cross_attentions:
                hidden, cache = self.cross_by_layer(kwargs)
            else:
                hidden, cache = self.cross_by_decoder(kwargs, inputs[0].shape[0])
            cross = []
            for layer in cache.cross_attention_cache.layers:
                cross += [layer.keys, layer.values]
            return (hidden, *cross)

        def cross_by_layer(self, kwargs):
            """The encoder, then each decoder layer's cross-attention on a dummy query:
            it fills its cache from the encoder's hidden states, and nothing else of the
            decoder is in the graph."""
            hidden = self.model.get_encoder()(**kwargs, return_dict=True).last_hidden_state
            cache = caches([], [])
            for module, query_size in cross_attentions:
                query = hidden.new_zeros((hidden.shape[0], 1, query_size))
                module(hidden_states=query, key_value_states=hidden,
                       **{cache_keyword(module): cache})
            return hidden, cache

        def cross_by_decoder(self, kwargs, batch):
            """The whole model on the start token: its decoder fills the cross-attention
            cache (what the cache does not depend on is left out of the graph, but
            shapes may tie the rest of the decoder to it)."""
            start = torch.full((batch, 1), layout.decoder_start_token_id, dtype=torch.int64)
            out = self.model(**kwargs, decoder_input_ids=start, use_cache=True,
                             return_dict=True, **{cache_kwarg: caches([], [])})
            return out.encoder_last_hidden_state, returned_cache(out)

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, *rest):
            mask = rest[0] if layout.is_text else None
            past = rest[1:] if layout.is_text else rest
            self_past = [t for i, t in enumerate(past) if i % 4 < 2]
            cross_past = [t for i, t in enumerate(past) if i % 4 >= 2]
            cache = caches(self_past, cross_past)
            key = cross_past[0]
            # Cross-attention reads the cache alone; the hidden states only give the
            # shapes (batch, encoder_sequence) and are never used.
            hidden = key.new_zeros((key.shape[0], key.shape[2], 1))
            kwargs = {"attention_mask": mask} if layout.is_text else {}
            kwargs[cache_kwarg] = cache
            out = self.model(decoder_input_ids=input_ids, encoder_outputs=(hidden,),
                             use_cache=True, return_dict=True, **kwargs)
            present = []
            for layer in returned_cache(out).self_attention_cache.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return Encoder().eval(), Decoder().eval()


# --- the source's reference ---------------------------------------------------------------

def greedy_reference(model: Any, encoder_inputs: Feeds, steps: int,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own greedy ``generate`` of ``steps`` new tokens for one input: the
    tokens [steps] and the raw logits [steps, vocab] each was chosen from. Nothing but
    the argmax decides: no sampling, no beams, no stopping, no forced, suppressed or
    timestamp tokens (checked: every token is the argmax of its raw logits)."""
    import torch

    from convertkit.adapters.hf_export import check_greedy, neutral_generation

    start = _decoder_start_token(model)
    kwargs = {name: torch.from_numpy(np.asarray(value)) for name, value in encoder_inputs.items()}
    extra = {"return_timestamps": False} if _takes_features(model) else {}
    with neutral_generation(model, steps=steps, decoder_start_token_id=start) as config, \
            torch.no_grad():
        out = model.generate(**kwargs, generation_config=config, **extra)
    logits = torch.stack([step[0] for step in out.logits]).float().numpy()
    sequence = out.sequences[0].numpy().astype(np.int64)
    if len(sequence) != steps + 1 or sequence[0] != start:
        # The decoder is fed the start token alone before the new tokens: anything else
        # generate put first (Whisper's language or task tokens) would not be decoded.
        raise ConversionError(f"generate returned the sequence {sequence.tolist()}, not "
                              f"[{start}] and {steps} new tokens", code="bad-reference")
    check_greedy(sequence[1:], logits, steps)
    return sequence[1:], logits


# --- the artifact's decode ----------------------------------------------------------------

def teacher_forced_seq2seq(encoder_run: Runner, decoder_run: Runner, layout: Seq2SeqLayout,
                           encoder_inputs: Feeds, reference_tokens: np.ndarray,
                           ) -> np.ndarray:
    """The artifact's last-position logits at each reference step [steps, vocab]: the
    encoder once, then the decoder fed the start token with an empty self-attention
    cache, then each reference token in turn with the cache it returned."""
    encoded = encoder_run({name: np.asarray(encoder_inputs[name])
                           for name in layout.encoder_input_names})
    feeds = decoder_first_feeds(layout, encoder_inputs, encoded)
    steps = []
    for token in np.asarray(reference_tokens).reshape(-1):
        outputs = decoder_run(feeds)
        steps.append(np.asarray(outputs["logits"], np.float32)[0, -1])
        feeds = decoder_next_feeds(layout, feeds, outputs, np.array([[int(token)]], np.int64))
    return np.stack(steps)


def decoder_first_feeds(layout: Seq2SeqLayout, encoder_inputs: Feeds,
                        encoded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The decoder's first step: the start token, an empty self-attention cache and the
    encoder's cross-attention cache."""
    batch = int(np.asarray(encoded[layout.cross_names[0]]).shape[0])
    feeds = {"input_ids": layout.start_tokens(batch)}
    if layout.is_text:
        feeds["encoder_attention_mask"] = np.asarray(encoder_inputs["attention_mask"],
                                                     np.int64)
    feeds.update(layout.empty_self_past(batch))
    feeds.update({layout.past_for(name): np.asarray(encoded[name])
                  for name in layout.cross_names})
    return {name: feeds[name] for name in layout.decoder_input_names}


def decoder_next_feeds(layout: Seq2SeqLayout, feeds: Mapping[str, np.ndarray],
                       outputs: Mapping[str, np.ndarray], tokens: np.ndarray,
                       ) -> dict[str, np.ndarray]:
    """The step after ``feeds``: ``tokens`` [batch, 1] with the self-attention cache the
    step returned (the cross-attention cache and the mask unchanged)."""
    following = dict(feeds)
    following["input_ids"] = np.asarray(tokens, np.int64)
    following.update({layout.past_for(name): np.asarray(outputs[name])
                      for name in layout.present_names})
    return following


def onnxruntime_runner(path: Path) -> Runner:
    """A runner of an ONNX model on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = session.run(names, {name: feeds[name] for name in inputs})
        return dict(zip(names, values, strict=True))

    return run


# --- lowering: the encoder and the decoder as two parts of one conversion ---------------

def lower_seq2seq(model: Any, request: Any, notes: list[str]) -> Any:
    """Export ``model`` as encoder.onnx and decoder.onnx, each a part of the conversion
    (adapters.Lowered.parts) with its own check: the encoder on the prompts (or audio
    features), the decoder on real decoding steps (each prompt's first step, with the
    source's cross-attention cache and an empty self-attention cache, and the step after
    it), and the decoder's token-by-token check on the source's greedy decode."""
    import torch

    from convertkit.adapters import Lowered, save_check_data
    from convertkit.adapters.hf_export import PROMPT_TOKENS, prompt_ids, vocabulary_size
    from convertkit.checker.decode import DECODE_FILE, DecodeReference
    from convertkit.checker.samples import plan_samples
    from convertkit.errors import UsageError, first_line
    from convertkit.ir.io import load_model
    from convertkit.spec import InputSpec

    if request.options.inputs:
        raise UsageError("-i does not apply to an encoder-decoder: its inputs come from its "
                         "config", hint="drop -i; give inputs as --data (an input_ids or "
                         "input_features array)", code="option-not-applicable")
    try:
        layout = export_seq2seq(model, request.work_dir / "export",
                                request.options.opset or SEQ2SEQ_OPSET)
    except Exception as error:
        raise ConversionError(f"PyTorch could not export the encoder-decoder: "
                              f"{type(error).__name__}: {first_line(error)}",
                              hint="the exporter's full output is in logs/export.log",
                              code="export-failed") from error
    encoder, decoder = torch_steps(model, layout)

    def run(module: Any, names: list[str], outputs: list[str],
            feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            values = module(*(torch.from_numpy(np.asarray(feeds[n])) for n in names))
        return {name: value.numpy() for name, value in zip(outputs, values, strict=True)}

    def encode(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run(encoder, layout.encoder_input_names, layout.encoder_output_names, feeds)

    def decode_step(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run(decoder, layout.decoder_input_names, layout.decoder_output_names, feeds)

    def encoder_feeds(sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if layout.is_text:
            ids = prompt_ids(sample["input_ids"], vocabulary_size(model))
            return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        return {"input_features": np.asarray(sample["input_features"], np.float32)[None]}

    def decoding_steps(feeds: Mapping[str, np.ndarray], encoded: Mapping[str, np.ndarray],
                       ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        first = decoder_first_feeds(layout, feeds, encoded)
        out = decode_step(first)
        token = np.array([[int(out["logits"][0, -1].argmax())]], np.int64)
        second = decoder_next_feeds(layout, first, out, token)
        return [first, second], [out, decode_step(second)]

    if layout.is_text:
        spec = InputSpec("input_ids", (PROMPT_TOKENS,) if request.options.data is None
                         else ("sequence",), "int64")
    else:
        assert layout.features_shape is not None
        spec = InputSpec("input_features", layout.features_shape)
    assert layout.encoder_path is not None and layout.decoder_path is not None
    plan = plan_samples([spec], load_model(layout.encoder_path, load_external_data=False),
                        data=request.options.data, calib_data=request.options.calib_data,
                        labels=None, seed=request.seed, calibrate=request.calibrate)
    parts: dict[str, dict[str, list]] = {
        name: {"evaluation": [], "references": [], "calibration": []}
        for name in ("encoder", "decoder")}
    for sample in plan.evaluation.samples:
        feeds = encoder_feeds(sample)
        encoded = encode(feeds)
        parts["encoder"]["evaluation"].append(feeds)
        parts["encoder"]["references"].append(encoded)
        steps, outputs = decoding_steps(feeds, encoded)
        parts["decoder"]["evaluation"] += steps
        parts["decoder"]["references"] += outputs
    for sample in plan.calibration.samples:
        feeds = encoder_feeds(sample)
        parts["encoder"]["calibration"].append(feeds)
        parts["decoder"]["calibration"] += decoding_steps(feeds, encode(feeds))[0]

    first_input = parts["encoder"]["evaluation"][0]
    tokens, logits = greedy_reference(model, first_input, request.options.decode_steps)
    first = decoder_first_feeds(layout, first_input, parts["encoder"]["references"][0])
    fixed = {name: value for name, value in first.items()
             if name == "encoder_attention_mask" or name in layout.cross_past_names}
    import transformers

    reference = DecodeReference(layout.start_tokens(), tokens, logits,
                                f"transformers {transformers.__version__} generate (greedy)",
                                fixed=fixed)
    specs = {
        "encoder": ([InputSpec("input_ids", ("batch", "encoder_sequence"), "int64"),
                     InputSpec("attention_mask", ("batch", "encoder_sequence"), "int64")]
                    if layout.is_text else
                    [InputSpec("input_features", ("batch", *layout.features_shape))]),
        "decoder": [InputSpec("input_ids", ("batch", "sequence"), "int64"),
                    *([InputSpec("encoder_attention_mask", ("batch", "encoder_sequence"),
                                 "int64")] if layout.is_text else []),
                    *(InputSpec(name, ("batch", layout.heads, "past_sequence",
                                       layout.head_dim)) if ".decoder." in name else
                      InputSpec(name, ("batch", layout.encoder_heads, "encoder_sequence",
                                       layout.encoder_head_dim))
                      for name in layout.past_names)]}
    exported = {"encoder": (layout.encoder_path, layout.encoder_output_names),
                "decoder": (layout.decoder_path, layout.decoder_output_names)}
    lowered = {}
    for name, samples in parts.items():
        part_request = replace(request, work_dir=request.work_dir / name)
        part_request.work_dir.mkdir(parents=True, exist_ok=True)
        path, outputs = exported[name]
        path.replace(part_request.export_path)
        part_plan = replace(
            plan, evaluation=replace(plan.evaluation, samples=tuple(samples["evaluation"])),
            calibration=replace(plan.calibration, samples=tuple(samples["calibration"])))
        check = save_check_data(part_request, part_plan, samples["references"])
        if name == "decoder":
            reference.save(part_request.work_dir / DECODE_FILE)
            check = replace(check, decode_path=part_request.work_dir / DECODE_FILE)
        lowered[name] = Lowered(
            framework="pytorch", onnx_path=part_request.export_path, check=check,
            exporter=f"torch.onnx (torchscript), the {name} of an encoder-decoder",
            inputs=tuple(specs[name]), output_names=tuple(outputs))
    (request.work_dir / "export").rmdir()  # both models moved into their parts
    notes.append(f"encoder-decoder exported as two models: encoder (with every decoder "
                 f"layer's cross-attention cache, {layout.layers} layers) and decoder with "
                 "its self-attention cache; each is built and checked in its own folder")
    decoder_part = lowered["decoder"]
    return replace(decoder_part, exporter="torch.onnx (torchscript), encoder-decoder with "
                   "KV cache", notes=tuple(notes), parts=tuple(lowered.items()))
