"""How close a training step comes to the machine: FLOPs of one Trainer step,
its time, the single-thread matrix-multiply rate at the step's own shapes
(measured in the same process), and a profile of where the rest goes.

    python -m tests.bench.roofline [--experiment disarm_linear] [--estimator disarm ...]
                                   [--steps 300] [--json]

Runs in any source tree that has `bench.config.compose` and `bench.job.train.Trainer`
(PYTHONPATH=<tree> python <this file> ... measures another commit). One torch
thread. FLOPs come from torch.utils.flop_counter (matrix multiplies, counted
forward and backward); the matmul rate is that of torch.mm on every (m, k, n)
the counter saw, timed alone, weighted by the step's FLOPs at each shape, so
`fraction` = (step FLOPs / step time) / that rate is the share of the
machine's own matmul speed the step reaches.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


def trainer(experiment: str, overrides: list[str]):
    from bench.config import compose, plain
    from bench.job.train import Trainer
    cfg = plain(compose([f"experiment={experiment}", *overrides, "eval.grad_stats=false"]))
    from omegaconf import OmegaConf
    return Trainer(OmegaConf.create(cfg), lambda step, metrics: None)


def step_fn(tr):
    from bench.job.objective import objective
    extra = (tr.sampled,) if hasattr(tr, "sampled") else ()
    tr.model.train()
    tr.est.train()
    state = {"n": 0}

    def step():
        batch = tr.task.sample("train", tr.cfg.train.batch_size, tr.gen)
        obj = objective(tr.step_model, tr.est, batch, tr.beta(state["n"]), tr.lam, tr.mode, *extra)
        tr.update(obj.loss, obj.aux_loss)
        tr.meter.add(state["n"], obj, obj.loss)
        state["n"] += 1
    return step


class ShapeLog(TorchDispatchMode):
    """Records the (m, k, n) of every mm / addmm / bmm that runs under it."""

    def __init__(self):
        super().__init__()
        self.shapes: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in ("mm", "addmm"):
            x, w = args[-2], args[-1]
            self.shapes[(x.shape[0], x.shape[1], w.shape[1])] += 1
        elif name == "bmm":
            x, w = args[0], args[1]
            self.shapes[(x.shape[1], x.shape[2], w.shape[2])] += x.shape[0]
        return func(*args, **(kwargs or {}))


def mm_rate(shapes: Counter, reps: int = 30) -> float:
    """FLOP/s of torch.mm over the step's shapes, weighted by FLOPs per shape."""
    flops, secs = 0.0, 0.0
    for (m, k, n), count in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            torch.mm(a, b)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b)
            ts.append(time.perf_counter() - t)
        flops += 2 * m * k * n * count
        secs += statistics.median(ts) * count
    return flops / secs


def measure(experiment: str, overrides: list[str], steps: int, profile: bool = True) -> dict:
    torch.set_num_threads(1)
    tr = trainer(experiment, overrides)
    step = step_fn(tr)
    for _ in range(20):
        step()
    counter, shapes = FlopCounterMode(display=False), ShapeLog()
    with counter:
        step()
    with shapes:
        step()
    flops = counter.get_total_flops()
    ts, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.thread_time()
        step()
        cpu.append(time.thread_time() - c)
        ts.append(time.perf_counter() - t)
    t_step = statistics.median(ts)
    rate = mm_rate(shapes.shapes)
    table = ""
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(50):
                step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return dict(experiment=experiment, overrides=overrides, step_ms=1e3 * t_step,
                cpu_step_ms=1e3 * statistics.median(cpu),
                steps_per_s=1 / t_step, mflop=flops / 1e6, gflops=flops / t_step / 1e9,
                mm_gflops=rate / 1e9, fraction=flops / t_step / rate, profile=table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="disarm_linear")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", action="store_true", help="one JSON line, no profile table")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    out = measure(a.experiment, a.overrides, a.steps, profile=not a.json)
    if a.json:
        out.pop("profile")
        print(json.dumps(out))
        return
    print(out.pop("profile"))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
