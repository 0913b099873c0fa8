"""`arms`: Antithetic-REINFORCE-Multi-Sample gradient for Bernoulli latents
(Dimitriev & Zhou, ICML 2021, "ARMS").

Logits (B, D, 2) hold a Bernoulli per variable, logit a = l_1 - l_0,
p = sigmoid(a). Per variable, n uniforms u_1..u_n come from a copula that
makes them negatively dependent (`copulas`: Dirichlet or Gaussian), each
U(0, 1) on its own; where p >= 1/2 they are flipped (u -> 1 - u), as in the
paper, so the antithetic pull acts on the rarer outcome. b_s = 1[u_s < p].
The estimate of d E_q[f] / d a_i is

    c_i / (n (n - 1)) sum_{s != t} (f(b_s) - f(b_t)) (b_si - p_i),

RLOO on correlated samples, times the debiasing factor

    c_i = p_i (1 - p_i) / P(b_si = 1, b_ti = 0) = p (1 - p) / (m - C(m, m)),

m = min(p, 1 - p) and C the copula's bivariate CDF. Why c: the second
sample's term no longer averages to 0, E[b_si - p | b_ti] = rho (b_ti - p)
with rho = (P(b_s = b_t = 1) - p^2) / (p (1 - p)), so the pair's sum has mean
(1 - rho) times the gradient, and c = 1 / (1 - rho). With independent
samples c = 1 and this is RLOO. n evaluations of f, one call; the mean of f
over them, un-detached, carries f's own (pathwise) gradient.

Axis legend: n samples, B batch, D latent variables, K = 2.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import copulas
from .base import Estimate, Fn, register
from .disarm import one_hot_bernoulli


def antithetic_bernoulli(a: Tensor, n: int, copula: str) -> Tensor:
    """b in {0, 1} as floats of a's dtype, (n, B, D), no gradient."""
    with torch.no_grad():
        p = torch.sigmoid(a)                                 # (B, D)
        u = copulas.sample(copula, n, a.shape, a)            # (n, B, D)
        u = torch.where(p < 0.5, u, 1 - u)
        return (u < p).to(a.dtype)


def debias(a: Tensor, n: int, copula: str) -> Tensor:
    """p (1 - p) / P(b_s = 1, b_t = 0) for the flipped copula: (B, D)."""
    with torch.no_grad():
        m = torch.sigmoid(-a.abs())                          # min(p, 1 - p)
        # in float64: m - C(m, m) cancels where the samples are nearly independent
        m64 = m.double()
        apart = (m64 - copulas.cdf2(copula, n, m64, m64)).to(a.dtype)
        return m * (1 - m) / apart                           # p (1 - p) = m (1 - m)


@register
class Arms(copulas.CopulaEstimator):
    """ARMS (Dimitriev & Zhou 2021) for Bernoulli latents (K = 2)."""

    name = "arms"

    def check_latent(self, D: int, K: int) -> None:
        if K != 2:
            raise ValueError(f"arms: latent.K={K} is not valid; ARMS is for Bernoulli "
                             f"latents (latent.K=2). For latent.K > 2 use its categorical "
                             f"counterpart: carms")

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        B, D, K = logits.shape
        self.check_latent(D, K)
        n = self.n_samples
        a = logits[..., 1] - logits[..., 0]                  # (B, D)
        b = antithetic_bernoulli(a.detach(), n, self.copula)  # (n, B, D)
        f_all = f(one_hot_bernoulli(b))                      # (n, B)
        with torch.no_grad():                                # a coefficient: no graph
            # sum_{s != t} (f_s - f_t) x_s = n sum_s (f_s - mean f) x_s
            centred = (f_all - f_all.mean(0, keepdim=True)).unsqueeze(-1)   # (n, B, 1)
            rloo = (centred * (b - torch.sigmoid(a))).sum(0) / (n - 1)      # (B, D)
            g_a = rloo * debias(a.detach(), n, self.copula)                 # (B, D)
        score = (g_a * (a - a.detach())).sum(-1)             # (B,), value 0
        surr = f_all.mean(0) + score
        return Estimate(loss=-surr.mean(), value=f_all.detach().mean(0))
