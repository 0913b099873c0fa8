"""Sampling helpers shared by the categorical estimators.

Axis legend: S samples, B batch, D latent variables, K categories.
All noise comes from torch's global generator (seed it for reproducibility).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def uniform(shape, like: Tensor) -> Tensor:
    """U(0, 1) strictly inside the interval, so logs of it and of 1 - u stay finite."""
    tiny = torch.finfo(like.dtype).tiny
    u = torch.rand(shape, dtype=like.dtype, device=like.device)
    return u.clamp(tiny, 1.0 - torch.finfo(like.dtype).eps)


def gumbel(shape, like: Tensor) -> Tensor:
    return -torch.log(-torch.log(uniform(shape, like)))


# Two categories (a Bernoulli) take closed forms over the logit difference: torch's
# softmax, log_softmax and argmax over a last axis of 2 run a slow per-row path on
# CPU (log_softmax of (50, 200, 2): ~220 us against ~75 us; argmax one-hot ~300
# against ~105). K > 2 keeps torch's own ops, bit for bit.

def log_softmax(x: Tensor) -> Tensor:
    """log_softmax over the last axis; for K = 2, log sigmoid of the logit difference."""
    if x.shape[-1] == 2:
        return -F.softplus(x.flip(-1) - x, threshold=50.0)   # exact in float64 too
    return x.log_softmax(-1)


def softmax(x: Tensor) -> Tensor:
    """softmax over the last axis; for K = 2, sigmoid of the logit difference."""
    if x.shape[-1] == 2:
        return torch.sigmoid(x - x.flip(-1))
    return x.softmax(-1)


def perturbed(logits: Tensor, S: int, logp: Tensor | None = None) -> Tensor:
    """Gumbel-perturbed log-probabilities z = log p + g: (S, B, D, K).
    argmax z ~ Cat(p) (Gumbel-max), and softmax(z / tau) is the Concrete sample.
    `logp`: logits.log_softmax(-1) when the caller has one (one backward node)."""
    logp = log_softmax(logits) if logp is None else logp
    return logp + gumbel((S, *logits.shape), logits)


def one_hot_argmax(z: Tensor) -> Tensor:
    """(…, K) -> one-hot float of the argmax, same dtype."""
    if z.shape[-1] == 2:            # ties go to category 0, as argmax's do
        b = z[..., 1] > z[..., 0]
        return torch.stack([~b, b], -1).to(z.dtype)
    # scatter rather than F.one_hot: no data-dependent size check, so vmap-able
    return torch.zeros_like(z).scatter(-1, z.argmax(-1, keepdim=True), 1.0)


def sample_one_hot(logits: Tensor, S: int, logp: Tensor | None = None) -> Tensor:
    """S one-hot draws from q: (S, B, D, K), no gradient. `logp`, the caller's
    logits.log_softmax(-1) when it needs one anyway, spares recomputing it
    (the same values: the same draws)."""
    with torch.no_grad():
        if logp is None:
            return one_hot_argmax(perturbed(logits, S))
        return one_hot_argmax(logp + gumbel((S, *logp.shape), logp))


def sample_scored(logits: Tensor, S: int) -> tuple[Tensor, Tensor]:
    """(logp, z): the log-probabilities (B, D, K) and S one-hot draws (S, B, D, K)
    from them; the score estimators take log q(z) = log_prob_from(logp, z)."""
    logp = log_softmax(logits)
    return logp, sample_one_hot(logits, S, logp)


def log_prob(logits: Tensor, b: Tensor) -> Tensor:
    """log q(b) summed over variables: logits (B, D, K), b (S, B, D, K) -> (S, B)."""
    return log_prob_from(log_softmax(logits), b)


def log_prob_from(logp: Tensor, b: Tensor) -> Tensor:
    """`log_prob` given logp = logits.log_softmax(-1) (B, D, K)."""
    return (b * logp).sum((-1, -2))


def conditional_perturbed(logits: Tensor, b: Tensor, logp: Tensor | None = None) -> Tensor:
    """z~ ~ p(z | argmax z = b), reparameterised in the logits (Tucker et al. 2017, app. C).

    With log p normalised, the maximum of log p + g is itself a standard Gumbel
    -log(-log v_b); every other coordinate is a Gumbel with location log p_k
    truncated below it: -log(-log v_k / p_k - log v_b).  Returns (S, B, D, K).
    `logp`: logits.log_softmax(-1) when the caller has one (the gradient then
    flows through the caller's node, not a node of its own).
    """
    if logp is None:
        logp = log_softmax(logits)                       # (B, D, K)
    v = uniform(b.shape, logits)                         # (S, B, D, K)
    log_v = v.log()
    log_vb = (b * log_v).sum(-1, keepdim=True)           # (S, B, D, 1)
    top = -torch.log(-log_vb)                            # the max coordinate
    rest = -torch.log(-log_v * torch.exp(-logp) - log_vb)
    return b * top + (1 - b) * rest


def relaxed(z: Tensor, tau: Tensor | float) -> Tensor:
    """Concrete relaxation softmax(z / tau), computed in log space so small
    temperatures saturate to one-hot instead of producing NaN."""
    return log_softmax(z / tau).exp()


def relaxed_muprop(z: Tensor, logits: Tensor, tau: Tensor | float,
                   logp: Tensor | None = None) -> Tensor:
    """The MuProp-shifted relaxation softmax(z / tau + tau / (tau + 1) * log p)
    of the official REBAR code (Tucker et al. 2017, `muprop_relaxation`):
    z (S, B, D, K) = log p + Gumbel noise, logits (B, D, K) -> (S, B, D, K).

    It interpolates between the hard sample (tau -> 0) and the mean p, the
    point MuProp (Gu et al. 2016) expands f around (tau -> inf). For K = 2 it
    is the Bernoulli sigmoid(x / tau + tau / (tau + 1) * theta) with
    x = theta + logistic noise, theta = logit p_1 - logit p_0."""
    logp = log_softmax(logits) if logp is None else logp      # (B, D, K)
    return log_softmax(z / tau + tau / (tau + 1) * logp).exp()
