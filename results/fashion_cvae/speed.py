"""Speed of the tutorial's model (experiment=cvae_fashion) on CPU: training
steps per second at 1 and 2 torch threads in interleaved rounds (1, 2, 2, 1,
...; medians), then one evaluation at the overlay's settings without and with
the final evaluation's pictures (models.pictures), and the share of a run that
evaluations take at the overlay's eval_every. The machine may be shared:
the output says what to compare, not an absolute speed.

    PYTHONPATH=$PWD python results/fashion_cvae/speed.py [conditioning] [steps per round] [rounds]
"""
import statistics
import sys
import time

import torch

from bench.job.train import Trainer
from tests.bench.paired import TrainerStep
from tests.compose import compose_config

cond = sys.argv[1] if len(sys.argv) > 1 else "adaln"
per_round = int(sys.argv[2]) if len(sys.argv) > 2 else 2
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
cfg = compose_config(["experiment=cvae_fashion", f"conditioning={cond}"])
tr = Trainer(cfg, lambda step, metrics: None)
step = TrainerStep(tr)
step()                                  # warm-up: first-call allocations
rates = {1: [], 2: []}
for n in [1, 2, 2, 1] * rounds:
    torch.set_num_threads(n)
    t = time.perf_counter()
    for _ in range(per_round):
        step()
    rates[n].append(per_round / (time.perf_counter() - t))
    print(f"threads={n}: {rates[n][-1]:.4f} steps/s", flush=True)
med = {n: statistics.median(v) for n, v in rates.items()}
print(f"median steps/s: 1 thread {med[1]:.4f}, 2 threads {med[2]:.4f}", flush=True)
torch.set_num_threads(2)
tr.evaluator(1, 1.0)                    # loads (or trains once and caches) the classifier
t = time.perf_counter()
tr.evaluator(1, 1.0)
plain = time.perf_counter() - t
t = time.perf_counter()
tr.evaluator(2, 1.0, final=True)
final = time.perf_counter() - t
print(f"one evaluation: {plain:.1f} s; the final one with all pictures: {final:.1f} s "
      f"(pictures {final - plain:.1f} s)", flush=True)
E, S = cfg.train.eval_every, cfg.train.steps
n_evals = S // E + 1
train_s = S / med[2]
print(f"at eval_every={E} of {S} steps ({n_evals} evaluations): evaluations "
      f"{(n_evals * plain + final - plain) / (train_s + n_evals * plain + final - plain):.1%} of a run, "
      f"the pictures {(final - plain) / (train_s + n_evals * plain + final - plain):.1%}", flush=True)
