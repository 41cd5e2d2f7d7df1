"""PyTorch test models, named as SOURCE by the tests: tests/models/torch_models.py:NAME.

Real architectures others wrote come from transformers, built from small configs with
random weights (nothing is downloaded)."""

from __future__ import annotations

import sys

import torch
from torch import nn


def _seeded() -> None:
    torch.manual_seed(0)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def small_cnn() -> nn.Module:
    _seeded()
    return SmallCNN()


def tiny_bert() -> nn.Module:
    """transformers' BertModel from a tiny config: token ids in, a ModelOutput out."""
    from transformers import BertConfig, BertModel

    _seeded()
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=64)
    return BertModel(config).eval()


def tiny_bert_classifier() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    _seeded()
    config = BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=3)
    return BertForSequenceClassification(config).eval()


class DictOutputs(nn.Module):
    """Nested outputs: a dict holding a tensor and a tuple of tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        h = self.proj(x)
        return {"scores": h.softmax(-1), "parts": (h + y, h.sum(-1))}


def dict_outputs() -> nn.Module:
    _seeded()
    return DictOutputs()


class NoisyModel(nn.Module):
    """Depends on a random op at inference: its ONNX export cannot match it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


class SvdModel(nn.Module):
    """aten::linalg_svd has no ONNX lowering in either exporter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x)[1]


class ExitsDuringExport(nn.Module):
    """Calls sys.exit inside the exporter, as some framework exporters do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            sys.exit(7)
        return x * 2


def raising_factory() -> nn.Module:
    raise RuntimeError("cannot build the model: config file missing")


not_a_model = 42
