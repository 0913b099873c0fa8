"""`gst`: the gapped straight-through estimator (Fan, Chi, Rudnicky & Ramadge,
ICML 2022, "Training discrete deep generative models via gapped
straight-through estimator").

Straight-through Gumbel-softmax differentiates softmax((theta + g) / tau)
at a random g consistent with the sample D; Gumbel-Rao averages over those
g. GST replaces the random g by a deterministic perturbation m(theta, D)
with the two properties the paper asks of it: the perturbed logits
theta + m have their argmax at D, with a gap of at least kappa to every
other category. For a sample D = i and M = max_j theta_j:

    (theta + m)_i = M,     (theta + m)_j = min(theta_j, M - kappa)   (j != i),

m held fixed (a constant of the backward pass), and

    z = D + p - stopgrad(p),    p = softmax((theta + m) / tau),

so f sees the hard sample and the gradient is J_p^T grad f(D) / tau.
`gap` is kappa: a number > 0 (GST-1.0 is gap = 1.0, the paper's
default), or "p" for the paper's probability-dependent gap
kappa = -log(1 - pi_i) / pi_i, pi_i = q(D = i) (GST-p). As in the authors'
code, pi_i is shrunk by 1e-5 so that a certain sample keeps a finite gap.
Biased, deterministic given D; one evaluation of f per sample.

Axis legend: S samples, B batch, D latent variables, K categories.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import log_softmax, sample_one_hot, softmax
from .st import check_tau


def gapped_logits(logits: Tensor, b: Tensor, gap) -> Tensor:
    """theta + m for samples b (S, B, D, K) of logits (B, D, K): the sample at
    the row maximum, every other category at least `gap` below it; m carries
    no gradient. (S, B, D, K)"""
    with torch.no_grad():
        theta = logits.detach()
        top = theta.max(-1, keepdim=True).values                     # (B, D, 1)
        if gap == "p":
            pi = (b * log_softmax(theta)).sum(-1, keepdim=True).exp() * (1 - 1e-5)   # (S, B, D, 1)
            kappa = -torch.log1p(-pi) / pi
        else:
            kappa = gap
        target = b * top + (1 - b) * torch.minimum(theta, top - kappa)
        m = target - theta                                            # (S, B, D, K)
    return logits + m


@register
class GappedStraightThrough(Estimator):
    """Gapped straight-through (Fan et al. 2022): GST-kappa or GST-p."""

    name = "gst"
    uses_context = False
    unbiased = False
    min_samples = 1
    temperature = True

    def __init__(self, *, tau: float = 1.0, gap: float | str = 1.0, n_samples: int = 1):
        tau = check_tau(self.name, tau)
        number = isinstance(gap, (int, float)) and not isinstance(gap, bool)
        if not (gap == "p" or (number and 0 < float(gap) < float("inf"))):
            raise ValueError(f"gst: gap={gap!r} is not valid; it must be a finite number > 0 "
                             f"(GST-kappa) or 'p' (the probability-dependent gap, GST-p)")
        super().__init__(n_samples=n_samples)
        self.tau = tau
        self.gap = gap if gap == "p" else float(gap)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        b = sample_one_hot(logits, self.n_samples)                    # (S, B, D, K), no gradient
        p = softmax(gapped_logits(logits, b, self.gap) / self.tau)    # (S, B, D, K)
        f_z = f(b + (p - p.detach()))                                 # (S, B), value f(b)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))

    def extra_repr(self) -> str:
        return f"tau={self.tau}, gap={self.gap!r}, n_samples={self.n_samples}"
