"""Encoder-decoders (T5, BART, Whisper) exported as an encoder model and a decoder-with-past
model (convertkit/adapters/hf_seq2seq.py), run in ONNX Runtime and compared with
transformers' own greedy ``generate``, token by token. The models are transformers' own
classes built from small configs with seeded random weights, no download; the seeds are
ones whose greedy decode is a real continuation (several distinct tokens, margins well
above the tolerance), and their initializations are raised so logits are not flat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from convertkit.adapters.hf_seq2seq import (
    Seq2SeqLayout,
    export_seq2seq,
    greedy_reference,
    onnxruntime_runner,
    teacher_forced_seq2seq,
)
from examples.tiny_llm import build

STEPS = 12
VOCAB = 128
ENCODER_TOKENS = 7
RTOL = 1e-4  # of the largest logit


def _build(kind: str) -> tuple[Any, dict[str, np.ndarray]]:
    """A tiny random model of ``kind`` (examples/tiny_llm.py) and an encoder input for it."""
    model = build(kind)
    rng = np.random.default_rng(6 if kind == "whisper" else 5)
    if kind == "whisper":
        inputs = {"input_features": rng.standard_normal((1, 8, 32)).astype(np.float32)}
    else:
        ids = rng.integers(3, VOCAB, (1, ENCODER_TOKENS)).astype(np.int64)
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return model, inputs


@dataclass
class Exported:
    kind: str
    model: Any
    layout: Seq2SeqLayout
    inputs: dict[str, np.ndarray]
    tokens: np.ndarray  # generate's
    logits: np.ndarray  # generate's raw logits


@pytest.fixture(scope="module", params=["t5", "bart", "whisper"])
def exported(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Exported:
    kind = request.param
    model, inputs = _build(kind)
    layout = export_seq2seq(model, tmp_path_factory.mktemp(kind))
    tokens, logits = greedy_reference(model, inputs, STEPS)
    return Exported(kind, model, layout, inputs, tokens, logits)


def _session(path: Path | None) -> ort.InferenceSession:
    assert path is not None
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]


def test_the_two_models_are_named_as_optimum_names_them(exported: Exported) -> None:
    layout = exported.layout
    assert layout.encoder_path is not None and layout.decoder_path is not None
    encoder = onnx.load(layout.encoder_path)
    decoder = onnx.load(layout.decoder_path)
    text = exported.kind != "whisper"
    assert layout.encoder_input == ("text" if text else "features")
    assert [i.name for i in encoder.graph.input] == (
        ["input_ids", "attention_mask"] if text else ["input_features"])
    layers = 2
    assert [o.name for o in encoder.graph.output] == ["encoder_hidden_states"] + [
        f"present.{i}.encoder.{kind}" for i in range(layers) for kind in ("key", "value")]
    past = [f"past_key_values.{i}.{part}.{kind}" for i in range(layers)
            for part in ("decoder", "encoder") for kind in ("key", "value")]
    assert [i.name for i in decoder.graph.input] == (
        ["input_ids"] + (["encoder_attention_mask"] if text else []) + past)
    assert [o.name for o in decoder.graph.output] == ["logits"] + [
        f"present.{i}.decoder.{kind}" for i in range(layers) for kind in ("key", "value")]
    # The decoder runs cross-attention from the encoder's cache alone.
    assert "encoder_hidden_states" not in {i.name for i in decoder.graph.input}

    assert (layout.layers, layout.heads, layout.head_dim) == (2, 2, 16)
    assert (layout.encoder_heads, layout.encoder_head_dim) == (2, 16)
    start = {"t5": 0, "bart": 2, "whisper": 3}[exported.kind]
    assert layout.decoder_start_token_id == start
    inputs = {i.name: _dims(i) for i in decoder.graph.input}
    outputs = {o.name: _dims(o) for o in decoder.graph.output}
    assert inputs["input_ids"] == ["batch", "sequence"]
    assert inputs["past_key_values.1.decoder.value"] == ["batch", 2, "past_sequence", 16]
    assert inputs["past_key_values.1.encoder.key"] == ["batch", 2, "encoder_sequence", 16]
    assert outputs["present.0.decoder.key"] == ["batch", 2, "total_sequence", 16]
    assert outputs["logits"] == ["batch", "sequence", VOCAB]
    cross = {o.name: _dims(o) for o in encoder.graph.output}
    assert cross["present.1.encoder.value"] == ["batch", 2, "encoder_sequence", 16]
    # The encoder holds the encoder's self-attention and the cross-attention key and value
    # projections, none of the decoder's attention or its vocabulary projection.
    softmax = [node for node in encoder.graph.node if node.op_type == "Softmax"]
    assert len(softmax) == 2  # two encoder layers
    assert not any(VOCAB in _dims(value) for value in encoder.graph.output)
    assert not any(tensor.dims[:1] == [VOCAB] and "decoder" in tensor.name
                   for tensor in encoder.graph.initializer)


def test_the_reference_is_a_plain_greedy_decode(exported: Exported) -> None:
    assert exported.tokens.shape == (STEPS,)
    assert exported.logits.shape == (STEPS, VOCAB)
    assert np.array_equal(exported.tokens, exported.logits.argmax(-1))
    assert len(set(exported.tokens.tolist())) > 3  # a real continuation
    # Each step's logits are the model's own, on the start token and the tokens so far.
    model, layout = exported.model, exported.layout
    decoder_ids = torch.tensor([[layout.decoder_start_token_id,
                                 *exported.tokens.tolist()]])
    inputs = {name: torch.from_numpy(value) for name, value in exported.inputs.items()}
    with torch.no_grad():
        logits = model(**inputs, decoder_input_ids=decoder_ids, use_cache=False).logits
    np.testing.assert_allclose(logits[0, :STEPS].numpy(), exported.logits,
                               atol=RTOL * np.abs(exported.logits).max())


def test_teacher_forced_logits_in_onnx_runtime_match_generate(exported: Exported) -> None:
    layout = exported.layout
    logits = teacher_forced_seq2seq(
        onnxruntime_runner(layout.encoder_path), onnxruntime_runner(layout.decoder_path),
        layout, exported.inputs, exported.tokens)

    assert logits.shape == exported.logits.shape
    scale = np.abs(exported.logits).max()
    difference = np.abs(logits - exported.logits).max()
    assert difference <= RTOL * scale, (difference, scale)
    assert logits.argmax(-1).tolist() == exported.tokens.tolist()


def test_the_onnx_greedy_loop_decodes_what_generate_does(exported: Exported) -> None:
    """The artifacts' own greedy decode, fed their own picks and caches: written here from
    the ONNX models' inputs and outputs, independently of the module's helpers."""
    encoder = _session(exported.layout.encoder_path)
    decoder = _session(exported.layout.decoder_path)
    encoder_names = [o.name for o in encoder.get_outputs()]
    encoded = dict(zip(encoder_names, encoder.run(encoder_names, exported.inputs),
                       strict=True))
    inputs = {i.name: i for i in decoder.get_inputs()}
    feeds = {"input_ids": np.array([[exported.layout.decoder_start_token_id]], np.int64)}
    if "encoder_attention_mask" in inputs:
        feeds["encoder_attention_mask"] = exported.inputs["attention_mask"]
    for name, value in inputs.items():
        if ".decoder." in name:
            _, heads, _, head_dim = value.shape
            feeds[name] = np.zeros((1, heads, 0, head_dim), np.float32)
        elif ".encoder." in name:
            feeds[name] = encoded[name.replace("past_key_values.", "present.")]
    names = [o.name for o in decoder.get_outputs()]
    tokens = []
    for _ in range(STEPS):
        outputs = dict(zip(names, decoder.run(names, feeds), strict=True))
        tokens.append(int(outputs["logits"][0, -1].argmax()))
        feeds["input_ids"] = np.array([[tokens[-1]]], np.int64)
        for name in inputs:
            if ".decoder." in name:
                feeds[name] = outputs[name.replace("past_key_values.", "present.")]

    assert tokens == exported.tokens.tolist()
    assert feeds["past_key_values.0.decoder.key"].shape[2] == STEPS


def test_the_first_step_runs_on_an_empty_past(exported: Exported) -> None:
    """The decoder's first step (self-attention past of length 0) is the model's own
    logits for the start token, with a present of length 1; batch 2 gives each row's."""
    layout = exported.layout
    encoder = _session(layout.encoder_path)
    decoder = _session(layout.decoder_path)
    other = {"input_ids": lambda ids: ids[:, ::-1], "attention_mask": lambda mask: mask,
             "input_features": lambda features: features * 0.5}
    batch = {name: np.concatenate([value, other[name](value)])
             for name, value in exported.inputs.items()}
    encoder_names = [o.name for o in encoder.get_outputs()]
    encoded = dict(zip(encoder_names, encoder.run(encoder_names, batch), strict=True))
    feeds = {"input_ids": layout.start_tokens(2)}
    if layout.is_text:
        feeds["encoder_attention_mask"] = batch["attention_mask"]
    feeds.update(layout.empty_self_past(2))
    feeds.update({layout.past_for(name): encoded[name] for name in layout.cross_names})
    names = [o.name for o in decoder.get_outputs()]
    outputs = dict(zip(names, decoder.run(names, feeds), strict=True))

    assert feeds["past_key_values.0.decoder.key"].shape == (2, 2, 0, 16)
    assert outputs["present.1.decoder.value"].shape == (2, 2, 1, 16)
    inputs = {name: torch.from_numpy(value) for name, value in batch.items()}
    with torch.no_grad():
        expected = exported.model(**inputs, decoder_input_ids=torch.from_numpy(
            layout.start_tokens(2)), use_cache=False).logits.numpy()
    scale = np.abs(expected).max()
    assert np.abs(outputs["logits"] - expected).max() <= RTOL * scale
    assert not np.allclose(expected[0], expected[1])  # the two rows are two inputs
    np.testing.assert_allclose(outputs["logits"][0, -1], exported.logits[0],
                               atol=RTOL * scale)


