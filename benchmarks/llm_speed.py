r"""Decoding speed of `-t cpu`'s candidates for a GPT-2-small-sized causal LM against torch
eager, and each candidate's token-by-token check.

A hand-run benchmark, not a test. From the repository root:

    .venv/bin/python benchmarks/llm_speed.py                  # GPT-2 small (12 x 768)
    .venv/bin/python benchmarks/llm_speed.py --layers 2       # a quick look
    .venv/bin/python benchmarks/llm_speed.py --json llm_speed.json

It builds a GPT-2 from transformers' GPT2Config() defaults (12 layers, 768 hidden, 12
heads, vocabulary 50257: 124M parameters) with seeded random weights, saves it with
save_pretrained into a temporary folder (nothing is downloaded), and converts the folder:

    convertkit convert FOLDER -t cpu -o OUT

which builds, checks and times every CPU candidate (weight-only int8 and int4 among them
for a decoder) and picks the fastest by per-token decode latency. Then, in this one
process, every candidate the run built (`pass` or `fail`) and torch eager (transformers'
own forward, fed one token per step with its DynamicCache; at torch's default thread
count, one per core, and on 1 thread) decode the check's prompt
and greedy tokens, one decode each per round, in turn, round after round
(selection.time_decoding): time to first token (the prompt's step, empty cache) and the
per-token latency of the cached steps, medians over the rounds. Each row also gives the
candidate's decode check from the report (tokens identical, ties included, to
transformers' greedy generate) and its status. The issue's goal: the chosen candidate at
least 2x torch eager's tokens/s within its decode budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.accuracy import convertkit  # noqa: E402
from convertkit.checker.decode import CacheInputs, DecodeReference  # noqa: E402
from convertkit.ir.io import load_model  # noqa: E402
from convertkit.platforms import Artifact  # noqa: E402
from convertkit.registry import load_platforms  # noqa: E402
from convertkit.selection import time_decoding  # noqa: E402
from convertkit.spec import Precision  # noqa: E402

GOAL = 2.0  # the chosen candidate's tokens/s over torch eager's


def build_gpt2(folder: Path, layers: int, seed: int) -> int:
    """A random GPT-2 (GPT2Config defaults but ``layers``) saved into ``folder``: its size
    in parameters."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=layers))
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


