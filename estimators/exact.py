"""`exact`: enumerate every joint value of z and weight f by its probability.

The reference against which every other estimator is tested, and the right
choice whenever K^D is small: zero variance, one batched call of f.
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import log_prob


@functools.lru_cache(maxsize=32)
def _configs(D: int, K: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    idx = torch.tensor(list(itertools.product(range(K), repeat=D)), device=device)
    return F.one_hot(idx, K).to(dtype)


def all_configs(D: int, K: int, like: Tensor) -> Tensor:
    """Every joint one-hot value: (K^D, D, K), built once per shape and device."""
    return _configs(D, K, like.device, like.dtype)


@register
class Exact(Estimator):
    """Exact marginalisation: sum_z q(z) f(z) over all K^D configurations."""

    name = "exact"
    uses_context = False
    unbiased = True
    min_samples = 1
    deterministic = True

    def __init__(self, *, max_configs: int = 4096):
        super().__init__()
        if not isinstance(max_configs, int) or max_configs < 1:
            raise ValueError(f"exact: max_configs={max_configs!r} is not valid; it must be an integer >= 1")
        self.max_configs = max_configs

    def f_evaluations(self, D: int, K: int) -> int:
        return K ** D

    def check_latent(self, D: int, K: int) -> None:
        n = K ** D
        if n > self.max_configs:
            count = f"{n}" if n < 10**6 else f"{n:.3g}"
            raise ValueError(f"exact: K^D = {K}^{D} = {count} configurations exceed "
                             f"max_configs={self.max_configs}; raise estimator.max_configs, "
                             f"lower latent.K or latent.D, or choose a sampling estimator")

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        B, D, K = logits.shape
        n = K ** D
        self.check_latent(D, K)
        z = all_configs(D, K, logits).unsqueeze(1).expand(n, B, D, K)   # (N, B, D, K)
        weights = log_prob(logits, z).exp()                             # (N, B)
        per_example = (weights * f(z)).sum(0)                           # (B,)
        return Estimate(loss=-per_example.mean(), value=per_example.detach(),
                        metrics={})

    def extra_repr(self) -> str:
        return f"max_configs={self.max_configs}"
