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
launch overhead. `sync_share`: the host time per step inside CUDA calls that
wait for the device (synchronize, memcpy: SYNC_CALLS) over the step time, the
price of host reads (the training step should make none: the placement check
in tests/test_device_placement.py); the last synchronize of the pass, the
measurement's own, is divided over the n steps. On CPU there are no device
kernels and both shares are left empty. Estimators default to every registered categorical one; bf16 is skipped
for estimators whose class is not `bf16_safe`, compile for those that need a
`double_backward` (as bench.config.validate refuses them).

Families (`--families`): `default`, the task's own model (the MLP on image
tasks), and `conv` (models.conv with adaln conditioning and its spatial
latent; image tasks only, skipped on the others). `--set KEY=VALUE ...` adds
config overrides to every configuration (eval sizes, model width).

Besides the steps, the first setting measured of each (task, family,
estimator, batch) times what a run adds to them, once, as it does not depend
on the setting (evaluation is plain fp32 and uncompiled): `eval_s`, one call of
bench.job.evaluate.Evaluator (the first call of a run: new shapes, the exact
pass), and `ckpt_ms`, writing the model, estimator and optimiser state as
bench.job.checkpoint does (atomic, fsynced) and loading it back.

A configuration that raises becomes an "error" row and the table goes on;
after the table (and the CSV) the command exits non-zero, naming every failed
configuration and its error.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

import estimators
from .config import compose, plain
from .job import checkpoint as CK
from .job.accel import StepModel
from .job.build import build, load_task
from .job.evaluate import Evaluator
from .job.objective import objective

FAMILIES = {"default": [], "conv": ["model.family=conv", "conditioning=adaln", "latent.D=null"]}
SETTINGS = {"fp32": ("fp32", False), "tf32": ("tf32", False), "bf16": ("bf16", False),
            "fp32+compile": ("fp32", True), "bf16+compile": ("bf16", True)}


def make_step(task, model, est, device, precision, compile_, batch):
    sm = StepModel(model, device, precision, compile_)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    extra = [p for p in est.parameters() if p.requires_grad]
    est_opt = torch.optim.Adam(extra, lr=1e-3) if extra else None
    gen = task.generator(0)

    opts = {"model": opt, **({"estimator": est_opt} if est_opt is not None else {})}

    def step():
        obj = objective(sm, est, task.sample("train", batch, gen), 1.0)
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        (obj.loss if obj.aux_loss is None else obj.loss + obj.aux_loss).backward()
        for o in opts.values():
            o.step()
    step.opts = opts
    return step, sm


def eval_seconds(cfg, task, model, est, device) -> float:
    """One evaluation as the training loop makes it (module docstring)."""
    ev = Evaluator(cfg, task, model, est, 0.0, "batch")
    sync(device)
    t0 = time.perf_counter()
    ev(0, 1.0)
    sync(device)
    return time.perf_counter() - t0


