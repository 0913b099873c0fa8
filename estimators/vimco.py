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

import functools
import math
from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .reinforce import leave_one_out_mean
from .sampling import log_prob_from, sample_scored


@functools.lru_cache(maxsize=32)
def _diagonal(S: int, device: torch.device) -> Tensor:
    with torch.inference_mode(False):      # usable by autograd whoever asks first
        return torch.eye(S, dtype=torch.bool, device=device).unsqueeze(-1)   # (S, S, 1)


def leave_one_out_bounds(f_z: Tensor) -> Tensor:
    """L_{-s} for each s: (S, B) -> (S, B)."""
    S = f_z.shape[0]
    others_mean = leave_one_out_mean(f_z)                             # (S, B)
    # replace row s by the mean of the others: a diagonal swap on an (S, S, B) view
    eye = _diagonal(S, f_z.device)                                    # (S, S, 1), built once
    swapped = torch.where(eye, others_mean.unsqueeze(1), f_z.unsqueeze(0))  # (S, S', B)
    return torch.logsumexp(swapped, 1) - math.log(S)


@register
class Vimco(Estimator):
    """VIMCO (Mnih & Rezende 2016)."""

    name = "vimco"
    uses_context = False
    target = "bound"
    unbiased = True
    min_samples = 2
    bf16_safe = False       # leave-one-out log-mean-exp differences nearby values of f
    free_bits = False       # the KL sits inside f's bound: nothing separate to clamp

    def __init__(self, *, n_samples: int = 4):
        super().__init__(n_samples=n_samples)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        logp, z = sample_scored(logits, S)                   # (B, D, K), (S, B, D, K)
        f_z = f(z)                                           # (S, B)
        logq = log_prob_from(logp, z)                        # (S, B)
        bound = torch.logsumexp(f_z, 0) - math.log(S)        # (B,) carries sum_s w_s grad f_s
        # detached inputs, not a detached result: no graph built only to be dropped
        signal = bound.detach().unsqueeze(0) - leave_one_out_bounds(f_z.detach())  # (S, B)
        surr = bound + (signal * (logq - logq.detach())).sum(0)             # (B,)
        return Estimate(loss=-surr.mean(), value=bound.detach())
