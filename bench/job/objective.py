"""The training objective of one step: the estimator's surrogate for the
sampled term plus the analytic KL, weighted by beta(t) and clamped by free bits.

    obj = objective(model, est, batch, beta=1.0, free_bits=0.0, mode="batch")
    (obj.loss + obj.aux_loss).backward()       # aux_loss may be None

Estimators of an expectation (`Estimator.target == "expectation"`) get
f(z) = log p(x | z, c), and the
loss is  est.loss + beta * FB(KL(q(z|x,c) || p(z|c)))  with KL analytic per
latent variable (B, D). `obj.elbo` (B,) is the unweighted, unclamped
E log p(x|z,c) - KL, as estimated this step (for gumbel: at the relaxed sample).

Estimators of a multi-sample bound (`target == "bound"`: vimco) get f(z) = log p(x|z,c) + beta * (log p(z|c) - log q(z|x,c))
and no separate KL: at beta = 1 the target is the IWAE bound and `obj.elbo`
is that bound. Free bits are refused for them (`Estimator.free_bits`).

`sampled=True` (`kl.form=sampled`) gives estimators of an expectation the
same f: the single-sample ELBO with the KL sampled inside it, as REBAR, RELAX
and DisARM train their binary VAEs (their estimators see log p(x, b) - log q(b|x),
and its pathwise gradient through log q is part of the estimate); no separate
KL term, free bits refused (bench.config.validate). `obj.kl` stays the
analytic KL, for logging.

Models without a prior (`model.prior(batch) is None`, the toy) have no KL:
the estimator maximises E f directly.

Free bits, lambda in nats, kl (B, D) (implementations differ, so the mode is named):
    batch    sum_j max(lambda, mean_b kl_bj)   (Kingma et al. 2016)
    per_dim  mean_b sum_j max(lambda, kl_bj)
    total    mean_b max(lambda, sum_j kl_bj)
    none     mean_b sum_j kl_bj
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

def free_bits(kl: Tensor, lam: float, mode: str) -> Tensor:
    """The KL term to minimise: kl (B, D) -> scalar."""
    if mode == "none" or lam <= 0:
        return kl.sum(-1).mean()
    if mode == "batch":
        return kl.mean(0).clamp_min(lam).sum()
    if mode == "per_dim":
        return kl.clamp_min(lam).sum(-1).mean()
    if mode == "total":
        return kl.sum(-1).clamp_min(lam).mean()
    raise ValueError(f"kl.free_bits_mode={mode!r} is not valid; valid values: batch, none, per_dim, total")


@dataclass
class Objective:
    loss: Tensor                      # () minimise: surrogate + beta * KL term
    aux_loss: Optional[Tensor]        # () the estimator's own parameters only
    elbo: Tensor                      # (B,) detached
    kl: Tensor                        # (B,) detached KL(q || p), 0 without prior
    metrics: dict[str, Tensor] = field(default_factory=dict)


def objective(model, est, batch, beta: float, lam: float = 0.0, mode: str = "batch",
              sampled: bool = False) -> Objective:
    params = model.posterior(batch)               # (B, D, K) logits | (B, D, 2)
    prior = model.prior(batch)                    # broadcastable params | None
    if prior is not None and prior.dim() > 1 and prior.shape[0] > 1 and prior.stride(0) == 0:
        # one table expanded over the batch (a prior that ignores c): one row
        # broadcasts, so the KL's log-softmax and its backward run once, not B times
        prior = prior[:1]
    context = model.context(batch) if est.uses_context else None   # (B, C) detached
    latent = model.latent
    if est.target == "bound" or (sampled and prior is not None):
        def f(z: Tensor) -> Tensor:               # z (S, B, D, K) -> (S, B)
            ll = model.log_likelihood(batch, z)
            if prior is None:
                return ll
            return ll + beta * latent.log_ratio(prior, params, z)
        out = est(params, f, context)
        with torch.no_grad():                     # logged only: no graph
            kl = torch.zeros_like(out.value) if prior is None else latent.kl(params, prior).sum(-1)
        return Objective(out.loss, out.aux_loss, out.value, kl, out.metrics)

    f = lambda z: model.log_likelihood(batch, z)  # noqa: E731
    out = est(params, f, context)
    if prior is None:
        return Objective(out.loss, out.aux_loss, out.value, torch.zeros_like(out.value), out.metrics)
    kl = latent.kl(params, prior)                 # (B, D)
    loss = out.loss + beta * free_bits(kl, lam, mode)
    kl_b = kl.sum(-1).detach()
    return Objective(loss, out.aux_loss, out.value - kl_b, kl_b, out.metrics)
