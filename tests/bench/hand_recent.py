"""Hand-written training steps for the estimators of 2020-2024 (unordered set,
double control variates, gapped and decoupled straight-through), in the
style and on the network of tests/bench/hand.py: inline, the obvious idioms,
no input checks, the library's noise draws in the library's order, so one
seed gives both sides the same numbers up to float rounding
(tests/test_estimators_hand_equivalence.py).

Axis legend: S samples, B batch, D latent variables, K categories.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tests.bench.hand import State, finish, one_hot, perturb, sample, uniform


def _gumbel(shape) -> Tensor:
    return -torch.log(-torch.log(uniform(shape)))


def _log1mexp(x: Tensor) -> Tensor:
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _beam(lp: Tensor, k: int) -> Tensor:
    """Stochastic beam search (Kool et al. 2019): k joint outcomes without
    replacement, (k, B, D) categories."""
    B, D, K = lp.shape
    phi, G = lp.new_zeros(B, 1), _gumbel((B, 1))
    seq = torch.zeros(B, 1, 0, dtype=torch.long)
    for d in range(D):
        child = phi.unsqueeze(-1) + lp[:, d].unsqueeze(1)                  # (B, m, K)
        g = child + _gumbel(child.shape)
        u = G.unsqueeze(-1) - g + _log1mexp((g - g.max(-1, keepdim=True).values).clamp(max=0))
        g = G.unsqueeze(-1) - F.relu(u) - torch.log1p(torch.exp(-u.abs()))
        G, idx = g.flatten(1).topk(min(k, g[0].numel()), -1)
        phi = child.flatten(1).gather(1, idx)
        seq = torch.cat([seq.gather(1, (idx // K).unsqueeze(-1).expand(-1, -1, d)),
                         (idx % K).unsqueeze(-1)], -1)
    return seq.permute(1, 0, 2)


def _ratios(lq: Tensor):
    """log R1 (B, k), log R2 (B, k, k) of the unordered set estimator, the
    set probabilities summed over orderings (the authors' enumeration)."""
    B, k = lq.shape
    L2 = lq.new_zeros(B, k, k)
    for i, j in itertools.combinations(range(k), 2):
        n2 = _log1mexp(lq[:, i]) + _log1mexp(lq[:, j] - _log1mexp(lq[:, i]))
        rest = [m for m in range(k) if m not in (i, j)]
        terms = []
        for order in itertools.permutations(rest):
            x, tot = lq[:, list(order)] - n2.unsqueeze(-1), lq.new_zeros(B)
            for _ in order:
                tot, x = tot + x[:, 0], x[:, 1:] - _log1mexp(x[:, :1])
            terms.append(tot)
        L2[:, i, j] = L2[:, j, i] = torch.stack(terms, -1).logsumexp(-1)
    eye = torch.eye(k, dtype=torch.bool)
    log_P1 = (lq.unsqueeze(1) - _log1mexp(lq).unsqueeze(-1) + L2).masked_fill(eye, -math.inf).logsumexp(-1)
    log_P = (lq + log_P1).logsumexp(-1, keepdim=True)
    exact = lq.logsumexp(-1, keepdim=True) > -1e-5
    log_R1 = (log_P1 - log_P).masked_fill(exact, 0.0)
    log_R2 = (L2 - log_P1.unsqueeze(-1)).masked_fill(eye, 0.0).masked_fill(exact.unsqueeze(-1), 0.0)
    return log_R1, log_R2


def unordered_set(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    logp = logits.log_softmax(-1)
    with torch.no_grad():
        z = F.one_hot(_beam(logp.detach(), s.S), logits.shape[-1]).float()   # (k, B, D, K)
    fz = s.model.f(s.x, logits)(z)                                           # (k, B)
    logq = (z * logp).sum((-1, -2))
    with torch.no_grad():
        lq = logq.T
        log_R1, log_R2 = _ratios(lq)
        w = (lq + log_R1).exp().T
        adv = fz.T - ((lq.unsqueeze(1) + log_R2).exp() * fz.T.unsqueeze(1)).sum(-1)
    surr = (w * (fz + adv.T * (logq - logq.detach()))).sum(0)
    return finish(s, -surr.mean())


def double_cv(s: State) -> Tensor:
    """The authors' `double_cv` (slope: leave-one-out mean of grad f at the draws)."""
    logits = s.model.logits(s.x)
    logp, p = logits.log_softmax(-1), logits.softmax(-1)
    z = sample(logp, s.S).requires_grad_()                                  # (S, B, D, K)
    fz = s.model.f(s.x, logits)(z)                                          # (S, B)
    (g,) = torch.autograd.grad(fz.sum(), z, retain_graph=True)
    loo = lambda v: (v.sum(0) - v) / (s.S - 1)                              # noqa: E731
    slope, dz, pd = loo(g), z.detach() - p.detach(), p.detach()
    h = (slope * dz).sum((-1, -2))
    fd = fz.detach()
    adv_f, adv_h = fd - loo(fd), h - loo(h)
    jac = (pd * (slope - (pd * slope).sum(-1, keepdim=True))).mean(0)
    a = s.alpha.detach()
    logq = (z.detach() * logp).sum((-1, -2))
    surr = fz.mean(0) + ((adv_f - a * adv_h) * (logq - logq.detach())).mean(0) \
        + (a * slope.mean(0) * (p - pd)).sum((-1, -2))
    g0 = (adv_f[..., None, None] * dz).mean(0)
    g1 = jac - (adv_h[..., None, None] * dz).mean(0)
    aux = ((g0 + s.alpha * g1) ** 2).sum((-1, -2)).mean()
    return finish(s, -surr.mean(), aux)


def gst(s: State) -> Tensor:
    """The authors' `gst_mover` (Fan et al. 2022), GST-gap."""
    logits = s.model.logits(s.x)
    lp = logits.detach()
    b = sample(lp.log_softmax(-1), s.S)
    top = lp.max(-1, keepdim=True).values
    move = (top - lp) * b - (lp - top + s.gap).clamp(min=0.0) * (1 - b)
    p = ((logits + move) / s.tau).softmax(-1)
    return finish(s, -s.model.f(s.x, logits)(b + p - p.detach()).mean())


def decoupled_st(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    x = perturb(logits.log_softmax(-1) / s.tau_f, s.S)
    y = F.softmax(x / s.tau_b, -1)
    return finish(s, -s.model.f(s.x, logits)(one_hot(x.detach()) + y - y.detach()).mean())
