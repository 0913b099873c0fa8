"""Trainer steps against a paper's loop at the literature setting (pytest -m benchmark).

At `experiment=disarm_nonlinear` (mnist5k, 200 Bernoulli latents, the DisARM
nonlinear model, batch 50, Adam + SGD on the prior logits, dynamic
binarisation): one step of `Trainer.run`'s loop (`tests.bench.paired.TrainerStep`)
against `tests/bench/hand.py`'s `paper_*` loops, paired and interleaved as in
`python -m tests.bench.paired --papers`, which writes the table in
results/estimator_speed.md; the steps/s of every estimator that takes Bernoulli
latents, and the cost of one evaluation. Timings are reported (extra_info, and
a line with -s), never asserted: the machine is shared.

Under --benchmark-disable (the CI smoke run) the timings shrink to a round or
two and a cheap evaluation; what is checked in every mode is that both sides
compute the same thing: the same loss and the same gradients, step after step,
from the same weights, batches and seed, and that `TrainerStep` is the loop
`Trainer.run` runs.

    pytest -m benchmark -s tests/bench/test_bench_papers.py
"""
from __future__ import annotations

import pytest
import torch

from tests.bench.paired import (PAIRED_PAPER_CASES, PAPER_CASES, TrainerStep, bernoulli_estimators,
                                build_paper_pair, eval_seconds, measure_paper, paired_parameters,
                                paper_config, paper_task, paper_trainer, steps_per_second)

pytestmark = pytest.mark.benchmark


@pytest.mark.parametrize("label", PAIRED_PAPER_CASES)
def test_hand_loop_computes_the_objective(label):
    """Same loss and same gradients as the Trainer's step, three steps running
    (so the optimisers agree too). A random prior makes the KL term ~100 nats,
    so the check sees it; the gradients check the estimator's maths, which the
    surrogate's value does not show."""
    s, ts = build_paper_pair(label)
    with torch.no_grad():
        ts.tr.model.prior_logits.copy_(torch.randn(ts.tr.model.prior_logits.shape,
                                                   generator=torch.Generator().manual_seed(3)))
        s.net.prior.copy_(ts.tr.model.prior_logits)
    step = PAPER_CASES[label].step
    pairs = paired_parameters(ts.tr.model, s.net)
    for i in range(3):
        torch.manual_seed(100 + i)
        ours = ts()
        torch.manual_seed(100 + i)
        mine = step(s)
        torch.testing.assert_close(ours, mine, rtol=1e-5, atol=0, msg=f"loss at step {i}")
        for name, a, b in pairs:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6,
                                       msg=lambda m: f"{name} gradient at step {i}: {m}")
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"{name} after step {i}")


def test_trainer_step_is_the_run_loop():
    """`TrainerStep` logs the losses `Trainer.run` logs, step by step (train.py
    is edited by others: this notices when its loop and the copy part)."""
    from bench.job.train import Trainer
    extra = ["train.steps=3", "train.log_every=1", "train.eval_every=1000", "eval.grad_stats=false",
             "eval.iwae_samples=1", "eval.batch_size=10"]
    cfg = paper_config([*PAPER_CASES["disarm"].overrides, *extra])
    logged = {}
    log = lambda step, m: logged.__setitem__(step, m.get("train/loss"))   # noqa: E731
    Trainer(cfg, log, task=paper_task()).run()
    ts = TrainerStep(Trainer(cfg, lambda step, m: None, task=paper_task()))
    mine = [float(ts()) for _ in range(3)]
    assert [logged[step] for step in (1, 2, 3)] == pytest.approx(mine, rel=1e-6)


def test_every_bernoulli_estimator_is_timed():
    names = sorted({c.overrides[0].split("=", 1)[1] for c in PAPER_CASES.values()})
    assert names == bernoulli_estimators()


@pytest.mark.parametrize("label", PAIRED_PAPER_CASES)
def test_paired_ratio(benchmark, label):
    rounds = 2 if benchmark.disabled else 100
    benchmark.group = "literature setting: Trainer step / paper loop"
    m = benchmark.pedantic(measure_paper, args=(label, rounds),
                           kwargs=dict(warmup=1 if benchmark.disabled else 20),
                           rounds=1, iterations=1)
    benchmark.extra_info.update(ratio=m["ratio"], per_round=m["paired"], cpu_ratio=m["cpu_ratio"],
                                hand_ms=1e3 * m["hand"], ours_ms=1e3 * m["ours"])
    print(f"\n{label}: ours / hand = {m['ratio']:.3f}, per-round {m['paired']:.3f} "
          f"({m['iqr'][0]:.2f}-{m['iqr'][1]:.2f}), CPU {m['cpu_ratio']:.3f} "
          f"({1e3 * m['ours']:.2f} / {1e3 * m['hand']:.2f} ms)")
    assert m["hand"] > 0 and m["ours"] > 0


def test_steps_per_second(benchmark):
    labels = ["disarm", "gumbel"] if benchmark.disabled else list(PAPER_CASES)
    rounds = 1 if benchmark.disabled else 20
    benchmark.group = "literature setting: steps/s"
    out = benchmark.pedantic(steps_per_second, args=(labels, rounds),
                             kwargs=dict(warmup=0 if benchmark.disabled else 5),
                             rounds=1, iterations=1)
    for label, m in out.items():
        benchmark.extra_info[label] = 1 / m["wall"]
        print(f"\n{label}: {1 / m['wall']:.1f} steps/s, {1 / m['cpu']:.1f} on CPU time, "
              f"{m['rel']:.2f} x gumbel")
    assert set(out) == set(labels)


def test_eval_share(benchmark):
    """One evaluation against 5000 training steps (train.eval_every)."""
    cheap = ["eval.iwae_samples=2", "eval.batch_size=20", "eval.grad_samples=2"]
    tr = paper_trainer("disarm", extra=cheap if benchmark.disabled else ())
    step = TrainerStep(tr)
    for _ in range(3):
        step()
    benchmark.group = "literature setting: evaluation"
    e = benchmark.pedantic(eval_seconds, args=(tr,), rounds=1, iterations=1)
    benchmark.extra_info.update(eval_s=e["total"][0], eval_cpu_s=e["total"][1])
    print(f"\ndisarm: one evaluation {e['total'][0]:.2f} s ({e['total'][1]:.2f} s CPU; val "
          f"{e['val'][1]:.2f}, grad {e['grad'][1]:.2f}), a log-only flush "
          f"{1e3 * e['log'][1]:.2f} ms")
    assert all(v[0] >= 0 for v in e.values())