class TorchEager:
    """transformers' forward as a runner for checker.decode.timed_decode: its own
    DynamicCache, started afresh at each prompt (a step fed an empty past) and carried
    from step to step; the presents it hands back are placeholders the next step ignores."""

    def __init__(self, folder: Path, cache: CacheInputs, threads: int = 0) -> None:
        self.folder = folder
        self.threads = threads  # 0: torch's default (one per core)
        self.past = cache.past
        self.presents = [cache.present_for(name) for name in cache.past]
        self.model: Any = None
        self.cache: Any = None

    def __enter__(self) -> TorchEager:
        import torch
        import transformers

        torch.set_grad_enabled(False)
        self.default_threads = torch.get_num_threads()
        self.model = transformers.AutoModelForCausalLM.from_pretrained(self.folder).eval()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.model = None

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import torch
        import transformers

        first = feeds[self.past[0]]
        if first is not None and first.shape[2] == 0:
            self.cache = transformers.DynamicCache()
            threads = self.threads or self.default_threads
            if torch.get_num_threads() != threads:  # the setting is the process's
                torch.set_num_threads(threads)
        ids = torch.from_numpy(np.asarray(feeds["input_ids"], np.int64))
        mask = torch.from_numpy(np.asarray(feeds["attention_mask"], np.int64))
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, cache=self.cache,
                             use_cache=True)
        self.cache = getattr(out, "cache", None) or self.cache  # DynamicCache: in place
        return {"logits": out.logits[:, -1:].numpy(),
                **dict.fromkeys(self.presents)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12, help="GPT-2 layers (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="time the model and convert run left in DIR by an earlier "
                             "--keep DIR instead of building and converting again")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the model and convert into DIR (kept) for --reuse")
    args = parser.parse_args()

    if args.reuse:
        folder, out = args.reuse / "gpt2", args.reuse / "run"
        code, report = -1, json.loads((out / "report.json").read_text())
    else:
        work = args.keep or Path(tempfile.mkdtemp(prefix="llm-speed-"))
        folder = work / "gpt2"
        parameters = build_gpt2(folder, args.layers, args.seed)
        print(f"GPT-2 ({args.layers} layers, 768 hidden, vocabulary 50257): "
              f"{parameters / 1e6:.0f}M parameters, random (seed {args.seed})")
        print("converting with `convertkit convert FOLDER -t cpu` ...", flush=True)
        code, report, out = convertkit("convert", str(folder), "-t", "cpu")
        if args.keep:
            shutil.rmtree(work / "run", ignore_errors=True)
            shutil.move(out, work / "run")
            out = work / "run"
    if report.get("error") or not any(a["target"] == "cpu" for a in report["artifacts"]):
        sys.exit(f"convert failed (exit {code}): {report.get('error')}")
    auto = next(a for a in report["artifacts"] if a["target"] == "cpu")
    reference = DecodeReference.load(out / (report["check"].get("decode") or "check/decode.npz"))
    cache = CacheInputs.of(load_model(out / report["source"]["onnx"]["path"],
                                      load_external_data=False))
    assert cache is not None, "the model was not exported as a decoder with a KV cache"
    print(f"convert exit {code}; {auto['notes'][0] if auto['notes'] else ''}")

    platforms = load_platforms()
    rows: list[dict[str, Any]] = [
        {"target": "torch eager", "precision": "fp32", "status": "source", "tokens": "-",
         "chosen": False},
        {"target": "torch 1 thread", "precision": "fp32", "status": "source", "tokens": "-",
         "chosen": False}]
    runners: dict[int, Any] = {0: TorchEager(folder, cache), 1: TorchEager(folder, cache, 1)}
    for candidate in auto["candidates"]:
        row = {"target": candidate["target"], "precision": candidate["precision"],
               "status": candidate["status"], "chosen": candidate["chosen"],
               "tokens": _tokens(candidate.get("decode")),
               "convert_tok_s": candidate.get("tokens_per_s")}
        rows.append(row)
        if candidate["status"] not in ("pass", "fail") or not candidate["path"]:
            continue
        platform = platforms[candidate["target"].split(":", 1)[1]]()
        artifact = Artifact(candidate["target"], out / candidate["path"],
                            Precision(candidate["precision"]))
        runners[len(rows) - 1] = platform.open(artifact)
    print(f"timing {len(runners)} decoders side by side, "
          f"{len(reference.tokens)} tokens each per round ...", flush=True)
    timings = time_decoding(runners, cache, reference)
    for index, timing in timings.items():
        rows[index].update(ttft_ms=timing.ttft_ms, ms_per_token=timing.median_ms,
                           tokens_per_s=timing.tokens_per_s, rounds=timing.runs)
    eager = rows[0].get("tokens_per_s") or float("nan")
    single = rows[1].get("tokens_per_s") or float("nan")
    header = (f"{'runtime':<14} {'prec':<5} {'status':<6} {'decode check':<14} "
              f"{'ttft ms':>8} {'ms/token':>9} {'tok/s':>7} {'x eager':>8}")
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        speed = row.get("tokens_per_s")
        timed = speed is not None
        print(f"{row['target']:<14} {row['precision']:<5} {row['status']:<6} "
              f"{row['tokens']:<14} "
              + (f"{row['ttft_ms']:8.1f} {row['ms_per_token']:9.2f} {speed:7.1f} "
                 f"{speed / eager:7.2f}x" if timed else f"{'-':>8} {'-':>9} {'-':>7} {'-':>8}")
              + ("  <-- chosen" if row["chosen"] else ""))
    chosen = next((r for r in rows if r["chosen"]), None)
    if chosen is None or chosen.get("tokens_per_s") is None:
        print("\nno candidate was chosen")
    else:
        ratio = chosen["tokens_per_s"] / eager
        verdict = "met" if ratio >= GOAL else "MISSED"
        print(f"\nchosen: {chosen['target']} {chosen['precision']}, {ratio:.2f}x torch eager's "
              f"tokens/s (goal {GOAL:.0f}x: {verdict}); its decode check: {chosen['tokens']}")
        print(f"against torch eager on 1 thread (no OpenMP barriers between 2 threads): "
              f"{chosen['tokens_per_s'] / single:.2f}x")
    print(f"rounds: {rows[0].get('rounds')}, interleaved; convert's own report: {out}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _tokens(decode: Mapping[str, Any] | None) -> str:
    """'16/16 ok' from a candidate's decode record."""
    if not decode:
        return "-"
    matched = round(decode["token_match"] * decode["steps"])
    return f"{matched}/{decode['steps']} " + ("ok" if decode["within_budget"] else "OVER")


if __name__ == "__main__":
    main()
