"""The DisARM nonlinear overlay against a loop written from the papers, trained
apart: the same data, steps and seeds, each side its own initialisation and
draws; the test-set single-sample ELBO (mean of `--draws` draws per image) of
both, so the difference can be set beside the seed noise.

    python -m tests.bench.papers_bound [--steps 2000] [--seeds 0 1] [--draws 10]

The paper loop is tests/bench/hand.py's `paper_disarm` on its own BinaryVAE:
Keras-style init (Glorot-uniform weights, zero biases, decoder output bias at
logit(clip(training mean, 1e-3, 0.999))), zero prior logits, Adam 1e-4 + SGD 1e-2,
its own minibatches and binarisation from a generator seeded apart.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from tests.bench import hand


def paper_net(mean: torch.Tensor, seed: int) -> hand.BinaryVAE:
    torch.manual_seed(10_000 + seed)
    net = hand.BinaryVAE(mean)
    for layer in [m for m in net.modules() if isinstance(m, nn.Linear)]:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    with torch.no_grad():
        net.dec[-1].bias.copy_(torch.logit(mean.clamp(1e-3, 0.999)))
    return net


@torch.no_grad()
def paper_elbo(net: hand.BinaryVAE, x: torch.Tensor, draws: int) -> float:
    a = net.enc(x - net.mean)                                              # (N, D)
    b = (torch.rand((draws, *a.shape)) < torch.sigmoid(a)).float()        # (R, N, D)
    ll = -F.binary_cross_entropy_with_logits(net.dec(2 * b - 1), x.expand(draws, *x.shape),
                                             reduction="none").sum(-1)
    log_pq = (b * (net.prior - a)).sum(-1) + (F.softplus(a) - F.softplus(net.prior)).sum(-1)
    return float((ll + log_pq).mean())


def ours(seed: int, steps: int, draws: int) -> float:
    from bench.config import compose, plain
    from bench.job.train import Trainer
    from models.evaluate import single_sample_elbo
    from omegaconf import OmegaConf
    cfg = OmegaConf.create(plain(compose(["experiment=disarm_nonlinear", f"seed={seed}",
                                          f"train.steps={steps}", f"train.eval_every={steps}",
                                          f"train.log_every={steps}", "eval.grad_stats=false",
                                          "eval.iwae_samples=1", "eval.train_elbo_size=0",
                                          "progress=false"])))
    tr = Trainer(cfg, log=lambda s, m: None)
    tr.run()
    test = tr.task.split("test")
    g = torch.Generator().manual_seed(seed)
    return statistics.mean(single_sample_elbo(tr.model, test, g) for _ in range(draws))


def theirs(seed: int, steps: int, draws: int, task) -> float:
    grey = task._raw("train").x
    net = paper_net(grey.double().mean(0).float(), seed)
    s = hand.PaperState(net, grey, torch.Generator().manual_seed(20_000 + seed), fused=True)
    for _ in range(steps):
        hand.paper_disarm(s)
    return paper_elbo(net, task.split("test").x, draws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--draws", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from models import tasks
    task = tasks.load("mnist5k", seed=0)
    rows = []
    for seed in a.seeds:
        o, t = ours(seed, a.steps, a.draws), theirs(seed, a.steps, a.draws, task)
        rows.append((seed, o, t))
        print(f"seed {seed}: ours {o:.2f}  paper loop {t:.2f}  difference {o - t:+.2f} nats", flush=True)
    o, t = [r[1] for r in rows], [r[2] for r in rows]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else float("nan")   # noqa: E731
    print(f"mean over seeds {a.seeds}: ours {statistics.mean(o):.2f} (sd {sd(o):.2f}), paper loop "
          f"{statistics.mean(t):.2f} (sd {sd(t):.2f}), difference {statistics.mean(o) - statistics.mean(t):+.2f}")


if __name__ == "__main__":
    main()
