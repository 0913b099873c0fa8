"""Analytic KL divergences of the discrete latents against a prior, per
variable: the closed-form KL term of an ELBO whose reconstruction term an
estimator differentiates (Kingma & Welling 2014, eq. 10, with the
categorical's and the Bernoulli's own closed forms).

    kl_categorical(logits, prior_logits=None)  logits (B, D, K) -> (B, D)
    kl_bernoulli(logits, prior_logits=None)    logits (B, D), one per variable -> (B, D)

`prior_logits=None` is the uniform prior (all categories 1 / K; p = 1/2);
given prior logits broadcast against `logits` ((D, K), (1, D, K), or (D,)
for the Bernoulli: a learned prior). Gradients flow to both arguments. The
models' latent types use these same functions (models.latents), so a library
user's KL and the harness's are one implementation.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .sampling import log_softmax


def kl_categorical(logits: Tensor, prior_logits: Optional[Tensor] = None) -> Tensor:
    """KL(Cat(softmax(logits)) || Cat(softmax(prior_logits))) over the last
    axis: (B, D, K) -> (B, D); the uniform prior where prior_logits is None."""
    if prior_logits is None:
        prior_logits = logits.new_zeros(logits.shape[-1])             # (K,): uniform
    logq, logp = log_softmax(logits), log_softmax(prior_logits)       # (B, D, K)
    return (logq.exp() * (logq - logp)).sum(-1)                       # (B, D)


def kl_bernoulli(logits: Tensor, prior_logits: Optional[Tensor] = None) -> Tensor:
    """KL(Bern(sigmoid(a)) || Bern(sigmoid(b))) elementwise, a = logits (B, D),
    b = prior_logits (0, p = 1/2, where None): (B, D)."""
    a = logits
    b = a.new_zeros(()) if prior_logits is None else prior_logits
    # s(a) (a - b) + log s(-a) - log s(-b), with log s(-x) = -softplus(x)
    return torch.sigmoid(a) * (a - b) - F.softplus(a) + F.softplus(b)