def checkpoint_ms(model, est, opts: dict, device) -> float:
    """Save the training state as bench.job.checkpoint does and load it back."""
    sync(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.pt"
        CK.save(path, {"model": model.state_dict(), "estimator": est.state_dict(),
                       "optimisers": {k: o.state_dict() for k, o in opts.items()},
                       "rng": CK.rng_state(device)})
        state = torch.load(path, map_location="cpu", weights_only=True)
        CK.load_module(path, "model", model, state["model"])
        CK.load_module(path, "estimator", est, state["estimator"])
        CK.load_optimisers(path, opts, state["optimisers"])
    sync(device)
    return 1e3 * (time.perf_counter() - t0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# host-side CUDA runtime calls that wait for the device: where a step stalls on a sync
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "cudaMemcpyAsync")


def profile_seconds(step, device, n: int) -> tuple[float | None, float | None]:
    """(device-busy seconds, host seconds inside syncing CUDA calls) per step over
    n profiled steps; (None, None) off CUDA."""
    if device.type != "cuda":
        return None, None
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
    # the final synchronize above is the measurement's own, not the steps'
    sync_us = sum(e.time_range.elapsed_us() for e in prof.events()
                  if e.device_type == DeviceType.CPU and e.name.startswith(SYNC_CALLS))
    return busy_us / 1e6 / n, sync_us / 1e6 / n


def measure(cfg, device, setting: str, steps: int, warmup: int, profile_steps: int,
            extras: bool = False) -> dict:
    """One configuration's row; `extras`: also eval_s and ckpt_ms (module docstring)."""
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
    busy, synced = profile_seconds(step, device, profile_steps)
    row = {"steps_per_s": steps / dt, "ms_per_step": 1e3 * dt / steps,
           "kernel_share": None if busy is None else busy / (dt / steps),
           "sync_share": None if synced is None else synced / (dt / steps),
           "compiled": sm.compiled if compile_ else None, "eval_s": None, "ckpt_ms": None}
    if extras:
        row["eval_s"] = eval_seconds(cfg, task, model, est, device)
        row["ckpt_ms"] = checkpoint_ms(model, est, step.opts, device)
    return row


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
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every configuration")
    ap.add_argument("--no-extras", dest="extras", action="store_false",
                    help="skip the evaluation and checkpoint timings")
    ap.add_argument("--out", type=Path, default=None, help="CSV to write the table to")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    warmup = min(20, a.steps) if a.warmup is None else a.warmup
    rows, failed = [], []
    for task in a.tasks:
        image = load_task(plain(compose([f"task={task}"])), torch.device("cpu")).family == "image"
        for family in a.families:
            if family == "conv" and not image:
                continue
            for est in a.estimators:
                for batch in a.batch:
                    rows += configuration(a, device, warmup, task, family, est, batch, failed)
    if a.out is not None:
        import pandas as pd
        a.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    if failed:
        raise SystemExit(f"gpu_bench: {len(failed)} configuration(s) failed:\n"
                         + "\n".join(f"  {_name(r)}: {r['error']}" for r in failed))


def configuration(a, device, warmup, task, family, est, batch, failed) -> list:
    """The rows of one (task, family, estimator, batch): one per setting it allows."""
    rows = []
    cfg = plain(compose([f"task={task}", f"estimator={est}", *FAMILIES[family],
                         f"train.batch_size={batch}", f"device={a.device}", *a.set]))
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
                r = measure(cfg, device, setting, a.steps, warmup, a.profile_steps,
                            extras=not rows and a.extras)
            except Exception as e:  # noqa: BLE001 -- one cell fails, the table goes on
                r = {"error": f"{type(e).__name__}: {e}"}
        rows.append({"task": task, "family": family, "estimator": est, "batch": batch,
                     "setting": setting, **r})
        if "error" in r:
            failed.append(rows[-1])
        print(_fmt(rows[-1]), flush=True)
    return rows


def _name(r: dict) -> str:
    return (f"task={r['task']} family={r['family']} estimator={r['estimator']} "
            f"batch={r['batch']} setting={r['setting']}")


def _fmt(r: dict) -> str:
    head = f"{r['task']:10s} {r['family']:7s} {r['estimator']:9s} B={r['batch']:<5d} {r['setting']:13s}"
    if "error" in r:
        return f"{head} {r['error'][:120]}"
    share = "" if r["kernel_share"] is None else f"  kernels {100 * r['kernel_share']:.0f}%"
    if r.get("sync_share") is not None:
        share += f"  syncs {100 * r['sync_share']:.0f}%"
    extras = "" if r["eval_s"] is None else f"  eval {r['eval_s']:.2f} s  ckpt {r['ckpt_ms']:.0f} ms"
    return f"{head} {r['steps_per_s']:8.1f} steps/s  {r['ms_per_step']:7.2f} ms/step{share}{extras}"


if __name__ == "__main__":
    main()
