"""`carms`: Categorical-Antithetic-REINFORCE Multi-Sample gradient
(Dimitriev & Zhou, NeurIPS 2021, "CARMS"), the categorical counterpart of `arms`.

Logits (B, D, K), q_d = softmax(logits[b, d]). Per variable, n uniforms
u_1..u_n come from a negatively dependent copula (`copulas`), and each is
turned into a category by the inverse CDF of q_d over an order of the
categories pi_d drawn at random for that variable (shared by its n samples):
z_s = the category whose interval [L, R) of the stacked probabilities holds
u_s. Each z_s ~ q on its own; pairs are antithetic. The order set, as in the
authors' code, holds K (K - 1) / 2 orders, one per pair {i, j}, i < j, with
i first and j last (the rest in between, ascending): every pair of distinct
categories can then be drawn together, which unbiasedness needs.

The joint of two samples, averaged over the orders,

    J(i, j) = mean_pi [C(R_i, R_j) - C(L_i, R_j) - C(R_i, L_j) + C(L_i, L_j)],

gives the importance ratio r(i, j) = q_i q_j / J(i, j) that turns a
correlated pair back into an independent one, and the estimate of
d E_q[f] / d logits[b, d] is

    1 / (n (n - 1)) sum_{s != t} r_d(z_sd, z_td) (e_{z_sd} - q_d) (f(z_s) - f(z_t)),

RLOO with each pair reweighted. The ratio of variable d alone suffices since
variables are independent and f(z_t)'s term needs only z_sd's law given z_td.
(A ratio on an impossible pair, J = 0, is never used: set to 0.) The joint is
computed in float64, where its differences of C do not cancel. n evaluations
of f in one call; mean f carries f's pathwise gradient.

Axis legend: n samples, B batch, D latent variables, K categories, O orders.
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import copulas
from .base import Estimate, Fn, register


@functools.lru_cache(maxsize=16)
def orders(K: int, device) -> Tensor:
    """(O, K) category at each rank: one order per pair i < j, i first, j last."""
    rows = [[i, *[c for c in range(K) if c not in (i, j)], j]
            for i, j in itertools.combinations(range(K), 2)]
    return torch.tensor(rows, dtype=torch.long, device=device)


def pair_joint(q: Tensor, n: int, copula: str) -> Tensor:
    """J(i, j) = P(z_s = i, z_t = j), s != t, averaged over the orders:
    q (B, D, K) -> (B, D, K, K), in q's dtype."""
    K = q.shape[-1]
    table = orders(K, q.device)                                   # (O, K)
    q64 = q.double().unsqueeze(-2)                                # (B, D, 1, K)
    ranked = q64.expand(*q64.shape[:-2], *table.shape).gather(-1, table.expand(
        *q64.shape[:-2], *table.shape))                           # (B, D, O, K)
    edges = F.pad(ranked.cumsum(-1), (1, 0))                      # (B, D, O, K+1)
    G = copulas.cdf2(copula, n, edges.unsqueeze(-1), edges.unsqueeze(-2))  # (..., K+1, K+1)
    # rectangle [L_a, R_a) x [L_b, R_b) of ranks a, b
    J = G[..., 1:, 1:] - G[..., :-1, 1:] - G[..., 1:, :-1] + G[..., :-1, :-1]
    rank = table.argsort(-1)                                      # (O, K) category -> rank
    J = J.gather(-2, rank[..., :, None].expand(J.shape))          # rows by category
    J = J.gather(-1, rank[..., None, :].expand(J.shape))          # columns by category
    return J.clamp_min(0).mean(-3).to(q.dtype)


def antithetic_categorical(q: Tensor, n: int, copula: str) -> Tensor:
    """Category indices (n, B, D), no gradient."""
    with torch.no_grad():
        B, D, K = q.shape
        table = orders(K, q.device)                               # (O, K)
        pick = torch.randint(len(table), (B, D), device=q.device)
        order = table[pick]                                       # (B, D, K)
        right = q.gather(-1, order).cumsum(-1)                    # (B, D, K) by rank
        u = copulas.sample(copula, n, (B, D), q)                  # (n, B, D)
        rank = (u.unsqueeze(-1) >= right).sum(-1).clamp_max(K - 1)  # (n, B, D)
        return order.expand(n, B, D, K).gather(-1, rank.unsqueeze(-1)).squeeze(-1)


@register
class Carms(copulas.CopulaEstimator):
    """CARMS (Dimitriev & Zhou 2021): antithetic multi-sample REINFORCE for
    categorical latents (any K >= 2)."""

    name = "carms"

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        n = self.n_samples
        K = logits.shape[-1]
        q = logits.detach().softmax(-1)                           # (B, D, K)
        idx = antithetic_categorical(q, n, self.copula)           # (n, B, D)
        z = F.one_hot(idx, K).to(logits.dtype)                    # (n, B, D, K)
        f_all = f(z)                                              # (n, B)
        with torch.no_grad():
            J = pair_joint(q, n, self.copula)                     # (B, D, K, K)
            ratio = torch.where(J > 0, q.unsqueeze(-1) * q.unsqueeze(-2) / J,
                                torch.zeros_like(J))
            # r_d(z_sd, z_td) for every ordered pair of samples
            r = torch.einsum("sbdi,bdij,tbdj->stbd", z, ratio, z)          # (n, n, B, D)
            r = r * (1 - torch.eye(n, dtype=r.dtype, device=r.device))[..., None, None]
            diff = (f_all.unsqueeze(1) - f_all.unsqueeze(0)).unsqueeze(-1)  # (n, n, B, 1)
            weight = (r * diff).sum(1)                            # (n, B, D)
            g = (weight.unsqueeze(-1) * (z - q)).sum(0) / (n * (n - 1))     # (B, D, K)
        score = (g * (logits - logits.detach())).sum((-1, -2))    # (B,), value 0
        surr = f_all.mean(0) + score
        return Estimate(loss=-surr.mean(), value=f_all.detach().mean(0))
