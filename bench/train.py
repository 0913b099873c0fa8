"""The training loop of one run: `train(cfg, log) -> final metrics`.

    train(cfg, log=lambda step, metrics: ..., desc="gumbel-concat")

Steps count optimiser updates. At step s (updates done so far) the loop logs,
in one `log(s, metrics)` call per step:
- evaluation (bench.evaluate: val/*, grad/*, collapse/*) at s = 0, every
  `train.eval_every` and at s = train.steps, so even a short run has a curve;
- train/loss, train/elbo, train/kl, train/beta (means over the interval),
  estimator/* (the estimator's own metrics, last value), perf/steps_per_s,
  perf/peak_mem_mb, perf/eval_seconds, perf/wall_seconds every `train.log_every`.

Between logging steps nothing leaves the device: the interval sums and a
"first non-finite step" marker are tensors; the one host sync is the flush.
A NaN/inf loss or evaluation metric raises `NonFiniteError` at the next flush.
(tests/test_scaleout_gpu_path.py counts host reads per step, on CPU and CUDA.)

Device and speed: `device=auto` is CUDA when present; the data set lives on
the device and minibatches are gathered there. The training step sees the
model through bench.accel.step_view: the bare model for fp32 eager, else a
StepModel applying `train.precision` (fp32 | tf32 | bf16: the networks only,
estimators always fp32) and `train.compile` (torch.compile of the model's
forward pieces, eager fallback with a warning; perf/compiled logs 1 while
compiled code runs). Evaluation always uses the plain fp32 model.

Per step: a minibatch drawn by index on the device, beta(t) from `kl`, the
temperature schedule assigned to `est.tau` (relaxations with a plain float
tau: gumbel), the objective of bench.objective, one Adam step on the model
and, when the estimator has parameters (learned baselines, control variates,
REBAR's tau and eta), one Adam step of its own optimiser on `aux_loss`.
Same seed, same device -> identical metrics (CPU).
"""
from __future__ import annotations

import math
import resource
import sys
import time
from typing import Callable

import torch
from tqdm import tqdm

import estimators
import models
from .accel import step_view
from .evaluate import Evaluator
from .objective import objective
from .schedules import kl_schedule, temperature_schedule

Log = Callable[[int, dict], None]


class NonFiniteError(RuntimeError):
    """The loss or an evaluation metric became NaN or infinite."""


