"""Write tiny random-weight Hugging Face model folders, as `save_pretrained` writes them,
to try `convertkit convert FOLDER` on without downloading anything:

    python examples/tiny_llm.py build/tiny-llama            # a Llama with grouped-query attention
    python examples/tiny_llm.py build/tiny-gpt2 --kind gpt2

Kinds: gpt2, llama (GQA, tied embeddings), qwen2 (GQA), phi3. The weights are seeded
random values drawn wider than transformers' default (initializer_range 0.2), so the
next-token logits are far apart and a greedy decode is not a string of near-ties.
Also importable: ``build(kind)`` returns the model, and ``build_gpt2`` etc. serve as
FILE.py:NAME sources.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

SMALL = {"vocab_size": 256, "initializer_range": 0.2}


def config(kind: str) -> transformers.PretrainedConfig:
    if kind == "gpt2":
        return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                       bos_token_id=0, eos_token_id=0, **SMALL)
    common = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 128,
              "max_position_embeddings": 128, "bos_token_id": 0, "eos_token_id": 0,
              "pad_token_id": 0, **SMALL}
    if kind == "llama":
        return transformers.LlamaConfig(tie_word_embeddings=True, **common)
    if kind == "qwen2":
        return transformers.Qwen2Config(**common)
    if kind == "phi3":
        return transformers.Phi3Config(**common)
    raise ValueError(f"unknown kind {kind!r}: use gpt2, llama, qwen2 or phi3")


def build(kind: str = "llama") -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config(kind)).eval()


def build_gpt2() -> transformers.PreTrainedModel:
    return build("gpt2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--kind", default="llama", choices=("gpt2", "llama", "qwen2", "phi3"))
    args = parser.parse_args()
    build(args.kind).save_pretrained(args.folder)
    print(f"wrote {args.folder} ({args.kind})")


if __name__ == "__main__":
    main()
