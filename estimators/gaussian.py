"""Estimators for a diagonal Gaussian latent, the continuous counterpart.

The first argument is `params` (B, D, 2): mean in [..., 0], log standard
deviation in [..., 1]; f receives z of shape (S, B, D).

- `reparam`: the pathwise gradient through z = mu + sigma * eps
  (Kingma & Welling 2014).
- `reinforce_gaussian`: the score function with log N(z; mu, sigma) and z held
  fixed (Williams 1992), baseline `none` or `loo` (Kool et al. 2019): the
  comparison that shows what reparameterisation buys.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, check_choice, register
from .reinforce import leave_one_out_mean, score_surrogate


def draw(params: Tensor, S: int) -> Tensor:
    """z = mu + sigma * eps: (S, B, D), differentiable in params."""
    mu, log_std = params.unbind(-1)                          # (B, D) each
    eps = torch.randn((S, *mu.shape), dtype=params.dtype, device=params.device)
    return mu + log_std.exp() * eps


def log_normal(params: Tensor, z: Tensor) -> Tensor:
    """log N(z; mu, sigma) summed over D: (S, B)."""
    mu, log_std = params.unbind(-1)
    return (-0.5 * ((z - mu) / log_std.exp()) ** 2 - log_std
            - 0.5 * math.log(2 * math.pi)).sum(-1)


@register
class Reparam(Estimator):
    """Pathwise (reparameterisation) gradient, Kingma & Welling 2014."""

    name = "reparam"
    unbiased = True
    min_samples = 1
    latent = "gaussian"

    def __init__(self, *, n_samples: int = 1):
        super().__init__(n_samples=n_samples)

    def estimate(self, params: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        f_z = f(draw(params, self.n_samples))                # (S, B)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))


@register
class ReinforceGaussian(Estimator):
    """Score-function estimator for a Gaussian latent (Williams 1992), with the
    leave-one-out baseline of Kool et al. 2019."""

    name = "reinforce_gaussian"
    unbiased = True
    min_samples = 1
    latent = "gaussian"

    def __init__(self, *, baseline: str = "loo", n_samples: int = 4):
        check_choice("baseline", baseline, ("none", "loo"))
        if baseline == "loo" and n_samples < 2:
            raise ValueError(f"reinforce_gaussian: baseline='loo' needs n_samples >= 2, "
                             f"got n_samples={n_samples}")
        super().__init__(n_samples=n_samples)
        self.baseline = baseline

    def estimate(self, params: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        z = draw(params, S).detach()                         # (S, B, D)
        f_z = f(z)                                           # (S, B)
        logq = log_normal(params, z)                         # (S, B)
        b = 0.0
        if self.baseline == "loo":
            b = leave_one_out_mean(f_z.detach())
        surr = score_surrogate(f_z, logq, b)
        return Estimate(loss=-surr.mean(), value=f_z.detach().mean(0))
