"""`unordered_set`: the unordered set estimator with its built-in baseline
(Kool, van Hoof & Welling, ICLR 2020, "Estimating gradients for discrete
random variables by sampling without replacement").

What is sampled. The latent of example b is one outcome s = (s_1, ..., s_D)
of the joint q_b(s) = prod_d Cat(s_d; softmax(logits[b, d])), K^D outcomes.
We draw k = n_samples DISTINCT joint outcomes S^k without replacement from
that joint, as the paper does for its categorical VAE (20 variables of 10
categories): Gumbel-top-k over the product space, computed exactly and
cheaply by stochastic beam search (Kool, van Hoof & Welling, ICML 2019).
Beam search walks the variables in order and keeps the k prefixes with the
largest perturbed log-probability, each child's Gumbel conditioned on its
parent's (`_shift_gumbel`), so that the k leaves it returns are exactly the
top k of {log q(s) + G_s} over all K^D outcomes: a sample without
replacement from q. Sampling without replacement per variable would NOT do:
the k points would then not be a without-replacement sample of the joint,
and the estimator below would be biased for any f that does not decompose
over the variables. The joint scheme is unbiased for any f of all D
variables; its cost is D sequential steps of (B, k K) work, f is evaluated
on k points.

The estimator (paper, eq. for e^{USBL}): with p(s) = q(s) the joint
probability, P(S) the probability of the unordered set and P^{D\\s} the
distribution with s removed and renormalised,

    grad E_q[f] ~ sum_{s in S} p(s) R(S, s) [grad f(s)
                      + grad log p(s) (f(s) - sum_{s' in S} p(s') R^{D\\s}(S, s') f(s'))]

    R(S, s)          = P^{D\\s}(S \\ {s}) / P(S)
    R^{D\\s}(S, s')   = P^{D\\{s,s'}}(S \\ {s, s'}) / P^{D\\s}(S \\ {s})   (s' != s),  1 (s' = s)

as in the authors' code (`compute_log_R_O_nfac`): every P(.) of a set of
at most k elements is a sum over its orderings of Plackett-Luce products,
computed in log space from the k sampled joint log-probabilities only. The
(k-2)! orderings per pair make this exact but factorial in k, hence
n_samples <= 8. The value (the estimate of E f, also the weights of the
pathwise term) is sum_s p(s) R(S, s) f(s). Where the k outcomes hold all
but 1e-5 of the mass the ratios are numerically 0/0; there, as in the
authors' code, R = 1 (the exact sum over the support).

Axis legend: S = k points, B batch, D latent variables, K categories.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import gumbel, log_prob_from, log_softmax

MAX_SAMPLES = 8          # (k-2)! orderings per pair of the set: exact, factorial


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _shift_gumbel(g_phi: Tensor, top: Tensor) -> Tensor:
    """Gumbels g_phi (..., K) shifted so that their maximum becomes `top` (...),
    keeping them Gumbels conditioned on that maximum (stochastic beam search,
    the numerically stable form of -log(exp(-top) - exp(-Z) + exp(-g)))."""
    Z = g_phi.max(-1, keepdim=True).values
    t = top.unsqueeze(-1)
    u = t - g_phi + log1mexp(g_phi - Z)
    return t - F.relu(u) - torch.log1p(torch.exp(-u.abs()))


def sample_without_replacement(logp: Tensor, k: int) -> Tensor:
    """k distinct joint outcomes per example, a Gumbel-top-k sample of
    prod_d Cat(exp logp[b, d]): logp (B, D, K) -> categories (k, B, D), long."""
    B, D, K = logp.shape
    with torch.no_grad():
        phi = logp.new_zeros(B, 1)                           # (B, m) prefix log-probs
        G = gumbel((B, 1), logp)                             # (B, m) their perturbed values
        choice = logp.new_zeros(B, 1, 0, dtype=torch.long)   # (B, m, d)
        for d in range(D):
            m = phi.shape[1]
            child = phi.unsqueeze(-1) + logp[:, d].unsqueeze(1)          # (B, m, K)
            g_child = _shift_gumbel(child + gumbel(child.shape, logp), G)  # (B, m, K)
            keep = min(k, m * K)
            G, idx = g_child.reshape(B, m * K).topk(keep, -1)            # (B, keep)
            parent, cat = idx // K, idx % K
            phi = child.reshape(B, m * K).gather(1, idx)
            choice = torch.cat([choice.gather(1, parent.unsqueeze(-1).expand(-1, -1, d)),
                                cat.unsqueeze(-1)], -1)                   # (B, keep, d+1)
        return choice.permute(1, 0, 2)                                    # (k, B, D)


def _log_plackett_luce(log_p: Tensor) -> Tensor:
    """log probability of drawing the last-axis elements in order, without
    replacement, from a distribution whose log-probs they are. (..., n) -> (...)"""
    total = log_p.new_zeros(log_p.shape[:-1])
    for _ in range(log_p.shape[-1]):
        first = log_p[..., :1]
        total = total + first[..., 0]
        log_p = log_p[..., 1:] - log1mexp(first)
    return total


def leave_out_ratios(log_p: Tensor, exact_above: float = -1e-5) -> tuple[Tensor, Tensor]:
    """log R(S, s) (B, k) and log R^{D\\s}(S, s') (B, k, k) from the k sampled
    joint log-probabilities log_p (B, k) (module docstring)."""
    B, k = log_p.shape
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    rest = [[list(r) for r in itertools.permutations([m for m in range(k) if m not in pr])]
            for pr in pairs]
    first = torch.tensor([i for i, _ in pairs], device=log_p.device)
    second = torch.tensor([j for _, j in pairs], device=log_p.device)
    rest = torch.tensor(rest, device=log_p.device, dtype=torch.long)     # (npair, nperm, k-2)
    norm1 = log1mexp(log_p[:, first])                                     # (B, npair)
    norm2 = norm1 + log1mexp(log_p[:, second] - norm1)
    log_rest = log_p[:, rest] - norm2[..., None, None]                    # (B, npair, nperm, k-2)
    log_P2 = _log_plackett_luce(log_rest).logsumexp(-1)                   # (B, npair)
    L2 = log_p.new_zeros(B, k, k)                                         # log P^{D\{i,j}}(S\{i,j})
    L2[:, first, second] = log_P2
    L2[:, second, first] = log_P2
    # P^{D\i}(S\i) = sum_{j != i} p^{D\i}(j) P^{D\{i,j}}(S\{i,j})
    off = ~torch.eye(k, dtype=torch.bool, device=log_p.device)
    terms = (log_p.unsqueeze(1) - log1mexp(log_p).unsqueeze(-1) + L2).masked_fill(~off, -math.inf)
    log_P1 = terms.logsumexp(-1)                                          # (B, k)
    log_P = (log_p + log_P1).logsumexp(-1, keepdim=True)                  # (B, 1)
    log_R1 = log_P1 - log_P
    log_R2 = (L2 - log_P1.unsqueeze(-1)).masked_fill(~off, 0.0)
    exact = (log_p.logsumexp(-1) > exact_above)[:, None]                  # (B, 1)
    return (log_R1.masked_fill(exact, 0.0),
            log_R2.masked_fill(exact.unsqueeze(-1), 0.0))


@register
class UnorderedSet(Estimator):
    """Unordered set estimator with built-in baseline (Kool et al., ICLR 2020),
    k joint samples without replacement by stochastic beam search."""

    name = "unordered_set"
    uses_context = False
    unbiased = True
    min_samples = 2                  # the built-in baseline needs another sample
    bf16_safe = False                # differences of f weighted by ratios of set probabilities

    def __init__(self, *, n_samples: int = 4):
        if isinstance(n_samples, int) and not isinstance(n_samples, bool) and n_samples > MAX_SAMPLES:
            raise ValueError(f"unordered_set: n_samples={n_samples!r} is not valid; it must be "
                             f"an integer in [2, {MAX_SAMPLES}] (the set probabilities are "
                             f"exact sums over orderings)")
        super().__init__(n_samples=n_samples)

    def check_latent(self, D: int, K: int) -> None:
        if D * math.log(K) < math.log(self.n_samples) - 1e-9:
            raise ValueError(f"unordered_set: n_samples={self.n_samples} distinct outcomes do not "
                             f"exist for latent.D={D}, latent.K={K} ({K ** D} outcomes); "
                             f"use n_samples <= {K ** D} or a larger latent")

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        self.check_latent(*logits.shape[1:])
        logp = log_softmax(logits)                                        # (B, D, K)
        cats = sample_without_replacement(logp.detach(), self.n_samples)  # (k, B, D)
        z = F.one_hot(cats, logits.shape[-1]).to(logits.dtype)            # (k, B, D, K)
        f_z = f(z)                                                        # (k, B)
        logq = log_prob_from(logp, z)                                     # (k, B)
        with torch.no_grad():
            lq = logq.detach().T                                          # (B, k)
            log_R1, log_R2 = leave_out_ratios(lq)
            w = (lq + log_R1).exp().T                                     # (k, B) p(s) R(S, s)
            fd = f_z.detach().T                                           # (B, k)
            baseline = ((lq.unsqueeze(1) + log_R2).exp() * fd.unsqueeze(1)).sum(-1)   # (B, k)
            adv = (fd - baseline).T                                       # (k, B)
        surr = (w * (f_z + adv * (logq - logq.detach()))).sum(0)          # (B,)
        return Estimate(loss=-surr.mean(), value=(w * f_z.detach()).sum(0))
