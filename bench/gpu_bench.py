"""Training-step throughput per estimator, task, batch size and precision /
compile setting, with the share of step time spent in device kernels.

    python -m bench.gpu_bench                                  # CUDA: the full table
    python -m bench.gpu_bench --device cpu --steps 5 --batch 16 --estimators gumbel
    python -m bench.gpu_bench --out results/gpu_bench.csv      # also write the table

For every (task, estimator, batch, setting) it builds the run exactly as
a job does (bench.job.build, bench.job.accel.StepModel, bench.job.objective),
warms up (compilation included), then times `--steps` training steps between
two device synchronisations: steps/s. One profiled pass of `--profile-steps`
steps (torch.profiler) gives the device-kernel time per step, and
`kernel_share` = that / the unprofiled time per step (the profiler slows the
host side, not the kernels); near 1 means the step is limited by kernels, not by Python and
launch overhead. On CPU there are no device kernels and the share is left
empty. Estimators default to every registered categorical one; bf16 is skipped
for estimators whose class is not `bf16_safe`, compile for those that need a
`double_backward` (as bench.config.validate refuses them).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

import estimators
from .config import compose, plain
from .job.accel import StepModel
from .job.build import build
from .job.objective import objective

SETTINGS = {"fp32": ("fp32", False), "tf32": ("tf32", False), "bf16": ("bf16", False),
            "fp32+compile": ("fp32", True), "bf16+compile": ("bf16", True)}


def make_step(task, model, est, device, precision, compile_, batch):
    sm = StepModel(model, device, precision, compile_)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    extra = [p for p in est.parameters() if p.requires_grad]
    est_opt = torch.optim.Adam(extra, lr=1e-3) if extra else None
    gen = task.generator(0)

    def step():
        obj = objective(sm, est, task.sample("train", batch, gen), 1.0)
        opt.zero_grad(set_to_none=True)
        if est_opt is not None:
            est_opt.zero_grad(set_to_none=True)
        (obj.loss if obj.aux_loss is None else obj.loss + obj.aux_loss).backward()
        opt.step()
        if est_opt is not None:
            est_opt.step()
    return step, sm


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel_seconds(step, device, n: int) -> float | None:
    """Device-busy seconds per step over n profiled steps; None off CUDA."""
    if device.type != "cuda":
        return None
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    sync(device)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n):
            step()
        sync(device)
    # the device-side events are the kernels (and memcpys/memsets) themselves;
    # one stream, so their durations do not overlap
    from torch.autograd import DeviceType
    busy_us = sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA)
    return busy_us / 1e6 / n


def measure(cfg, device, setting: str, steps: int, warmup: int, profile_steps: int) -> dict:
    precision, compile_ = SETTINGS[setting]
    torch.manual_seed(0)
    task, model, est = build(cfg, device)
    model.train()
    est.train()
    step, sm = make_step(task, model, est, device, precision, compile_, cfg.train.batch_size)
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = time.perf_counter() - t0
    busy = kernel_seconds(step, device, profile_steps)
    return {"steps_per_s": steps / dt, "ms_per_step": 1e3 * dt / steps,
            "kernel_share": None if busy is None else busy / (dt / steps),
            "compiled": sm.compiled if compile_ else None}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tasks", nargs="+", default=["digits", "strategies"])
    ap.add_argument("--estimators", nargs="+", default=[
        n for n in estimators.names() if estimators.get(n).latent == "categorical"])
    ap.add_argument("--batch", nargs="+", type=int, default=[128, 1024])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=None, help="default: min(20, steps)")
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="CSV to write the table to")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    warmup = min(20, a.steps) if a.warmup is None else a.warmup
    rows = []
    for task in a.tasks:
        for est in a.estimators:
            for batch in a.batch:
                cfg = plain(compose([f"task={task}", f"estimator={est}",
                                     f"train.batch_size={batch}", f"device={a.device}"]))
                double = estimators.build(est, **{k: v for k, v in cfg.estimator.items()
                                                   if k != "name"}).double_backward
                for setting in a.settings:
                    if setting.startswith("bf16") and not estimators.get(est).bf16_safe:
                        continue
                    if SETTINGS[setting][1] and double:
                        continue
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        try:
                            r = measure(cfg, device, setting, a.steps, warmup, a.profile_steps)
                        except Exception as e:  # noqa: BLE001 -- one cell fails, the table goes on
                            r = {"error": f"{type(e).__name__}: {str(e)[:80]}"}
                    rows.append({"task": task, "estimator": est, "batch": batch, "setting": setting, **r})
                    print(_fmt(rows[-1]), flush=True)
    if a.out is not None:
        import pandas as pd
        a.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(a.out, index=False)
        print(f"wrote {a.out}")


def _fmt(r: dict) -> str:
    if "error" in r:
        return f"{r['task']:10s} {r['estimator']:9s} B={r['batch']:<5d} {r['setting']:13s} {r['error']}"
    share = "" if r["kernel_share"] is None else f"  kernels {100 * r['kernel_share']:.0f}%"
    return (f"{r['task']:10s} {r['estimator']:9s} B={r['batch']:<5d} {r['setting']:13s} "
            f"{r['steps_per_s']:8.1f} steps/s  {r['ms_per_step']:7.2f} ms/step{share}")


if __name__ == "__main__":
    main()
