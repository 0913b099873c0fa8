"""Speed of the convolutional image model (pytest -m benchmark).

- one training step of `model.family=conv` (Trainer.run's loop without its
  evaluation: `tests.bench.paired.TrainerStep`) on 28x28 mnist5k at batch 64,
  adaln, Gaussian latent with reparam and categorical with gumbel, with one
  torch thread and with two;
- one evaluation (`Evaluator`: val/* with the IWAE bound, grad/*, and with
  eval.samples=true the sample grids and gen/class_accuracy through the cached
  classifier), on digits at the defaults and on mnist5k at the conditioning
  study's lighter settings (one 28x28 evaluation at the defaults costs tens of
  seconds of CPU, mostly the 32-sample IWAE bound on 512 images);
- the share of evaluation in the default conv run on digits
  (`model.family=conv conditioning=adaln latent.D=4 eval.samples=true`: 2,000
  steps, five evaluations), perf/eval_seconds over perf/wall_seconds as the
  run logs them (extra_info "eval_share"); under --benchmark-disable a
  200-step run with two evaluations.

Timings are reported (pytest-benchmark's table, extra_info), never asserted:
the machine is shared. Under --benchmark-disable (the CI smoke run) each runs
once, which checks that they run.

    pytest -m benchmark tests/bench/test_bench_conv.py
"""
from __future__ import annotations

import pytest
import torch

from tests.bench.paired import TrainerStep
from tests.compose import compose_config

pytestmark = pytest.mark.benchmark

STUDY_MNIST = ["eval.batch_size=256", "eval.iwae_samples=8", "eval.grad_samples=8"]
LATENTS = {"gaussian": ["latent=gaussian", "latent.D=196", "estimator=reparam"],
           "categorical": ["latent.D=49", "latent.K=10", "estimator=gumbel"]}


def trainer(overrides, log=lambda step, metrics: None):
    from bench.job.train import Trainer
    cfg = compose_config(["model.family=conv", "conditioning=adaln", *overrides])
    return Trainer(cfg, log)


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(n)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("latent", sorted(LATENTS))
def test_conv_train_step_28x28(benchmark, threads, latent, n_threads):
    tr = trainer(["task=mnist5k", "train.batch_size=64", *LATENTS[latent]])
    threads(n_threads)          # after the Trainer, which sets cfg.threads
    step = TrainerStep(tr)
    for _ in range(2):          # warm-up: first-call allocations
        step()
    loss = benchmark.pedantic(step, rounds=20, iterations=1)
    assert torch.isfinite(loss)
    if benchmark.stats is not None:
        benchmark.extra_info["steps_per_s"] = 1.0 / benchmark.stats.stats.median


@pytest.mark.parametrize("task", ["digits", "mnist5k"])
def test_conv_evaluation_with_samples(benchmark, threads, task):
    extra = ["latent.D=4"] if task == "digits" else ["task=mnist5k", *STUDY_MNIST]
    tr = trainer(["eval.samples=true", *extra])
    threads(1)
    tr.evaluator(0, 1.0)        # loads (or trains once and caches) the classifier
    out = benchmark.pedantic(lambda: tr.evaluator(0, 1.0), rounds=3, iterations=1)
    assert {"val/elbo", "grad/log10_var", "gen/class_accuracy"} <= set(out)


def test_conv_default_run_evaluation_share(benchmark, threads):
    short = ["train.steps=200", "train.eval_every=100"] if benchmark.disabled else []
    logged = {}
    tr = trainer(["latent.D=4", "eval.samples=true", *short], lambda step, metrics: logged.update(metrics))
    threads(1)
    benchmark.pedantic(tr.run, rounds=1, iterations=1)
    share = logged["perf/eval_seconds"] / logged["perf/wall_seconds"]
    assert 0 < share < 1
    benchmark.extra_info.update(eval_share=share, eval_seconds=logged["perf/eval_seconds"],
                                wall_seconds=logged["perf/wall_seconds"])
