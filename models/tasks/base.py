"""`Task`: a dataset held once in device memory, batched by index.

    task = models.tasks.load("digits", device="cpu", seed=0)
    g = task.generator(seed=1)                 # a torch.Generator on the task's device
    batch = task.sample("train", 128, g)       # Batch on the device, no host copy
    val = task.split("val")                    # the whole split, fixed across calls

Minibatches are drawn i.i.d. with replacement (`torch.randint` on the device),
so sampling is stateless and the same generator state gives the same batch.
A task may transform each drawn minibatch (dynamic binarisation); `split`
returns a transform drawn once with the task's seed so evaluation is fixed.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ..data import Batch
from ..registry import Registry

SPLITS = ("train", "val", "test")

# name -> loader(*, device, seed, **options) -> Task; every module of this
# package is imported on first lookup, so a task is one file with a
# `@register("<name>")` loader (plus conf/task/<name>.yaml for bench.run)
TASKS: Registry[Callable[..., "Task"]] = Registry(
    "task", package=__name__.rsplit(".", 1)[0], entry_points="discrete_latent_bench.tasks")
register = TASKS.register

# (batch, generator) -> batch; applied to every minibatch `sample` draws
Transform = Callable[[Batch, Optional[torch.Generator]], Batch]


class Task:
    """A named dataset with three splits on one device.

    name     the registry name ("digits", "strategies", ...)
    family   the model family that consumes it: "image" | "sequence" | "toy"
    spec     sizes a model needs (n_pixels, n_classes, vocab_size, lengths, ...)
    """

    def __init__(self, name: str, family: str, spec: dict[str, Any], splits: dict[str, Batch],
                 device: torch.device | str = "cpu", seed: int = 0,
                 transform: Optional[Transform] = None):
        self.name = name
        self.family = family
        self.spec = dict(spec)
        self.device = torch.device(device)
        self.seed = seed
        self._data = {k: v.to(self.device) for k, v in splits.items()}
        self._transform = transform
        self._fixed: dict[str, Batch] = {}

    # -- access ----------------------------------------------------------
    def size(self, split: str) -> int:
        return self._raw(split).size

    def split(self, name: str) -> Batch:
        """The whole split; a stochastic transform is drawn once (seeded) and cached."""
        if name not in self._fixed:
            raw = self._raw(name)
            if self._transform is not None:
                g = self.generator(self.seed + 1 + SPLITS.index(name))
                raw = self._transform(raw, g)
            self._fixed[name] = raw
        return self._fixed[name]

    def sample(self, split: str, batch_size: int, generator: Optional[torch.Generator] = None) -> Batch:
        """A random minibatch of `batch_size` rows drawn by index on the device."""
        raw = self._raw(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not valid; it must be an integer >= 1")
        idx = torch.randint(raw.size, (batch_size,), generator=generator, device=self.device)
        batch = raw.index(idx)
        return batch if self._transform is None else self._transform(batch, generator)

    def generator(self, seed: Optional[int] = None) -> torch.Generator:
        """A torch.Generator on the task's device (required by `sample`)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed if seed is None else seed)
        return g

    def _raw(self, split: str) -> Batch:
        if split not in self._data:
            raise ValueError(f"unknown split {split!r}; valid splits are {list(self._data)}")
        return self._data[split]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v.size}" for k, v in self._data.items())
        return f"Task({self.name!r}, family={self.family!r}, {sizes}, device={self.device})"


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded permutation of range(n) cut into train / val / test by (val, test) fractions."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val, n_test = (int(round(f * n)) for f in fractions)
    if n - n_val - n_test < 1:
        raise ValueError(f"val/test fractions {fractions} leave no training data out of {n}")
    return perm[n_val + n_test:], perm[:n_val], perm[n_val:n_val + n_test]
