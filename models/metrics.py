"""Collapse and latent-use metrics on posterior parameters: KL per variable,
active units (Burda et al. 2016), mutual information I(x; z), code-usage
perplexity, decoder sensitivity, strategy NMI (definitions on each function).

Pure functions of tensors, batch-first; `evaluate.py` wires them to a model.
All return Python floats or ints. Axis legend: B batch (the x's averaged
over), D latent variables, K categories, U units.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .latents import Latent

KL_THRESHOLD = 0.01    # nats; a variable below it counts as collapsed
AU_THRESHOLD = 0.01    # Burda et al. 2016


def _entropy(p: Tensor, dim: int = -1) -> Tensor:
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(dim)


def kl_per_variable(latent: Latent, q: Tensor, p: Tensor) -> Tensor:
    """E_x KL(q(z_d | x) || p(z_d)): (D,)."""
    return latent.kl(q, p).mean(0)


def kl_summary(kl_d: Tensor, threshold: float = KL_THRESHOLD) -> dict[str, float]:
    """min and mean over variables, and how many fall below `threshold` nats."""
    return {"min": float(kl_d.min()), "mean": float(kl_d.mean()),
            "below": float((kl_d < threshold).sum())}


def active_units(mean: Tensor, threshold: float = AU_THRESHOLD) -> int:
    """A = sum_u 1[Cov_x(E_q[z_u]) > threshold] (Burda et al. 2016).

    mean: E_q[z] per example, (B, D) for a Gaussian, or (B, D, K) = q itself
    for categorical codes, where a unit is a (variable, category) pair.
    """
    var = mean.reshape(mean.shape[0], -1).var(0)                       # (U,)
    return int((var > threshold).sum())


def mutual_info_categorical(logits: Tensor) -> float:
    """I(x; z) = sum_d [H(mean_x q_d) - mean_x H(q_d)], exact per variable
    (a sum over variables: exact for the factorised code's marginals)."""
    q = logits.softmax(-1)                                              # (B, D, K)
    return float((_entropy(q.mean(0)) - _entropy(q).mean(0)).sum())


def mutual_info_gaussian(params: Tensor, generator: Optional[torch.Generator] = None,
                         chunk_elems: int = 1 << 22) -> float:
    """Minibatch estimate of I(x; z) (Hoffman & Johnson 2016), as in He et al. 2019:
    E_x[-H(q(z|x))] - E_x E_{z~q(z|x)}[log q(z)], with q(z) ~ mean over the batch of
    q(z | x_j). Bounded above by log B."""
    B, D = params.shape[:2]
    mean, log_std = params.unbind(-1)                                   # (B, D)
    neg_entropy = (-0.5 * D * math.log(2 * math.pi) - (0.5 + log_std).sum(-1)).mean()
    z = mean + log_std.exp() * torch.randn(mean.shape, generator=generator,
                                           dtype=mean.dtype, device=mean.device)
    step = max(1, chunk_elems // (B * D))
    log_qz = []
    for i in range(0, B, step):                # chunks of z keep (chunk, B, D) in memory
        dev = (z[i:i + step, None] - mean[None]) / log_std.exp()[None]  # (c, B, D)
        log_dens = (-0.5 * dev ** 2 - log_std[None] - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_qz.append(torch.logsumexp(log_dens, 1) - math.log(B))       # (c,)
    return float(neg_entropy - torch.cat(log_qz).mean())


def code_perplexity(logits: Tensor) -> float:
    """mean_d exp(H(mean_x q_d)): how many codes per variable are in use (at most K)."""
    return float(_entropy(logits.softmax(-1).mean(0)).exp().mean())


def joint_codes(logits: Tensor) -> Tensor:
    """argmax per variable combined into one integer code (mixed radix): (B,) long."""
    idx = logits.argmax(-1)                                             # (B, D)
    K = logits.shape[-1]
    weights = K ** torch.arange(idx.shape[1] - 1, -1, -1, device=idx.device)
    return (idx * weights).sum(-1)


def nmi(a: Tensor, b: Tensor) -> float:
    """Normalised mutual information with arithmetic-mean normalisation (sklearn's
    default): I(a; b) / ((H(a) + H(b)) / 2); 1 when both labelings are constant."""
    a_ids = np.unique(a.cpu().numpy(), return_inverse=True)[1].reshape(-1)
    b_ids = np.unique(b.cpu().numpy(), return_inverse=True)[1].reshape(-1)
    joint = np.zeros((a_ids.max() + 1, b_ids.max() + 1))
    np.add.at(joint, (a_ids, b_ids), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    h = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())
    ha, hb = h(pa), h(pb)
    if ha == 0 and hb == 0:
        return 1.0
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    return max(0.0, mi / ((ha + hb) / 2))


def decoder_sensitivity(ll_posterior: Tensor, ll_prior: Tensor) -> float:
    """mean |log p(x | z_q, c) - log p(x | z_p, c)|, z_q ~ q(z | x, c), z_p ~ p(z | c):
    nats per example; near zero means the decoder ignores z."""
    return float((ll_posterior - ll_prior).abs().mean())
