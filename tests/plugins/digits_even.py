"""A throw-away image task: the even digits of scikit-learn's 8x8 set."""
from __future__ import annotations

import torch

from models.tasks.base import register, split_indices
from models.tasks.images import image_task, read_sklearn_digits


@register("digits_even")
def load_digits_even(*, device="cpu", seed: int = 0, binarize: str = "dynamic"):
    grey, target = read_sklearn_digits()
    keep = target % 2 == 0
    pixels = torch.tensor(grey[keep] / 16.0, dtype=torch.float32)      # (N, 64) in [0, 1]
    labels = torch.tensor(target[keep], dtype=torch.long)
    train, val, test = split_indices(len(labels), (0.1, 0.2), seed)
    return image_task("digits_even", pixels, labels, {"train": train, "val": val, "test": test},
                      (8, 8), binarize, None, device, seed, n_classes=10)