def pick_device(name: str) -> torch.device:
    name = str(getattr(name, "value", name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _opts(node, drop=("name",)) -> dict:
    return {k: v for k, v in dict(node).items() if k not in drop}


def build(cfg, device: torch.device):
    """(task, model, estimator) for a validated config, on `device`."""
    task = models.tasks.load(cfg.task.name, device=device, seed=cfg.seed, **_opts(cfg.task))
    lat = cfg.latent
    kind = str(getattr(lat.name, "value", lat.name))
    default = models.default_latent(task, kind)     # the task's sizes, for keys left null
    sizes = {"D": default.D if lat.D is None else lat.D}
    if kind == "categorical":
        sizes["K"] = default.K if lat.K is None else lat.K
    latent = models.latents.build(kind, **sizes)
    extra = dict(cfg.model)
    if cfg.latent_dropout > 0:
        extra["latent_dropout"] = cfg.latent_dropout
    model = models.build(task, latent, conditioning=cfg.conditioning.name,
                         **_opts(cfg.conditioning), **extra).to(device)
    est = estimators.build(cfg.estimator.name, **_opts(cfg.estimator)).to(device)
    return task, model, est


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def train(cfg, log: Log, desc: str = "") -> dict[str, float]:
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task, model, est = build(cfg, device)
    steps, B = cfg.train.steps, cfg.train.batch_size
    lam = float(cfg.kl.free_bits)
    mode = str(getattr(cfg.kl.free_bits_mode, "value", cfg.kl.free_bits_mode))
    beta = kl_schedule(cfg.kl, steps)
    tau = (temperature_schedule(cfg.temperature, est.tau, steps)
           if isinstance(getattr(est, "tau", None), float) else None)
    evaluator = Evaluator(cfg, task, model, est, lam, mode)

    # dry run: estimators with lazily shaped networks (learned baseline, RELAX)
    # create their parameters at the first call; their optimiser needs them.
    # Eval mode and a forked RNG: no EMA update, no draw taken from training.
    model.eval()
    est.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        objective(model, est, evaluator.gbatch, beta(0), lam, mode)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    est_params = [p for p in est.parameters() if p.requires_grad]
    est_opt = torch.optim.Adam(est_params, lr=cfg.train.estimator_lr) if est_params else None

    step_model = step_view(model, device, cfg.train.precision, cfg.train.compile)
    gen = task.generator(cfg.seed)
    zero = lambda: torch.zeros((), device=device)  # noqa: E731
    acc = {"train/loss": zero(), "train/elbo": zero(), "train/kl": zero()}
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    est_metrics: dict = {}
    nan_at = cfg.debug.nan_at_step
    bar = tqdm(total=steps, desc=desc, file=sys.stdout, dynamic_ncols=True, mininterval=1.0,
               disable=not (cfg.progress and sys.stdout.isatty()))
    t0 = t_interval = time.perf_counter()
    eval_seconds, eval_in_interval, since_log, final = 0.0, 0.0, 0, {}

    def flush(step: int) -> None:
        nonlocal t_interval, eval_seconds, eval_in_interval, since_log, final
        metrics: dict[str, float] = {}
        t_eval = time.perf_counter()
        if step == 0 or step % cfg.train.eval_every == 0 or step == steps:
            metrics.update(evaluator(step, beta(max(step - 1, 0))))
            final = dict(metrics)
        if since_log and (step % cfg.train.log_every == 0 or step == steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            metrics.update({k: float(v) / since_log for k, v in acc.items()})
            metrics.update({f"estimator/{k}": float(v) for k, v in est_metrics.items()})
            metrics["train/beta"] = beta(step - 1)
            if tau is not None:
                metrics["train/tau"] = tau(step - 1)
            # training time only: evaluation inside the interval is not counted
            train_s = t_eval - t_interval - eval_in_interval
            metrics["perf/steps_per_s"] = since_log / max(train_s, 1e-9)
            metrics["perf/peak_mem_mb"] = peak_mem_mb(device)
            if cfg.train.compile:
                metrics["perf/compiled"] = float(step_model.compiled)
            for v in acc.values():
                v.zero_()
            since_log = 0
            t_interval, eval_in_interval = t_eval, 0.0
            bar.set_postfix(elbo=f"{metrics['train/elbo']:.2f}",
                            steps_s=f"{metrics['perf/steps_per_s']:.0f}", refresh=False)
            if int(first_bad) >= 0:
                raise NonFiniteError(f"non-finite train/loss at step {int(first_bad)}")
        if metrics:
            metrics["perf/wall_seconds"] = time.perf_counter() - t0
            metrics["perf/eval_seconds"] = eval_seconds + (time.perf_counter() - t_eval)
            log(step, metrics)
            bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
            if bad:
                raise NonFiniteError(f"non-finite {', '.join(bad)} at step {step}")
        spent = time.perf_counter() - t_eval
        eval_seconds += spent
        eval_in_interval += spent

    model.train()
    est.train()
    flush(0)
    try:
        for step in range(steps):
            batch = task.sample("train", B, gen)
            if tau is not None:
                est.tau = tau(step)
            obj = objective(step_model, est, batch, beta(step), lam, mode)
            loss = obj.loss
            if nan_at is not None and step == nan_at:
                loss = loss * float("nan")          # debug.nan_at_step: exercise the failure path
            opt.zero_grad(set_to_none=True)
            if est_opt is not None:
                est_opt.zero_grad(set_to_none=True)
            (loss if obj.aux_loss is None else loss + obj.aux_loss).backward()
            opt.step()
            if est_opt is not None:
                est_opt.step()
            with torch.no_grad():
                ld = loss.detach()
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(ld),
                                        torch.full_like(first_bad, step), first_bad)
                acc["train/loss"] += ld
                acc["train/elbo"] += obj.elbo.mean()
                acc["train/kl"] += obj.kl.mean()
            est_metrics = obj.metrics
            since_log += 1
            bar.update(1)
            done = step + 1
            if done % cfg.train.log_every == 0 or done % cfg.train.eval_every == 0 or done == steps:
                flush(done)
    except NonFiniteError:
        raise
    except Exception as e:
        if int(first_bad) >= 0:     # the error is a consequence of an earlier NaN
            raise NonFiniteError(f"non-finite train/loss at step {int(first_bad)} "
                                 f"(then {type(e).__name__}: {e})") from e
        raise
    finally:
        bar.close()
    return final
