"""Speed of one training step of the default models (pytest -m benchmark).

A step: draw a minibatch by index on the device, posterior, one sample, a
single-sample REINFORCE surrogate for the reconstruction term (written inline
so this file does not depend on `estimators`) plus the analytic KL, backward,
Adam. One CPU thread, so numbers are comparable across machines and runs.

    pytest -m benchmark tests/bench/test_bench_models.py
"""
import pytest
import torch

import models

pytestmark = pytest.mark.benchmark




def make_step(task, model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = task.generator(0)
    lat = model.latent

    def step():
        batch = task.sample("train", 128, g)
        q, p = model.posterior(batch), model.prior(batch)       # (B, D, K)
        z = lat.sample(q, 1)                                     # (1, B, D, K), no gradient
        f = model.log_likelihood(batch, z)                       # (1, B)
        logq = lat.log_prob(q, z)                                # (1, B)
        surrogate = f + (f.detach() - f.detach().mean()) * logq  # value f, REINFORCE gradient
        loss = -surrogate.mean() + lat.kl(q, p).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def test_digits_train_step(benchmark):
    torch.manual_seed(0)
    task = models.tasks.load("digits")
    model = models.build(task, "categorical", "film")            # D=8, K=10, width 128
    step = make_step(task, model)
    step()                                                       # warm-up outside the timing
    loss = benchmark(step)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("conditioning", ["film", "prefix", "xattn"])
def test_strategies_train_step(benchmark, conditioning):
    torch.manual_seed(0)
    task = models.tasks.load("strategies", length=16, n_train=2000, n_val=10, n_test=10)
    model = models.build(task, "categorical", conditioning)      # d_model 64, 2 layers, 4 heads
    step = make_step(task, model)
    step()
    loss = benchmark(step)
    assert torch.isfinite(loss)
