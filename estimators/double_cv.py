"""`double_cv`: REINFORCE leave-one-out with a second, Taylor-expansion
control variate (Titsias & Shi, AISTATS 2022, "Double control variates for
gradient estimation in discrete latent variable models").

With n = n_samples draws z_i ~ q (one-hot, (D, K) each), mu = E_q[z] =
softmax(logits) the mean point of the simplex, and the linear function

    h(z) = f(mu) + c^T (z - mu),    c = stopgrad(grad_z f(z) at z = mu),

the first-order Taylor expansion of f around its mean input, the estimate is

    1/n sum_i [grad f(z_i) + ((f_i - f_-i) - (h_i - h_-i)) grad log q(z_i)] + J_mu^T c

where f_-i, h_-i are the means over the other n - 1 draws (the leave-one-out
baseline, the first control variate) and J_mu^T c = grad_theta E_q[h(z)] =
grad_theta (c^T mu_theta) is the exact expectation of the second control
variate's score term, 1/n sum_i (h_i - h_-i) grad log q(z_i), because h is
linear in z and c does not depend on the draws. Unbiased for any c; a c
close to the local slope of f removes the part of f - f_-i that is linear
in z. f is called once on n + 1 points (the draws and mu); c costs one
backward pass through f at mu, with no graph kept (no double backward).
Without grad mode (evaluation) the second control variate is skipped: it
changes gradients, never the value.

Axis legend: S = n draws, B batch, D latent variables, K categories.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .reinforce import leave_one_out_mean
from .sampling import log_prob_from, sample_scored, softmax


@register
class DoubleCV(Estimator):
    """Double control variates (Titsias & Shi 2022): leave-one-out baseline
    plus a linear Taylor control variate of f at the mean of q."""

    name = "double_cv"
    uses_context = False
    unbiased = True
    min_samples = 2                  # the leave-one-out baseline
    bf16_safe = False                # f minus its linearisation: a difference of nearby values

    def __init__(self, *, n_samples: int = 4):
        super().__init__(n_samples=n_samples)

    def f_evaluations(self, D: int, K: int) -> int:
        return self.n_samples + 1          # the draws and the mean point

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        n = self.n_samples
        logp, z = sample_scored(logits, n)                      # (B, D, K), (n, B, D, K)
        p = softmax(logits)                                     # (B, D, K) = E_q[z]
        taylor = torch.is_grad_enabled()
        mu = p.detach().unsqueeze(0).requires_grad_(taylor)     # (1, B, D, K) a leaf
        f_all = f(torch.cat([z, mu]))                           # (n + 1, B)
        f_z = f_all[:n]                                         # (n, B)
        logq = log_prob_from(logp, z)                           # (n, B)
        if taylor and f_all.requires_grad:
            c, = torch.autograd.grad(f_all[n].sum(), mu, retain_graph=True)
            c = c[0]                                            # (B, D, K) slope of f at mu
        else:
            c = torch.zeros_like(p)
        with torch.no_grad():
            fd = f_z.detach()
            h = (z * c).sum((-1, -2))                           # (n, B) h(z) up to a constant
            adv = (fd - leave_one_out_mean(fd)) - (h - leave_one_out_mean(h))
        score = (adv * (logq - logq.detach())).mean(0)          # (B,)
        correction = (c * (p - p.detach())).sum((-1, -2))       # (B,) grad E_q[h], value 0
        surr = f_z.mean(0) + score + correction
        return Estimate(loss=-surr.mean(), value=fd.mean(0))
