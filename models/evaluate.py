"""`evaluate(model, batch, n_iw=...)`: the bound, the KL and every
collapse / latent-use metric (models.metrics) for one batch.

    metrics = models.evaluate(model, task.split("val"), n_iw=64)
    # {"val/elbo": ..., "collapse/active_units": ..., ...}

Keys (those that do not apply to a model are absent):
    val/elbo, val/recon, val/kl          ELBO = recon - KL; recon a Monte Carlo mean
                                         over `n_samples` draws, KL analytic, per example
    val/iwae                             importance-weighted bound, n_iw samples (Burda et al. 2016)
    collapse/kl_min, kl_mean, kl_below_0.01   E_x KL per latent variable
    collapse/active_units                Burda et al. 2016 (categorical: (variable, category) units)
    collapse/mutual_info                 I(x; z), exact (categorical) or minibatch (Gaussian)
    collapse/code_perplexity             categorical only
    collapse/decoder_sensitivity         |Δ log p(x | z, c)| when z ~ q is redrawn from the prior
    latent/strategy_nmi                  `strategies` only (batch.truth set), categorical only
The toy model (no prior, `exact_objective`) reports val/elbo = E f exactly.

`single_sample_elbo(model, batch)`: the measure REBAR, RELAX and DisARM report
on the training set, mean_x [log p(x|z,c) + log p(z|c) - log q(z|x,c)] with one
z ~ q(z|x,c) per example (the KL sampled, as in their f).

Runs under torch.no_grad in eval mode (so no latent dropout) and restores the
model's mode afterwards. Noise comes from `generator` (device of the batch) or
the global RNG.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from estimators.base import call_in_chunks

from . import metrics
from .data import Batch


def _log_likelihood(model, batch: Batch, z: Tensor, max_rows: int) -> Tensor:
    """log p(x | z, c) in chunks of samples so S * B rows never exceed max_rows. (S, B)"""
    return call_in_chunks(lambda part: model.log_likelihood(batch, part), z, max_rows)


def evaluate(model, batch: Batch, n_iw: int = 64, n_samples: int = 1,
             generator: Optional[torch.Generator] = None, max_rows: int = 16384) -> dict[str, float]:
    """The evaluation metrics of `model` on `batch` (see the module docstring)."""
    if n_iw < 1 or n_samples < 1:
        raise ValueError(f"n_iw={n_iw!r} and n_samples={n_samples!r} must be >= 1")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _evaluate(model, batch, n_iw, n_samples, generator, max_rows)
    finally:
        model.train(was_training)


def single_sample_elbo(model, batch: Batch, generator: Optional[torch.Generator] = None,
                       rows: int = 4096) -> float:
    """The papers' training ELBO of `model` on `batch` (module docstring), in
    chunks of `rows` examples; eval mode, no gradient."""
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            lat = model.latent
            for start in range(0, batch.size, rows):
                part = batch.index(torch.arange(start, min(start + rows, batch.size),
                                                device=batch.c.device))
                q, p = model.posterior(part), model.prior(part)     # (b, D, K) | (b, D, 2)
                z = lat.sample(q, 1, generator)                      # (1, b, ...)
                f = model.log_likelihood(part, z)                    # (1, b)
                if p is not None:
                    f = f + lat.log_prob(p, z) - lat.log_prob(q, z)
                total += float(f.double().sum())
    finally:
        model.train(was_training)
    return total / batch.size


def _evaluate(model, batch, n_iw, n_samples, generator, max_rows) -> dict[str, float]:
    if hasattr(model, "exact_objective"):
        return {"val/elbo": float(model.exact_objective())}
    lat = model.latent
    categorical = lat.estimator_kind == "categorical"
    q = model.posterior(batch)                                          # (B, D, K) | (B, D, 2)
    p = model.prior(batch)
    out: dict[str, float] = {}

    z = lat.sample(q, n_samples, generator)                             # (S, B, ...)
    ll = _log_likelihood(model, batch, z, max_rows)                     # (S, B)
    kl = lat.kl(q, p) if p is not None else torch.zeros(q.shape[:2], dtype=q.dtype, device=q.device)
    out["val/recon"] = float(ll.mean())
    out["val/kl"] = float(kl.sum(-1).mean())
    out["val/elbo"] = out["val/recon"] - out["val/kl"]

    if p is not None:
        # importance weights in chunks of samples: only (n_iw, B) weights are kept
        step = max(1, max_rows // batch.size)
        log_w = []
        for i in range(0, n_iw, step):
            zi = lat.sample(q, min(step, n_iw - i), generator)
            log_w.append(model.log_likelihood(batch, zi) + lat.log_prob(p, zi) - lat.log_prob(q, zi))
        log_w = torch.cat(log_w)                                        # (n_iw, B)
        out["val/iwae"] = float((torch.logsumexp(log_w, 0) - math.log(n_iw)).mean())

    kl_d = metrics.kl_summary(kl.mean(0))
    out["collapse/kl_min"], out["collapse/kl_mean"] = kl_d["min"], kl_d["mean"]
    out["collapse/kl_below_0.01"] = kl_d["below"]
    out["collapse/active_units"] = float(metrics.active_units(lat.mean(q)))
    if categorical:
        out["collapse/mutual_info"] = metrics.mutual_info_categorical(q)
        out["collapse/code_perplexity"] = metrics.code_perplexity(q)
    else:
        out["collapse/mutual_info"] = metrics.mutual_info_gaussian(q, generator)

    if p is not None:
        zp = lat.sample(p.expand_as(q), 1, generator)
        out["collapse/decoder_sensitivity"] = metrics.decoder_sensitivity(
            ll[:1], _log_likelihood(model, batch, zp, max_rows))

    if batch.truth is not None and categorical:
        out["latent/strategy_nmi"] = metrics.nmi(batch.truth, metrics.joint_codes(q))
    return out
