"""Hugging Face model folders (save_pretrained) as sources: decoders exported with their KV
cache and checked token by token, encoders exported as any model, and the folders that
must be refused. The models are transformers' own classes built from small configs
(examples/tiny_llm.py), random weights, no download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

from examples.tiny_llm import build

DECODE_STEPS = 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    made = {}
    for kind in ("gpt2", "llama", "qwen2", "phi3"):
        made[kind] = root / kind
        build(kind).save_pretrained(made[kind])
    return made


def _artifact(report: dict, target: str) -> dict:
    return next(a for a in report["artifacts"] if a["target"] == target)


def _greedy_in_ort(model_path: Path, prompt: np.ndarray, steps: int) -> list[int]:
    """The artifact's own greedy decode, fed its own picks and caches: written here from
    the ONNX model's inputs, independently of convertkit's check."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    past = [name for name in inputs if name.startswith("past_key_values.")]
    feeds = {"input_ids": prompt, "attention_mask": np.ones_like(prompt)}
    if "position_ids" in inputs:
        feeds["position_ids"] = np.arange(prompt.shape[1], dtype=np.int64)[None]
    for name in past:
        _, heads, _, head_dim = inputs[name].shape
        feeds[name] = np.zeros((1, heads, 0, head_dim), np.float32)
    names = [o.name for o in session.get_outputs()]
    tokens, total = [], prompt.shape[1]
    for _ in range(steps):
        outputs = dict(zip(names, session.run(names, feeds), strict=True))
        tokens.append(int(outputs["logits"][0, -1].argmax()))
        total += 1
        feeds = {"input_ids": np.array([[tokens[-1]]], np.int64),
                 "attention_mask": np.ones((1, total), np.int64)}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.array([[total - 1]], np.int64)
        for name in past:
            feeds[name] = outputs[name.replace("past_key_values.", "present.")]
    return tokens


def _generate(folder: Path, prompt: np.ndarray, steps: int) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.from_numpy(prompt)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=steps, min_new_tokens=steps, eos_token_id=None,
                             pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "phi3"])
