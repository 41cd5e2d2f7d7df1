"""Write tiny random-weight Hugging Face model folders, as `save_pretrained` writes them,
to try `convertkit convert FOLDER` on without downloading anything:

    python examples/tiny_llm.py build/tiny-llama            # a Llama with grouped-query attention
    python examples/tiny_llm.py build/tiny-gpt2 --kind gpt2
    python examples/tiny_llm.py build/tiny-t5 --kind t5           # an encoder-decoder

Kinds: decoders gpt2, llama (GQA, tied embeddings), qwen2 (GQA), phi3; encoder-decoders
t5, bart, whisper (speech: input_features of 8 mel bins x 32 frames). The weights are
seeded random values drawn wider than transformers' default, so the next-token logits are
far apart and a greedy decode is not a string of near-ties.
Also importable: ``build(kind)`` returns the model, and ``build_gpt2`` etc. serve as
FILE.py:NAME sources.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

SMALL = {"vocab_size": 256, "initializer_range": 0.2}


DECODERS = ("gpt2", "llama", "qwen2", "phi3")
ENCODER_DECODERS = ("t5", "bart", "whisper")
# Seeds whose tiny random encoder-decoders decode varied tokens, not one repeated.
_SEEDS = {"t5": 5, "bart": 5, "whisper": 6}


def config(kind: str) -> transformers.PretrainedConfig:
    seq2seq = {"vocab_size": 128, "tie_word_embeddings": False}
    if kind == "t5":
        return transformers.T5Config(
            d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
            initializer_factor=2.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
            **seq2seq)
    if kind == "bart":
        return transformers.BartConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            max_position_embeddings=64, scale_embedding=False, init_std=0.2, **seq2seq)
    if kind == "whisper":
        # begin_suppress_tokens stays at its default (220 and 50256, outside this
        # vocabulary): the reference decode must neutralise it.
        return transformers.WhisperConfig(
            d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            num_mel_bins=8, max_source_positions=16, max_target_positions=64, init_std=0.3,
            decoder_start_token_id=3, pad_token_id=0, bos_token_id=3, eos_token_id=2,
            suppress_tokens=None, vocab_size=128)
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
    raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(DECODERS + ENCODER_DECODERS)}")


def build(kind: str = "llama") -> transformers.PreTrainedModel:
    torch.manual_seed(_SEEDS.get(kind, 0))
    if kind == "whisper":
        auto = transformers.AutoModelForSpeechSeq2Seq
    elif kind in ENCODER_DECODERS:
        auto = transformers.AutoModelForSeq2SeqLM
    else:
        auto = transformers.AutoModelForCausalLM
    return auto.from_config(config(kind), attn_implementation="eager").eval()


def build_gpt2() -> transformers.PreTrainedModel:
    return build("gpt2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--kind", default="llama", choices=DECODERS + ENCODER_DECODERS)
    args = parser.parse_args()
    build(args.kind).save_pretrained(args.folder)
    print(f"wrote {args.folder} ({args.kind})")


if __name__ == "__main__":
    main()
