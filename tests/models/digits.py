"""A small CNN trained on real images: scikit-learn's handwritten digits (1,797 8x8 images,
shipped inside its wheel, nothing downloaded), fed raw 0..255 pixels with the
normalisation inside the model, as many deployed models take them.

``train(folder)`` trains it in a few seconds (seeded) and writes what a user would have:
the weights, 500 held-out images stacked as samples (``heldout.npz``: x of shape
[500, 1, 1, 8, 8]) and their labels (``labels.npy``). As a SOURCE:
``tests/models/digits.py:build`` with ``--weights FOLDER/weights.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

HELD_OUT = 500
SOURCE = "tests/models/digits.py:build"


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x / 255.0 - 0.3) / 0.4)  # raw pixels in, normalised inside


class DeeperDigitsCNN(DigitsCNN):
    """Two 1x1 convolutions more (13 quantisable nodes where DigitsCNN has 9): room for
    the mixed-precision test to keep a few nodes in fp32 and still quantise most."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def build() -> nn.Module:
    return DigitsCNN()


def build_deeper() -> nn.Module:
    return DeeperDigitsCNN()


@dataclass(frozen=True)
class Trained:
    weights: Path
    heldout: Path  # .npz, x: [HELD_OUT, 1, 1, 8, 8] float32 in 0..255
    labels: Path  # .npy, [HELD_OUT] int64
    accuracy: float  # percent, the trained model on the held-out images


def digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 1, 8, 8] float32 in 0..255, labels [N] int64), in a seeded order."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images * (255.0 / 16.0)).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], data.target.astype(np.int64)[order]


def train(folder: Path, model_class: type[DigitsCNN] = DigitsCNN) -> Trained:
    images, labels = digits()
    train_x, train_y = torch.from_numpy(images[HELD_OUT:]), torch.from_numpy(labels[HELD_OUT:])
    torch.manual_seed(0)
    model = model_class()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for batch in torch.randperm(len(train_x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(train_x[batch]), train_y[batch]).backward()
            optimizer.step()
    model.eval()
    heldout_x, heldout_y = images[:HELD_OUT], labels[:HELD_OUT]
    with torch.no_grad():
        predicted = model(torch.from_numpy(heldout_x)).argmax(1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    np.savez(folder / "heldout.npz", x=heldout_x[:, None])
    np.save(folder / "labels.npy", heldout_y)
    return Trained(folder / "weights.pt", folder / "heldout.npz", folder / "labels.npy",
                   float(np.mean(predicted == heldout_y) * 100))
