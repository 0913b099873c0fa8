"""Tasks: datasets loaded once into device memory and batched by index.

    task = models.tasks.load("digits", device="cpu", seed=0, binarize="static")
    models.tasks.names()              # ['digits', 'fashion_mnist', 'mnist', 'mnist5k', 'strategies', 'toy']
    models.tasks.options("digits")    # {'binarize': 'dynamic', 'threshold': 0.5, ...}

`device` and `seed` are accepted by every task; anything else is a task option,
validated at load time (unknown names raise ValueError listing the valid ones).
`seed` fixes the split and any static randomness; minibatch randomness comes
from the generator handed to `Task.sample`.
"""
from __future__ import annotations

import inspect
from typing import Any

from ..registry import check_options
from .base import SPLITS, TASKS, Task, register


def names() -> list[str]:
    return TASKS.names()


def options(name: str) -> dict[str, Any]:
    """The options `load(name, ...)` accepts besides device and seed, with defaults."""
    sig = inspect.signature(TASKS.get(name))
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in ("device", "seed")}


def load(name: str = "digits", device="cpu", seed: int = 0, **opts) -> Task:
    """Load task `name` onto `device`; unknown names or options raise ValueError."""
    loader = TASKS.get(name)
    check_options(f"task {name!r}", opts, options(name))
    return loader(device=device, seed=seed, **opts)


__all__ = ["SPLITS", "TASKS", "Task", "load", "names", "options", "register"]
