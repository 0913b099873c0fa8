"""`reparam`: the pathwise gradient for a diagonal Gaussian latent through
z = mu + sigma * eps (Kingma & Welling 2014), the continuous counterpart of the
discrete estimators.

The first argument is `params` (B, D, 2): mean in [..., 0], log standard
deviation in [..., 1]; f receives z of shape (S, B, D).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, register


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
    uses_context = False
    unbiased = True
    min_samples = 1
    latent = "gaussian"

    def __init__(self, *, n_samples: int = 1):
        super().__init__(n_samples=n_samples)

    def estimate(self, params: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        f_z = f(draw(params, self.n_samples))                # (S, B)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))