def test_a_decoder_folder_decodes_like_generate_in_onnx_runtime(cli, folders, kind,
                                                                tmp_path) -> None:
    out = tmp_path / "out"
    result = cli("convert", str(folders[kind]), "-t", "cpu:ort", "--decode-steps",
                 str(DECODE_STEPS), out=out)

    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.report
    assert report["source"]["framework"] == "pytorch"
    model = onnx.load(out / "cpu-ort" / "model.onnx", load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs[:2] == ["input_ids", "attention_mask"]
    assert ("position_ids" in inputs) == (kind != "gpt2" or "position_ids" in inputs)
    assert "past_key_values.1.value" in inputs and "present.1.value" in outputs
    assert outputs[0] == "logits"
    # GQA: the cache holds fewer heads than attention uses.
    key = next(i for i in model.graph.input if i.name == "past_key_values.0.key")
    heads = key.type.tensor_type.shape.dim[1].dim_value
    assert heads == (4 if kind == "gpt2" else 2)

    artifact = _artifact(report, "cpu:ort")
    decode = artifact["decode"]
    assert artifact["status"] == "pass" and decode["within_budget"]
    assert decode["steps"] == DECODE_STEPS and decode["identical"] == DECODE_STEPS
    assert decode["ties"] == 0 and decode["tokens"] == decode["reference_tokens"]
    # From outside: the artifact's own greedy loop is transformers' generate.
    with np.load(out / "check" / "decode.npz") as data:
        prompt = data["prompt"]
    expected = _generate(folders[kind], prompt, DECODE_STEPS)
    assert _greedy_in_ort(out / "cpu-ort" / "model.onnx", prompt, DECODE_STEPS) == expected
    assert decode["reference_tokens"] == expected
    assert len(set(expected)) > 3  # a real continuation, not one token repeated


def test_prompts_from_data_are_the_check_samples(cli, folders, tmp_path) -> None:
    prompts = np.random.default_rng(3).integers(0, 256, size=(4, 6)).astype(np.int64)
    np.savez(tmp_path / "prompts.npz", input_ids=prompts)
    out = tmp_path / "out"

    result = cli("convert", str(folders["llama"]), "-t", "cpu:openvino", "--data",
                 str(tmp_path / "prompts.npz"), "--decode-steps", "6", out=out)

    assert result.exit_code == 0, result.stdout + result.stderr
    samples = result.report["check"]["samples"]
    assert samples["evaluation"]["real"] and samples["evaluation"]["indices"] == [0, 2]
    assert samples["calibration"]["indices"] == [1, 3]
    with np.load(out / "check" / "decode.npz") as data:
        assert data["prompt"].tolist() == [prompts[0].tolist()]
    artifact = _artifact(result.report, "cpu:openvino")
    assert artifact["status"] == "pass" and artifact["decode"]["identical"] == 6


def test_a_factory_returning_a_causal_lm_exports_the_decoder(cli, tmp_path) -> None:
    result = cli("convert", "examples/tiny_llm.py:build_gpt2", "-t", "onnx",
                 "--decode-steps", "4", out=tmp_path / "out")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "KV cache" in result.report["source"]["exporter"]
    assert _artifact(result.report, "onnx")["decode"]["identical"] == 4


def test_a_decoder_on_a_static_shape_npu_is_refused_by_name(cli, folders, tmp_path) -> None:
    result = cli("convert", str(folders["qwen2"]), "-t", "npu:rknn", out=tmp_path / "out")

    assert result.exit_code == 3, result.stdout + result.stderr
    error = _artifact(result.report, "npu:rknn")["error"]
    assert error["code"] == "decoder-needs-dynamic-shapes"
    assert "static input shapes" in error["message"]
    assert _artifact(result.report, "onnx")["status"] == "pass"


def test_an_encoder_folder_exports_its_task(cli, tmp_path) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=200, num_labels=3)
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")

    result = cli("convert", str(tmp_path / "bert"), "-t", "cpu:ort", out=tmp_path / "out")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.report["source"]["outputs"] == ["logits"]
    assert [i["name"] for i in result.report["source"]["inputs"]] == ["input_ids",
                                                                      "attention_mask"]
    assert _artifact(result.report, "cpu:ort")["decode"] is None
    assert any("text-classification" in note for note in result.report["source"]["notes"])


