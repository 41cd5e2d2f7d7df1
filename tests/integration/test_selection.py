"""`-t cpu`: every CPU candidate built, checked and timed; the fastest that passes kept."""

from __future__ import annotations

from pathlib import Path

MODELS = "tests/models/torch_models.py"


def _cpu(report: dict) -> dict:
    return next(a for a in report["artifacts"] if a["target"] == "cpu")


def test_cpu_picks_the_fastest_passing_candidate_and_records_all(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:small_cnn", "-i", "x:2x3x16x16", "-t", "cpu",
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    cpu = _cpu(result.report)
    candidates = cpu["candidates"]
    labels = {(c["target"], c["precision"]) for c in candidates}
    assert {("cpu:ort", "fp32"), ("cpu:ort", "int8"), ("cpu:openvino", "fp32"),
            ("cpu:openvino", "int8")} <= labels
    chosen = [c for c in candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["status"] == "pass"
    timed = [c for c in candidates if c["status"] == "pass"]
    assert all(c["latency_ms"] > 0 and c["spread_ms"] >= 0 and c["runs"] >= 5 for c in timed)
    # The fastest eligible one, or one it did not beat in 70% of the rounds, timed in turn.
    eligible = [c for c in timed if not c["calibrated_on_generated"]]
    fastest = min(eligible, key=lambda c: c["latency_ms"])
    assert all(len(c["round_ms"]) == c["runs"] == fastest["runs"] for c in timed)
    wins = sum(f < c for f, c in zip(fastest["round_ms"], chosen[0]["round_ms"], strict=True))
    assert chosen[0] is fastest or wins < 0.7 * fastest["runs"]
    assert cpu["notes"][0].startswith(f"chose {chosen[0]['target']} {chosen[0]['precision']}: ")
    assert cpu["path"] == chosen[0]["path"] and (tmp_path / "out" / cpu["path"]).is_file()
    assert cpu["precision"] == chosen[0]["precision"]
    assert all((tmp_path / "out" / c["path"]).is_file() for c in candidates if c["path"])
    assert "<-- chosen" in result.stdout


def test_precision_fp32_excludes_quantised_candidates(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:small_cnn", "-i", "x:2x3x16x16", "-t", "cpu",
                 "--precision", "fp32", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    candidates = _cpu(result.report)["candidates"]
    assert {c["precision"] for c in candidates} == {"fp32"}
    assert {c["target"] for c in candidates} == {"cpu:ort", "cpu:openvino"}


def test_a_precision_a_target_cannot_build_is_a_usage_error(cli, tmp_path: Path) -> None:
    result = cli("convert", f"{MODELS}:small_cnn", "-i", "x:2x3x16x16", "-t", "cpu:ort",
                 "--precision", "bf16", out=tmp_path / "out")

    assert result.exit_code == 2
    assert "cpu:ort does not build bf16" in result.stderr
    assert not (tmp_path / "out").exists()
