"""`-t cpu` for a decoder with a KV cache: weight-only int8 and int4 candidates for ONNX
Runtime (MatMulNBits) and OpenVINO (NNCF compress_weights), each judged by the output
check and the token-by-token decode check, timed decoding (time to first token, tokens
per second), and `--precision int4` for one CPU target. A tiny random Llama with
grouped-query attention (examples/tiny_llm.py), real runtimes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import onnx
import pytest

from convertkit.registry import load_platforms
from convertkit.selection import NOT_EVIDENCE, candidates
from convertkit.spec import Family, Precision
from examples.tiny_llm import build

DECODE_STEPS = 8
WEIGHT_ONLY = {("cpu:ort", "int8"), ("cpu:ort", "int4"), ("cpu:openvino", "int8"),
               ("cpu:openvino", "int4")}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llm") / "llama"
    build("llama").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def auto_cpu(llama: Path, tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("llm-cpu") / "out"
    result = run_cli("convert", str(llama), "-t", "cpu", "--decode-steps", str(DECODE_STEPS),
                     out=out)
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    return result


def _cpu(report: dict) -> dict:
    return next(a for a in report["artifacts"] if a["target"] == "cpu")


def _matmul_nbits_bits(model_path: Path) -> set[int]:
    model = onnx.load(str(model_path), load_external_data=False)
    return {next(a.i for a in node.attribute if a.name == "bits")
            for node in model.graph.node if node.op_type == "MatMulNBits"}


def test_a_decoder_gets_weight_only_candidates_each_checked_token_by_token(auto_cpu) -> None:
    cpu = _cpu(auto_cpu.report)
    found = {(c["target"], c["precision"]): c for c in cpu["candidates"]}
    assert set(found) >= WEIGHT_ONLY
    for key in WEIGHT_ONLY:
        candidate = found[key]
        assert candidate["status"] in ("pass", "fail"), (key, candidate["reason"])
        # Data-free: nothing was calibrated, so nothing keeps them from being chosen.
        assert not candidate["calibrated_on_generated"] and candidate["reason"] != NOT_EVIDENCE
    for candidate in found.values():
        if candidate["status"] in ("pass", "fail"):
            decode = candidate["decode"]
            assert decode is not None and decode["steps"] == DECODE_STEPS, candidate
            if candidate["status"] == "pass":
                assert decode["within_budget"]
                assert decode["token_match"] >= decode["min_token_match"]
    # The int8 of a decoder is weight-only, in place of dynamic quantisation.
    out = auto_cpu.out
    assert _matmul_nbits_bits(out / found[("cpu:ort", "int8")]["path"]) == {8}
    assert _matmul_nbits_bits(out / found[("cpu:ort", "int4")]["path"]) == {4}
    int8_ops = {n.op_type for n in onnx.load(str(out / found[("cpu:ort", "int8")]["path"]),
                                             load_external_data=False).graph.node}
    assert "DynamicQuantizeLinear" not in int8_ops and "MatMulInteger" not in int8_ops
    xml = (out / found[("cpu:openvino", "int4")]["path"]).read_text()
    assert re.search(r'element_type="[iu]4"', xml)
    assert 'element_type="u8"' in (out / found[("cpu:openvino", "int8")]["path"]).read_text()
    for precision in ("int8", "int4"):  # compiled as checked: run-time int8 activations
        settings = json.loads((out / found[("cpu:openvino", precision)]["path"]).with_name(
            "compile.json").read_text())
        assert settings["config"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "32"


def test_candidates_are_timed_decoding_and_the_chosen_one_passed_its_decode(auto_cpu) -> None:
    cpu = _cpu(auto_cpu.report)
    assert cpu["status"] == "pass"
    chosen = [c for c in cpu["candidates"] if c["chosen"]]
    assert len(chosen) == 1
    assert chosen[0]["status"] == "pass" and chosen[0]["decode"]["within_budget"]
    assert cpu["decode"]["within_budget"] and cpu["decode"]["steps"] == DECODE_STEPS
    timed = [c for c in cpu["candidates"] if c["status"] == "pass"]
    assert timed
    for candidate in timed:
        assert candidate["ttft_ms"] > 0 and candidate["latency_ms"] > 0
        assert math.isclose(candidate["tokens_per_s"], 1000 / candidate["latency_ms"])
    for candidate in cpu["candidates"]:
        if candidate["status"] != "pass":
            assert candidate["tokens_per_s"] is None and candidate["ttft_ms"] is None
    assert cpu["latency_ms"] == chosen[0]["latency_ms"]
    assert "tokens/s" in cpu["notes"][0] and "first token" in cpu["notes"][0]


def test_precision_int4_builds_matmul_nbits_for_cpu_ort(cli, llama, tmp_path) -> None:
    result = cli("convert", str(llama), "-t", "cpu:ort", "--precision", "int4",
                 "--decode-steps", str(DECODE_STEPS), out=tmp_path / "out")
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "cpu:ort")
    assert artifact["precision"] == "int4" and artifact["status"] in ("pass", "fail")
    model = onnx.load(str(result.out / artifact["path"]), load_external_data=False)
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    # Every projection of the 2 layers (q, k, v, o, gate, up, down) and the LM head.
    assert len(nbits) == 2 * 7 + 1
    assert {next(a.i for a in n.attribute if a.name == "bits") for n in nbits} == {4}
    assert not [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                and any(i in {t.name for t in model.graph.initializer} for i in n.input)]
    assert artifact["decode"] is not None and artifact["decode"]["steps"] == DECODE_STEPS
    assert any("MatMulNBitsQuantizer" in note for note in artifact["notes"])


def test_int4_is_refused_where_no_platform_builds_it(cli, llama, tmp_path) -> None:
    result = cli("convert", str(llama), "-t", "npu:intel", "--precision", "int4",
                 out=tmp_path / "out")
    assert result.exit_code == 2
    assert "does not build int4" in result.stderr + result.stdout


def test_auto_cpu_considers_int4_for_decoders_only() -> None:
    platforms = load_platforms().values()
    others = {(str(c.target), c.precision) for c in candidates(platforms, Family.CPU, None)}
    decoder = {(str(c.target), c.precision)
               for c in candidates(platforms, Family.CPU, None, decoder=True)}
    assert ("cpu:ort", Precision.INT4) in decoder - others
    assert ("cpu:openvino", Precision.INT4) in decoder - others
    assert all(precision != Precision.INT4 for _, precision in others)
