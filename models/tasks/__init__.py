"""Tasks: datasets loaded once into device memory and batched by index.

    task = models.tasks.load("digits", device="cpu", seed=0, binarize="static")
    models.tasks.names()              # ['digits', 'fashion_mnist', 'mnist', 'strategies', 'toy']
    models.tasks.options("digits")    # {'binarize': 'dynamic', 'threshold': 0.5, ...}

`device` and `seed` are accepted by every task; anything else is a task option,
validated at load time (unknown names raise ValueError listing the valid ones).
`seed` fixes the split and any static randomness; minibatch randomness comes
from the generator handed to `Task.sample`.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ..registry import Registry, check_options
from .base import SPLITS, Task
from .images import load_digits, load_fashion_mnist, load_mnist
from .strategies import load_strategies
from .toy import load_toy

TASKS: Registry[Callable[..., Task]] = Registry("task")
TASKS.register("digits")(load_digits)
TASKS.register("mnist")(load_mnist)
TASKS.register("fashion_mnist")(load_fashion_mnist)
TASKS.register("strategies")(load_strategies)
TASKS.register("toy")(load_toy)

DEFAULT = "digits"


def names() -> list[str]:
    return TASKS.names()


def options(name: str) -> dict[str, Any]:
    """The options `load(name, ...)` accepts besides device and seed, with defaults."""
    sig = inspect.signature(TASKS.get(name))
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in ("device", "seed")}


def load(name: str = DEFAULT, device="cpu", seed: int = 0, **opts) -> Task:
    """Load task `name` onto `device`; unknown names or options raise ValueError."""
    loader = TASKS.get(name)
    check_options(f"task {name!r}", opts, options(name))
    return loader(device=device, seed=seed, **opts)


__all__ = ["SPLITS", "Task", "load", "names", "options"]
