"""Schedules over the training run, chosen by name: the KL weight beta(t)
(`kl.name`) and the relaxation temperature (`temperature.schedule`).

Each schedule is a small callable `schedule(step) -> float` built from the
config node and the run length, so `kl=linear` means the same warm-up at 100
or 10,000 steps (warm-up lengths are fractions of `train.steps`).

    beta = kl_schedule(cfg.kl, steps=cfg.train.steps)
    beta(0), beta(steps - 1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass
class Constant:
    """beta(t) = beta."""
    beta: float

    def __call__(self, step: int) -> float:
        return self.beta


@dataclass
class Linear:
    """Linear warm-up from 0 to beta over the first `warmup` fraction, then beta."""
    beta: float
    warmup: float
    steps: int

    def __call__(self, step: int) -> float:
        span = max(1.0, self.warmup * self.steps)
        return self.beta * min(1.0, step / span)


@dataclass
class Sigmoid:
    """Logistic warm-up (Bowman et al. 2016): beta / 2 at warmup / 2 and within
    1% of beta (sigmoid(5) = 0.993) at `warmup`, as fractions of the run."""
    beta: float
    warmup: float
    steps: int

    def __call__(self, step: int) -> float:
        half = max(1.0, 0.5 * self.warmup * self.steps)
        return self.beta / (1.0 + math.exp(-5.0 * (step - half) / half))


@dataclass
class Cyclical:
    """Fu et al. 2019: the run is split into `cycles` equal cycles; in each,
    beta rises linearly from 0 over the first `ratio` of the cycle, then holds."""
    beta: float
    cycles: int
    ratio: float
    steps: int

    def __call__(self, step: int) -> float:
        period = self.steps / self.cycles
        phase = (step % period) / period          # in [0, 1)
        return self.beta * min(1.0, phase / self.ratio)


def kl_schedule(kl, steps: int) -> Callable[[int], float]:
    """beta(t) for the `kl` config node (name, beta, warmup, cycles, ratio)."""
    name = kl.name
    if name == "constant":
        return Constant(kl.beta)
    if name == "linear":
        return Linear(kl.beta, kl.warmup, steps)
    if name == "sigmoid":
        return Sigmoid(kl.beta, kl.warmup, steps)
    if name == "cyclical":
        return Cyclical(kl.beta, kl.cycles, kl.ratio, steps)
    raise ValueError(f"kl.name={name!r} is not valid; choose one of "
                     f"['constant', 'cyclical', 'linear', 'sigmoid']")


@dataclass
class Temperature:
    """tau(t) from `start` to `final` over the run: linear, or exponential
    (geometric interpolation, the exp(-r t) annealing of Jang et al. 2017)."""
    start: float
    final: float
    steps: int
    kind: str = "constant"

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.start
        frac = min(1.0, step / max(1, self.steps - 1))
        if self.kind == "linear":
            return self.start + frac * (self.final - self.start)
        return self.start * (self.final / self.start) ** frac   # exponential


def temperature_schedule(temp, start: float, steps: int) -> Temperature:
    kind = temp.schedule
    final = start if temp.final is None else float(temp.final)
    return Temperature(float(start), final, steps, kind if final != start else "constant")
