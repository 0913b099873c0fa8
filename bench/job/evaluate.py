"""Evaluation at fixed parameters: what `bench.job.train` logs every `train.eval_every` steps.

    ev = Evaluator(cfg, task, model, est, lam, mode)
    ev(step, beta) -> {"val/elbo": ..., "grad/log10_var": ..., "collapse/...": ...}

- val/*, collapse/*, latent/*   `models.evaluate` on the first `eval.batch_size`
              validation examples, model in eval mode (no latent dropout):
              val/recon, val/kl (analytic), val/elbo = recon - kl, val/iwae with
              S = `eval.iwae_samples`; collapse metrics (models.metrics);
              latent/strategy_nmi on `strategies`. Toy: val/elbo = E f exactly.
- grad/*      `estimators.gradient_stats` of the training objective on a fixed
              training minibatch, over the encoder's parameters: log10_var, snr,
              seconds_per_estimate; bias and cosine against exact enumeration
              when the latent is categorical, the target an expectation and
              K^D <= eval.exact_max_configs. A deterministic estimator (its
              class says so) logs bias 0 and cosine 1 instead of a variance of 0.

Randomness: all of it runs inside `torch.random.fork_rng`, so evaluating
(or not) never changes the training trajectory of a seed.
"""
from __future__ import annotations

import torch

import estimators
import models
from estimators.exact import Exact
from .objective import objective


def _first(batch, n: int):
    return batch.index(torch.arange(min(n, batch.size), device=batch.c.device))


class Evaluator:
    def __init__(self, cfg, task, model, est, lam: float, mode: str):
        self.cfg, self.task, self.model, self.est = cfg, task, model, est
        self.lam, self.mode = lam, mode
        self.val = _first(task.split("val"), cfg.eval.batch_size)
        g = task.generator(cfg.seed + 7919)           # a fixed minibatch for grad stats
        self.gbatch = task.sample("train", cfg.eval.grad_batch_size, g)
        self.params = list(model.posterior_parameter_names())   # q(z|x,c)'s parameters
        lat = model.latent
        enumerable = (lat.estimator_kind == "categorical" and est.target == "expectation"
                      and lat.K ** lat.D <= cfg.eval.exact_max_configs)
        self.exact = Exact(max_configs=cfg.eval.exact_max_configs) \
            if enumerable and not est.deterministic else None
        self.exact_is_self = enumerable and est.deterministic
        self.device = next(model.parameters()).device

    def __call__(self, step: int, beta: float) -> dict[str, float]:
        devices = [self.device] if self.device.type == "cuda" else []
        out: dict[str, float] = {}
        was = self.model.training, self.est.training
        self.model.eval()
        self.est.eval()             # no EMA/baseline updates while measuring
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.cfg.seed * 1_000_003 + step)
                out.update(self.metrics())
                if self.cfg.eval.grad_stats:
                    out.update(self.grad_stats(beta))
        finally:
            self.model.train(was[0])
            self.est.train(was[1])
        return out

    def metrics(self) -> dict[str, float]:
        """val/*, collapse/*, latent/* from models.evaluate (one source of truth
        for the definitions)."""
        out = models.evaluate(self.model, self.val, n_iw=self.cfg.eval.iwae_samples)
        return {k: float(v) for k, v in out.items()}

    def grad_stats(self, beta: float) -> dict[str, float]:
        m, est, b = self.model, self.est, self.gbatch
        lam, mode = self.lam, self.mode
        loss = lambda e: (lambda: objective(m, e, b, beta, lam, mode).loss)  # noqa: E731
        exact_fn = loss(self.exact) if self.exact is not None else None
        n = self.cfg.eval.grad_samples     # one vmap chunk: fewest passes for small models
        stats = estimators.gradient_stats(m, loss(est), params=self.params, n=n,
                                          exact_fn=exact_fn, chunk=n)
        out = stats.metrics()
        if self.exact_is_self:
            # zero variance and zero bias by construction: a log10 of 0 and an
            # SNR of x/0 would only put -300 and 1e30 into the tables
            out = {"grad/seconds_per_estimate": out["grad/seconds_per_estimate"],
                   "grad/bias": 0.0, "grad/cosine": 1.0}
        return out
