"""Hand-written training steps for the antithetic estimators (ARMS, CARMS,
categorical DisARM), the way a paper's code would write them inline: the
yardstick for `estimators` in tests/bench/paired.py, on tests/bench/hand.py's
network. Noise is drawn as the library draws it (same calls, shapes, order),
so one seed gives the same numbers (tests/test_estimators_hand_equivalence.py).

Axis legend: n samples, P pairs, B batch, D latent variables, K categories,
O orders of the categories.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.bench.hand import State, finish, uniform


def dirichlet_uniforms(n: int, shape) -> Tensor:
    e = -torch.log(uniform((n, *shape)))
    return (1 - e / e.sum(0)) ** (n - 1)                                # (n, ...)


def dirichlet_pair_cdf(x: Tensor, y: Tensor, n: int) -> Tensor:
    return (x ** (1 / (n - 1)) + y ** (1 / (n - 1)) - 1).clamp_min(0) ** (n - 1)


def arms(s: State) -> Tensor:
    logits = s.model.logits(s.x)                                        # (B, D, 2)
    a = logits[..., 1] - logits[..., 0]
    p = torch.sigmoid(a.detach())
    u = dirichlet_uniforms(s.n, a.shape)                                # (n, B, D)
    b = (torch.where(p < 0.5, u, 1 - u) < p).float()
    f_all = s.model.f(s.x, logits)(torch.stack([1 - b, b], -1))         # (n, B)
    m = torch.sigmoid(-a.detach().abs()).double()
    c = (m * (1 - m) / (m - dirichlet_pair_cdf(m, m, s.n))).float()
    fd = f_all.detach()
    g_a = ((fd - fd.mean(0)).unsqueeze(-1) * (b - p)).sum(0) / (s.n - 1) * c
    surr = f_all.mean(0) + (g_a * (a - a.detach())).sum(-1)
    return finish(s, -surr.mean())


def carms_orders(K: int) -> Tensor:
    """(O, K): for each pair i < j, i first, j last, the rest ascending."""
    return torch.tensor([[i, *[c for c in range(K) if c not in (i, j)], j]
                         for i, j in itertools.combinations(range(K), 2)])


def carms(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    q = logits.detach().softmax(-1)                                     # (B, D, K)
    (B, D, K), n, orders = q.shape, s.n, s.orders
    order = orders[torch.randint(len(orders), (B, D))]                  # (B, D, K)
    right = q.gather(-1, order).cumsum(-1)
    u = dirichlet_uniforms(n, (B, D))                                   # (n, B, D)
    pos = (u.unsqueeze(-1) >= right).sum(-1).clamp_max(K - 1)
    z = F.one_hot(order.expand(n, B, D, K).gather(-1, pos.unsqueeze(-1)).squeeze(-1), K).float()
    f_all = s.model.f(s.x, logits)(z)                                   # (n, B, D)
    # each category's interval [L, R) under every order, in category order
    q64 = q.double().unsqueeze(-2).expand(B, D, len(orders), K)
    R = q64.gather(-1, orders.expand(B, D, -1, -1)).cumsum(-1).gather(-1, s.ranks.expand(B, D, -1, -1))
    L = R - q64
    Cf = lambda x, y: dirichlet_pair_cdf(x.unsqueeze(-1), y.unsqueeze(-2), n)   # noqa: E731
    J = (Cf(R, R) - Cf(L, R) - Cf(R, L) + Cf(L, L)).clamp_min(0).mean(-3).float()
    ratio = torch.where(J > 0, q.unsqueeze(-1) * q.unsqueeze(-2) / J, torch.zeros_like(J))
    r = torch.einsum("sbdi,bdij,tbdj->stbd", z, ratio, z) * (1 - torch.eye(n)).view(n, n, 1, 1)
    fd = f_all.detach()
    w = (r * (fd.unsqueeze(1) - fd.unsqueeze(0)).unsqueeze(-1)).sum(1)  # (n, B, D)
    g = (w.unsqueeze(-1) * (z - q)).sum(0) / (n * (n - 1))
    surr = f_all.mean(0) + (g * (logits - logits.detach())).sum((-1, -2))
    return finish(s, -surr.mean())


def disarm_iw(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    l = logits.detach()
    K, P = l.shape[-1], s.P
    order = l.argsort(-1)                                               # ascending
    ls = l.gather(-1, order)
    a = torch.stack([ls[..., r] - ls[..., r + 1:].logsumexp(-1) for r in range(K - 1)], -1)
    sg = torch.sigmoid(a)                                               # (B, D, K-1)
    u = uniform((P, *a.shape))
    ones = torch.ones_like(u[..., :1])
    rank = torch.cat([(u < sg).float(), ones], -1).argmax(-1)           # (P, B, D)
    rank_t = torch.cat([(1 - u < sg).float(), ones], -1).argmax(-1)
    both_zero = (1 - sg[..., :-1]) ** 2 / (1 - 2 * sg[..., :-1])
    w = torch.cat([ones[0], both_zero.cumprod(-1)], -1) * torch.sigmoid(a.abs())
    split = torch.minimum(rank, rank_t).clamp_max(K - 2)
    coef = 0.5 * w.expand(P, -1, -1, -1).gather(-1, split.unsqueeze(-1)).squeeze(-1) * (rank != rank_t)
    by_rank = order.expand(P, -1, -1, -1)
    z = F.one_hot(by_rank.gather(-1, rank.unsqueeze(-1)).squeeze(-1), K).float()
    zt = F.one_hot(by_rank.gather(-1, rank_t.unsqueeze(-1)).squeeze(-1), K).float()
    f_all = s.model.f(s.x, logits)(torch.cat([z, zt]))                  # (2P, B)
    f1, f2 = f_all.detach().split(P)
    g = ((coef * (f1 - f2).unsqueeze(-1)).unsqueeze(-1) * (z - zt)).mean(0)
    surr = f_all.mean(0) + (g * (logits - logits.detach())).sum((-1, -2))
    return finish(s, -surr.mean())
