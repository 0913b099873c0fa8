"""Gradient statistics stay within memory for estimators that evaluate f many
times per example: the estimates run in vmap chunks of at most GRAD_ROWS
decoder rows (indecater on 200 Bernoulli latents: 400 rows per example)."""
from __future__ import annotations

import estimators
from bench.job import evaluate
from bench.job.train import Trainer
from tests.compose import compose_config

QUICK = ["device=cpu", "train.steps=1", "eval.batch_size=16", "eval.iwae_samples=2",
         "eval.grad_samples=8"]


def _chunk(monkeypatch, overrides) -> int:
    seen = {}
    real = estimators.gradient_stats

    def spy(*args, **kwargs):
        seen["chunk"] = kwargs["chunk"]
        return real(*args, **kwargs)

    t = Trainer(compose_config(QUICK + overrides), log=lambda step, m: None)
    monkeypatch.setattr(evaluate.estimators, "gradient_stats", spy)
    t.evaluator.grad_stats(beta=1.0)
    return seen["chunk"]


def test_many_evaluations_of_f_split_the_estimates(monkeypatch):
    # 40 latents of K=2: indecater evaluates f 80 times per example; 64 examples
    # -> 5,120 rows per estimate, so GRAD_ROWS = 2**16 allows 12 of 8 -> all 8 ...
    assert _chunk(monkeypatch, ["estimator=indecater", "latent.D=40", "latent.K=2",
                                "eval.grad_batch_size=64"]) == 8
    # ... and with GRAD_ROWS at 10,240 only 2 at a time
    monkeypatch.setattr(evaluate, "GRAD_ROWS", 10_240)
    assert _chunk(monkeypatch, ["estimator=indecater", "latent.D=40", "latent.K=2",
                                "eval.grad_batch_size=64"]) == 2


def test_cheap_estimators_keep_one_chunk(monkeypatch):
    monkeypatch.setattr(evaluate, "GRAD_ROWS", 10_240)
    assert _chunk(monkeypatch, ["estimator=gumbel", "eval.grad_batch_size=64"]) == 8
