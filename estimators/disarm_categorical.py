"""DisARM for categorical latents (K > 2): the importance-weighted
stick-breaking coupling, "DisARM-IW" of Dong, Mnih & Tucker (NeurIPS 2021,
"Coupled gradient estimators for discrete latent variables"). `disarm` calls
this for K > 2; for K = 2 it is in distribution the binary DisARM.

Stick breaking: with the categories ranked by ascending logit, category r is
drawn as the first r with b_r = 1, b_r ~ Bern(sigma(a_r)),

    a_r = l_(r) - logsumexp(l_(r+1), ..., l_(K-1)),   r = 0 .. K-2

(sigma(a_r) = q_(r) / sum_{j >= r} q_(j); the last category when all are 0).
One uniform u_r per binary gives b_r = 1[u_r < sigma(a_r)] and the
antithetic b~_r = 1[1 - u_r < sigma(a_r)], hence the pair z, z~, each ~ q.

For z != z~, with m = min(rank z, rank z~), the pair's importance weight
q(z) q(z~) / P(z, z~) is

    w_m = prod_{r < m} (1 - sigma_r)^2 / (1 - 2 sigma_r) * sigma(|a_m|),

and the estimate of d E_q[f] / d logits[b, d] is

    1/2 w_m (f(z) - f(z~)) (e_z - e_z~)      (0 where z_d = z~_d),

the symmetrised score term of two independent draws, reweighted. It is
unbiased when every pair of distinct categories can be drawn together, i.e.
both binaries can be 0 before the pair splits: sigma_r < 1/2 for r < K - 2.
The ascending ranking guarantees it (sigma_r <= 1 / (K - r) <= 1/3): in
the logits' own order an early binary with sigma_r >= 1/2 would make some
pairs impossible and the estimate biased (the paper sorts the logits for
the same reason).

Axis legend: P pairs, B batch, D latent variables, K categories.
"""
from __future__ import annotations

import torch
from torch import Tensor


def stick_breaking_order(logits: Tensor) -> Tensor:
    """Categories by ascending logit: (B, D, K) long, order[..., r] = category."""
    return logits.argsort(-1)


def stick_logits(ranked: Tensor) -> Tensor:
    """a_r = l_(r) - logsumexp(l_(r+1:)): (B, D, K) ranked logits -> (B, D, K-1)."""
    tail = ranked.flip(-1).logcumsumexp(-1).flip(-1)           # logsumexp(l_(r:))
    return ranked[..., :-1] - tail[..., 1:]


def pair_weights(a: Tensor) -> Tensor:
    """w_m for m = 0 .. K-2, the rank where a differing pair splits: (B, D, K-1)."""
    s = torch.sigmoid(a)
    # both binaries 0 at r: used for r < m <= K-2 only, where sigma_r <= 1/3
    both_zero = (1 - s[..., :-1]) ** 2 / (1 - 2 * s[..., :-1])
    before = torch.cat([torch.ones_like(s[..., :1]), both_zero.cumprod(-1)], -1)
    return before * torch.sigmoid(a.abs())


def coupled_pairs(logits: Tensor, P: int, uniform) -> tuple[Tensor, Tensor, Tensor]:
    """P antithetic pairs per variable and their coefficients, no gradient:
    (z, z~) as category indices (P, B, D) each, and 1/2 w_m 1[z != z~] (P, B, D)."""
    with torch.no_grad():
        order = stick_breaking_order(logits)                    # (B, D, K)
        a = stick_logits(logits.gather(-1, order))              # (B, D, K-1)
        s = torch.sigmoid(a)
        u = uniform((P, *a.shape), a)                           # (P, B, D, K-1)
        ones = torch.ones_like(u[..., :1])
        # rank = the first binary that is 1 (argmax returns the first maximum)
        rank = torch.cat([(u < s).to(a.dtype), ones], -1).argmax(-1)       # (P, B, D)
        rank_t = torch.cat([(1 - u < s).to(a.dtype), ones], -1).argmax(-1)
        split = torch.minimum(rank, rank_t).clamp_max(a.shape[-1] - 1)
        w = pair_weights(a).expand(P, *a.shape).gather(-1, split.unsqueeze(-1)).squeeze(-1)
        coef = 0.5 * w * (rank != rank_t).to(a.dtype)           # (P, B, D)
        by_rank = order.expand(P, *order.shape)
        z = by_rank.gather(-1, rank.unsqueeze(-1)).squeeze(-1)
        zt = by_rank.gather(-1, rank_t.unsqueeze(-1)).squeeze(-1)
        return z, zt, coef
