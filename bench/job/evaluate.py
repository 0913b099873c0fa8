"""Evaluation at fixed parameters: what `bench.job.train` logs every `train.eval_every` steps.

    ev = Evaluator(cfg, task, model, est, lam, mode)
    ev(step, beta, final=False) -> {"val/elbo": ..., "grad/log10_var": ..., "collapse/...": ...}

- val/*, collapse/*, latent/*   `models.evaluate` on the first `eval.batch_size`
              examples of `eval.split` (val, the default, or test; an
              eval.batch_size >= the split's size takes all of it), model
              in eval mode (no latent dropout):
              val/recon, val/kl (analytic), val/elbo = recon - kl, val/iwae with
              S = `eval.iwae_samples`; collapse metrics (models.metrics);
              latent/strategy_nmi on `strategies`. Toy: val/elbo = E f exactly.
- trainset/elbo  with `eval.train_elbo_size` = N > 0: the single-sample ELBO
              (KL sampled; `models.evaluate.single_sample_elbo`) on the first N
              images of the training split, one fixed binarisation: the measure
              REBAR, RELAX and DisARM report, beside the held-out bound.
- grad/*      `estimators.gradient_stats` of the training objective on a fixed
              training minibatch, over the encoder's parameters: log10_var, snr,
              seconds_per_estimate; bias and cosine against exact enumeration
              when the latent is categorical, the target an expectation and
              K^D <= eval.exact_max_configs (on a CPU in calls of EXACT_ROWS
              decoder rows, the same sum). A deterministic estimator (its
              class says so) logs bias 0 and cosine 1 instead of a variance of 0.
- gen/*       image tasks with `eval.samples=true` (any image family and
              conditioning type): gen/class_accuracy, the fraction of
              `eval.samples_per_class` prior samples per class that a classifier
              trained on the real training split labels as the requested class,
              and gen/classifier_accuracy, that classifier's held-out accuracy
              (the ceiling); models.adherence (cached on disk). The same
              evaluation writes PNG grids (class samples, fix z vary the class,
              reconstructions; models.samples) to a temporary folder and hands
              each to `artifact(path, "samples")` (MLflow log_artifact in a job).
              The final evaluation (`final=True`, the run's last step) adds the
              tutorial's pictures (models.pictures: interpolation within a
              class, class blending, a t-SNE of the posterior means of the
              first `eval.tsne_points` images of eval.split), written once
              because the t-SNE alone costs seconds.

Precision: plain fp32 whatever train.precision, TF32 included
(bench.job.accel.plain_fp32).

Randomness: all of it runs inside `torch.random.fork_rng`, so evaluating
(or not) never changes the training trajectory of a seed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

import estimators
import models
from estimators.exact import Exact
from models import adherence, pictures, samples
from models.evaluate import single_sample_elbo
from .accel import plain_fp32
from .objective import objective

# decoder rows the gradient-statistics estimates may run in one vmap chunk
GRAD_ROWS = 2 ** 16
# decoder rows of one call of f in the exact reference on a CPU (estimators.exact)
EXACT_ROWS = 2048


def _first(batch, n: int):
    return batch.index(torch.arange(min(n, batch.size), device=batch.c.device))


class Evaluator:
    def __init__(self, cfg, task, model, est, lam: float, mode: str,
                 artifact: Optional[Callable[[Path, str], None]] = None):
        self.cfg, self.task, self.model, self.est = cfg, task, model, est
        self.artifact = artifact
        # opt-in, so the final metrics of existing image runs keep their keys
        self.samples = cfg.eval.samples and task.family == "image"
        self.classifier = None          # loaded at the first evaluation that needs it
        self.lam, self.mode = lam, mode
        # eval.split (val | test); the keys stay val/* so curves and tables read one name
        self.val = _first(task.split(cfg.eval.split), cfg.eval.batch_size)
        n_train = cfg.eval.get("train_elbo_size", 0)
        self.trainset = _first(task.split("train"), n_train) if n_train > 0 else None
        g = task.generator(cfg.seed + 7919)           # a fixed minibatch for grad stats
        self.gbatch = task.sample("train", cfg.eval.grad_batch_size, g)
        self.params = list(model.posterior_parameter_names())   # q(z|x,c)'s parameters
        lat = model.latent
        enumerable = (lat.estimator_kind == "categorical" and est.target == "expectation"
                      and lat.K ** lat.D <= cfg.eval.exact_max_configs)
        self.device = next(model.parameters()).device
        rows = EXACT_ROWS if self.device.type == "cpu" else None    # a GPU takes one call
        self.exact = Exact(max_configs=cfg.eval.exact_max_configs, rows_per_call=rows) \
            if enumerable and not est.deterministic else None
        self.exact_is_self = enumerable and est.deterministic

    def __call__(self, step: int, beta: float, final: bool = False) -> dict[str, float]:
        devices = [self.device] if self.device.type == "cuda" else []
        out: dict[str, float] = {}
        was = self.model.training, self.est.training
        self.model.eval()
        self.est.eval()             # no EMA/baseline updates while measuring
        try:
            # TF32 is process-global (bench.job.accel): a tf32 run switched it on
            with torch.random.fork_rng(devices=devices), plain_fp32():
                torch.manual_seed(self.cfg.seed * 1_000_003 + step)
                out.update(self.metrics())
                if self.cfg.eval.grad_stats:
                    out.update(self.grad_stats(beta))
                if self.samples:
                    out.update(self.generated(step, final))
        finally:
            self.model.train(was[0])
            self.est.train(was[1])
        return out

    def metrics(self) -> dict[str, float]:
        """val/*, collapse/*, latent/* from models.evaluate (one source of truth
        for the definitions)."""
        out = models.evaluate(self.model, self.val, n_iw=self.cfg.eval.iwae_samples)
        if self.trainset is not None:
            out["trainset/elbo"] = single_sample_elbo(self.model, self.trainset)
        return {k: float(v) for k, v in out.items()}

    def generated(self, step: int, final: bool = False) -> dict[str, float]:
        """gen/* and the sample grids (module docstring). Their own seed: turning
        them on or off changes no other metric, and they do not depend on grad_stats."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed * 1_000_003 + step + 104_729)
            return self._generated(step, final)

    def _generated(self, step: int, final: bool) -> dict[str, float]:
        e = self.cfg.eval
        if self.classifier is None:
            settings = adherence.ClassifierSettings(steps=e.classifier_steps, seed=self.cfg.seed)
            self.classifier = adherence.load_classifier(self.task, seed=self.cfg.seed, settings=settings)
        out = {"gen/class_accuracy": adherence.class_accuracy(self.model, self.classifier,
                                                              e.samples_per_class),
               "gen/classifier_accuracy": self.classifier.accuracy}
        if self.artifact is not None:
            with tempfile.TemporaryDirectory() as folder:
                paths = samples.write_grids(self.model, self.val, Path(folder), step,
                                            n=e.samples_per_class)
                if final:
                    tsne = _first(self.task.split(self.cfg.eval.split), e.tsne_points)
                    paths += pictures.write_pictures(self.model, self.val, tsne, Path(folder), step,
                                                     n=e.samples_per_class, seed=self.cfg.seed)
                for path in paths:
                    self.artifact(path, "samples")
        return out

    def grad_stats(self, beta: float) -> dict[str, float]:
        m, est, b = self.model, self.est, self.gbatch
        lam, mode, sampled = self.lam, self.mode, self.cfg.kl.form == "sampled"
        loss = lambda e: (lambda: objective(m, e, b, beta, lam, mode, sampled).loss)  # noqa: E731
        exact_fn = loss(self.exact) if self.exact is not None else None
        n = self.cfg.eval.grad_samples
        # one vmap chunk (fewest passes) unless the estimates together would run
        # more than GRAD_ROWS decoder rows at once: indecater on 200 Bernoulli
        # latents evaluates f 400 times per example, ~0.8 GB per estimate
        lat = m.latent
        rows = est.f_evaluations(lat.D, getattr(lat, "K", 1)) * len(b.x)
        chunk = max(1, min(n, GRAD_ROWS // max(rows, 1)))
        stats = estimators.gradient_stats(m, loss(est), params=self.params, n=n,
                                          exact_fn=exact_fn, chunk=chunk)
        out = stats.metrics()
        if self.exact_is_self:
            # zero variance and zero bias by construction: a log10 of 0 and an
            # SNR of x/0 would only put -300 and 1e30 into the tables
            out = {"grad/seconds_per_estimate": out["grad/seconds_per_estimate"],
                   "grad/bias": 0.0, "grad/cosine": 1.0}
        return out
