"""`vimco`: the multi-sample bound with leave-one-out baselines
(Mnih & Rezende 2016).

Target: L = log (1/S) sum_s exp f(z_s), z_s ~ q iid, the S-sample bound (with
f = log p(x, z) - log q(z | x) it is the IWAE bound). Its gradient

    grad L = sum_s (L - L_{-s}) grad log q(z_s) + sum_s w_s grad f(z_s),

w = softmax_s f, with the per-sample baseline L_{-s}: L with f(z_s) replaced
by the mean of the other S - 1 values (the geometric mean of their weights).
Unbiased for the gradient of E[L]; needs S >= 2.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .reinforce import leave_one_out_mean
from .sampling import log_prob, sample_one_hot


def leave_one_out_bounds(f_z: Tensor) -> Tensor:
    """L_{-s} for each s: (S, B) -> (S, B)."""
    S = f_z.shape[0]
    others_mean = leave_one_out_mean(f_z)                             # (S, B)
    # replace row s by the mean of the others: a diagonal swap on an (S, S, B) view
    eye = torch.eye(S, dtype=torch.bool, device=f_z.device).unsqueeze(-1)  # (S, S, 1)
    swapped = torch.where(eye, others_mean.unsqueeze(1), f_z.unsqueeze(0))  # (S, S', B)
    return torch.logsumexp(swapped, 1) - math.log(S)


@register
class Vimco(Estimator):
    """VIMCO (Mnih & Rezende 2016)."""

    name = "vimco"
    target = "bound"
    unbiased = True
    min_samples = 2
    bf16_safe = False       # leave-one-out log-mean-exp differences nearby values of f
    free_bits = False       # the KL sits inside f's bound: nothing separate to clamp

    def __init__(self, *, n_samples: int = 4):
        super().__init__(n_samples=n_samples)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        z = sample_one_hot(logits, S)                        # (S, B, D, K)
        f_z = f(z)                                           # (S, B)
        logq = log_prob(logits, z)                           # (S, B)
        bound = torch.logsumexp(f_z, 0) - math.log(S)        # (B,) carries sum_s w_s grad f_s
        signal = (bound.unsqueeze(0) - leave_one_out_bounds(f_z)).detach()  # (S, B)
        surr = bound + (signal * (logq - logq.detach())).sum(0)             # (B,)
        return Estimate(loss=-surr.mean(), value=bound.detach())