@pytest.mark.parametrize(("change", "message", "exit_code"), [
    ("remote_code", "needs its own Python code", 2),
    ("pickled_weights", "pickled weights (pytorch_model.bin)", 2),
    ("no_weights", "holds no weights", 2),
    ("corrupt_weights", "SafetensorError", 2),
    ("symlinked_weights", "is not a regular file", 2),
    ("unknown_model_type", "does not recognize this architecture", 2),
    ("unknown_task", "unknown task 'text-to-everything'", 2),
])
def test_folders_that_would_run_code_or_cannot_be_exported_are_refused(
        cli, folders, tmp_path, change, message, exit_code) -> None:
    folder = tmp_path / "model"
    shutil.copytree(folders["gpt2"], folder)
    config = json.loads((folder / "config.json").read_text())
    extra: list[str] = []
    if change == "remote_code":
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
        (folder / "modeling_evil.py").write_text("raise SystemExit('ran the folder code')\n")
    elif change == "pickled_weights":
        state = transformers.AutoModelForCausalLM.from_pretrained(folder).state_dict()
        torch.save(state, folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    elif change == "no_weights":
        (folder / "model.safetensors").unlink()
    elif change == "corrupt_weights":  # a header that claims a terabyte
        (folder / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    elif change == "symlinked_weights":
        (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
        (folder / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    elif change == "unknown_model_type":
        config["model_type"] = "nosuchmodel"
    elif change == "unknown_task":
        extra = ["--task", "text-to-everything"]
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"

    result = cli("convert", str(folder), "-t", "onnx", *extra, out=out)

    assert result.exit_code == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "ran the folder code" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not out.exists()  # exit 2: nothing written


def test_a_manifest_takes_folders_with_their_task_and_caches_them(cli, folders,
                                                                  tmp_path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"""\
models:
  - name: qwen2
    source: {folders["qwen2"]}
    task: text-generation-with-past
    decode_steps: 5
    targets: [cpu:ort]
""")

    first = cli("batch", str(manifest), out=tmp_path / "out")
    second = cli("batch", str(manifest), out=tmp_path / "out")

    assert first.exit_code == 0, first.stdout + first.stderr
    report = json.loads((tmp_path / "out/jobs/qwen2/report.json").read_text())
    assert report["source"]["options"]["task"] == "text-generation-with-past"
    assert _artifact(report, "cpu:ort")["decode"]["identical"] == 5
    assert second.exit_code == 0 and "1 from cache" in second.stdout


def test_the_reference_is_the_raw_greedy_decode_even_through_the_end_token(
        cli, tmp_path) -> None:
    """generate fills a passed config's unset settings from the model's own: its
    eos_token_id and min_new_tokens would mask the end token and pick another. The model
    here prefers its end token (0), so the reference must hold it."""
    model = build("qwen2")
    with torch.no_grad():
        model.lm_head.weight[0] *= 20
    model.save_pretrained(tmp_path / "eos")

    result = cli("convert", str(tmp_path / "eos"), "-t", "onnx", "--decode-steps", "8",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stdout + result.stderr
    decode = _artifact(result.report, "onnx")["decode"]
    assert 0 in decode["reference_tokens"]
    assert decode["identical"] == 8


@pytest.mark.parametrize("kind", ["t5", "whisper"])
def test_an_encoder_decoder_folder_converts_as_two_parts_decoding_like_generate(
        cli, kind, tmp_path) -> None:
    from convertkit.adapters.hf_seq2seq import (
        decoder_first_feeds,
        decoder_next_feeds,
        greedy_reference,
        onnxruntime_runner,
    )

    model = build(kind)
    model.save_pretrained(tmp_path / kind)
    out = tmp_path / "out"

    result = cli("convert", str(tmp_path / kind), "-t", "cpu:ort", "--decode-steps", "8",
                 out=out)

    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.report
    assert set(report["source"]["components"]) == {"encoder", "decoder"}
    parts = {(a["component"], a["target"]): a for a in report["artifacts"]}
    assert set(parts) == {(part, target) for part in ("encoder", "decoder")
                          for target in ("onnx", "cpu:ort")}
    assert all(a["status"] == "pass" for a in parts.values())
    assert parts["encoder", "cpu:ort"]["decode"] is None
    decode = parts["decoder", "cpu:ort"]["decode"]
    assert decode["identical"] == 8 and decode["tokens"] == decode["reference_tokens"]
    assert "cpu:ort (decoder)" in result.stdout
    # From outside: the two ONNX Runtime artifacts decode greedily, feeding their own
    # picks, what generate decodes.
    with np.load(out / "check" / "encoder" / "inputs.npz") as data:
        inputs = {key.split("/", 1)[1]: data[key] for key in data.files
                  if key.startswith("000000/")}
    encoder = onnxruntime_runner(out / "encoder" / "cpu-ort" / "model.onnx")
    decoder = onnxruntime_runner(out / "decoder" / "cpu-ort" / "model.onnx")
    from convertkit.adapters.hf_seq2seq import _layout  # the names the models were given

    layout = _layout(model, torch)
    feeds = decoder_first_feeds(layout, inputs, encoder(dict(inputs)))
    tokens = []
    for _ in range(8):
        step = decoder(feeds)
        tokens.append(int(step["logits"][0, -1].argmax()))
        feeds = decoder_next_feeds(layout, feeds, step, np.array([[tokens[-1]]], np.int64))
    expected, _ = greedy_reference(model, inputs, 8)
    assert tokens == expected.tolist() == decode["reference_tokens"]


def test_a_prompt_outside_the_vocabulary_is_a_usage_error(cli, folders, tmp_path) -> None:
    np.savez(tmp_path / "prompts.npz", input_ids=np.array([[5, 99999, 3], [1, 2, 3]]))
    out = tmp_path / "out"

    result = cli("convert", str(folders["qwen2"]), "-t", "onnx", "--data",
                 str(tmp_path / "prompts.npz"), out=out)

    assert result.exit_code == 2, result.stdout + result.stderr
    assert "token id 99999 in a prompt is outside the model's vocabulary (0 to 255)" in \
        result.stderr
    assert not out.exists()