def test_several_decoder_tokens_at_once_with_and_without_past(exported: Exported) -> None:
    """Sequence and past are both dynamic: the start token and the first reference token
    on an empty past, then three more tokens on the past they left, give generate's
    logits for all five positions (the causal mask and positions follow the past)."""
    layout = exported.layout
    encoder = onnxruntime_runner(layout.encoder_path)
    decoder = onnxruntime_runner(layout.decoder_path)
    encoded = encoder(dict(exported.inputs))
    tokens = exported.tokens.tolist()
    feeds = {"input_ids": np.array([[layout.decoder_start_token_id, tokens[0]]], np.int64)}
    if layout.is_text:
        feeds["encoder_attention_mask"] = exported.inputs["attention_mask"]
    feeds.update(layout.empty_self_past())
    feeds.update({layout.past_for(name): encoded[name] for name in layout.cross_names})
    first = decoder(feeds)
    feeds["input_ids"] = np.array([tokens[1:4]], np.int64)
    feeds.update({layout.past_for(name): first[name] for name in layout.present_names})
    second = decoder(feeds)

    assert second["present.0.decoder.key"].shape[2] == 5
    logits = np.concatenate([first["logits"][0], second["logits"][0]])
    scale = np.abs(exported.logits).max()
    assert np.abs(logits - exported.logits[:5]).max() <= RTOL * scale
