"""`disarm`: antithetic score function for Bernoulli latents, with the
antithetic noise integrated out (Dong, Mnih & Tucker, NeurIPS 2020); for
K > 2 categories the importance-weighted stick-breaking coupling of the same
authors (NeurIPS 2021, "DisARM-IW"; `disarm_categorical`).

Logits (B, D, 2) hold a Bernoulli per variable, with logit a = l_1 - l_0 and
b_i ~ Bern(sigmoid(a_i)). One uniform u per variable gives the antithetic pair

    b = 1[u < sigmoid(a)],   b~ = 1[1 - u < sigmoid(a)],

both distributed as q, and the estimate of d E_q[f] / d a_i is

    1/2 (f(b) - f(b~)) (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|a_i|).

Only variables where the pair differs get a score, and 1/2 sigmoid(|a_i|)
is sigmoid'(a_i) divided by the probability 2 sigmoid(-|a_i|) that the pair
differs at i: hence |a_i|, not a_i. Gradients for l_0, l_1
follow from a = l_1 - l_0. Averaged over `n_pairs` iid pairs; f is called
once on the 2 n_pairs points stacked along the sample axis. The mean of f
over those points, un-detached, carries f's own (pathwise) gradient.

K > 2: per variable a pair z, z~ of categories from one set of antithetic
stick-breaking uniforms, and the estimate 1/2 w (f(z) - f(z~)) (e_z - e_z~)
for the logits of that variable, w the pair's importance weight
(`disarm_categorical` gives the formula and why it is unbiased). Same cost,
2 n_pairs points in one call of f. At K = 2 the binary path above runs (the
two agree in distribution; the binary one is the original).

Axis legend: P pairs, S = 2P points, B batch, D latent variables, K categories.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .disarm_categorical import coupled_pairs
from .sampling import uniform


def antithetic_pair(a: Tensor, P: int) -> tuple[Tensor, Tensor]:
    """b, b~ in {0, 1} as floats of a's dtype, each (P, B, D), no gradient."""
    with torch.no_grad():
        p = torch.sigmoid(a)                                 # (B, D)
        u = uniform((P, *a.shape), a)                        # (P, B, D)
        return (u < p).to(a.dtype), (1 - u < p).to(a.dtype)


def one_hot_bernoulli(b: Tensor) -> Tensor:
    """(..., D) in {0, 1} -> (..., D, 2) one-hot, category 1 meaning b = 1."""
    return torch.stack([1 - b, b], -1)


def pair_weight(a: Tensor) -> Tensor:
    """sigmoid(|a|): the factor that makes the pair's score unbiased. (B, D)"""
    return torch.sigmoid(a.abs())


@register
class Disarm(Estimator):
    """DisARM (Dong, Mnih & Tucker 2020) for Bernoulli latents (K = 2) and its
    importance-weighted stick-breaking coupling (2021) for K > 2."""

    name = "disarm"
    uses_context = False
    unbiased = True
    min_samples = 1

    def __init__(self, *, n_pairs: int = 1):
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
            raise ValueError(f"disarm: n_pairs={n_pairs!r} is not valid; "
                             f"it must be an integer >= 1")
        # n_samples is the number of points f sees: both halves of every pair
        super().__init__(n_samples=2 * n_pairs)
        self.n_pairs = n_pairs

    def f_evaluations(self, D: int, K: int) -> int:
        return 2 * self.n_pairs

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        B, D, K = logits.shape
        P = self.n_pairs
        if K > 2:
            return self._categorical(logits, f)
        a = logits[..., 1] - logits[..., 0]                  # (B, D)
        b, bt = antithetic_pair(a.detach(), P)               # (P, B, D) each
        f_all = f(one_hot_bernoulli(torch.cat([b, bt])))     # (2P, B)
        f_b, f_bt = f_all.split(P)                           # (P, B) each
        with torch.no_grad():                                # a coefficient: no graph
            sign = 1 - 2 * bt                                # (-1)^{b~}
            differs = (b != bt).to(a.dtype)
            g_a = (0.5 * (f_b - f_bt).unsqueeze(-1) * sign * differs
                   * pair_weight(a))                         # (P, B, D)
        # value: mean f over the 2P points; gradient: its pathwise part plus
        # g_a pushed through a, which has value 0
        score = (g_a.mean(0) * (a - a.detach())).sum(-1)     # (B,)
        surr = f_all.mean(0) + score                         # (B,)
        return Estimate(loss=-surr.mean(), value=f_all.detach().mean(0))

    def _categorical(self, logits: Tensor, f: Fn) -> Estimate:
        P, K = self.n_pairs, logits.shape[-1]
        z, zt, coef = coupled_pairs(logits.detach(), P, uniform)    # (P, B, D) each
        points = F.one_hot(torch.cat([z, zt]), K).to(logits.dtype)  # (2P, B, D, K)
        f_all = f(points)                                           # (2P, B)
        with torch.no_grad():
            f_z, f_zt = f_all.split(P)                              # (P, B) each
            e_z, e_zt = points.split(P)                             # (P, B, D, K) each
            g = ((coef * (f_z - f_zt).unsqueeze(-1)).unsqueeze(-1)
                 * (e_z - e_zt)).mean(0)                            # (B, D, K)
        score = (g * (logits - logits.detach())).sum((-1, -2))      # (B,), value 0
        surr = f_all.mean(0) + score
        return Estimate(loss=-surr.mean(), value=f_all.detach().mean(0))

    def extra_repr(self) -> str:
        return f"n_pairs={self.n_pairs}"
