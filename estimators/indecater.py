"""`indecater`: the score function with each variable summed out exactly
(IndeCateR, De Smet, Sansone & Zuidberg Dos Martires, ICML 2023).

For independent categoricals q(z) = prod_d q_d(z_d),

    grad E_q[f] = sum_d E_{z_-d ~ q_-d}[ sum_k grad q_d(k) f(z_-d, z_d = k) ]
                  + E_q[grad f(z)]   (f's own dependence on parameters).

Per sample z ~ q, every value k of every variable d is tried with the other
variables held at that sample: D*K points per sample, f called once on all
of them. Unbiased for any K >= 2 (Bernoulli included); cost D*K evaluations
of f per sample.

Axis legend: S samples, B batch, D latent variables, K categories; on the
points, (D, K) in front of (B, D, K) name the replaced variable and its value.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import softmax, sample_one_hot


@functools.lru_cache(maxsize=32)
def _masks(D: int, K: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):      # usable by autograd whoever asks first
        which = torch.eye(D, dtype=dtype, device=device).view(1, D, 1, 1, D, 1)
        value = torch.eye(K, dtype=dtype, device=device).view(1, 1, K, 1, 1, K)
        return 1 - which, which * value


def held_points(z: Tensor) -> Tensor:
    """z (S, B, D, K) -> (S, D, K, B, D, K): point [s, d, k] is z_s with
    variable d set to category k, every other variable held."""
    S, B, D, K = z.shape
    keep, put = _masks(D, K, z.device, z.dtype)              # built once per shape
    return z.view(S, 1, 1, B, D, K) * keep + put


@register
class Indecater(Estimator):
    """IndeCateR (De Smet et al. 2023) for independent categorical latents."""

    name = "indecater"
    uses_context = False
    unbiased = True
    min_samples = 1

    def __init__(self, *, n_samples: int = 1):
        super().__init__(n_samples=n_samples)

    def f_evaluations(self, D: int, K: int) -> int:
        return self.n_samples * D * K

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        B, D, K = logits.shape
        z = sample_one_hot(logits, S)                        # (S, B, D, K)
        points = held_points(z)                              # (S, D, K, B, D, K)
        f_pts = f(points.reshape(S * D * K, B, D, K))        # (S*D*K, B)
        f_dk = f_pts.view(S, D, K, B).permute(0, 3, 1, 2)    # (S, B, D, K)
        q = softmax(logits)                               # (B, D, K)
        # the sample itself is point [d, z_d] for every d; read it off at d = 0
        f_z = (f_dk[:, :, 0] * z[:, :, 0]).sum(-1)           # (S, B)
        score = ((q - q.detach()) * f_dk.detach()).sum((-1, -2))   # (S, B), value 0
        # Pathwise part: for each d, sum_k q_d(k) f(z_-d, k) has expectation
        # E_q f exactly, so with q detached its gradient is an unbiased
        # estimate of E_q[grad f]; averaging it over d uses all D*K points
        # (already evaluated) rather than the one at the sample, so this term
        # alone has no more variance than grad f(z) (Rao-Blackwell over z_d).
        smoothed = (q.detach() * f_dk).sum(-1).mean(-1)     # (S, B)
        pathwise = smoothed - smoothed.detach()              # (S, B), value 0
        surr = f_z.detach() + pathwise + score               # (S, B)
        return Estimate(loss=-surr.mean(), value=f_z.detach().mean(0))
