"""The training loop of one run: `train(cfg, log) -> final metrics`.

    train(cfg, log=lambda step, metrics: ..., desc="gumbel-concat")
    Trainer(cfg, log).run()                       # the same, as an object

Steps count optimiser updates. At step s (updates done so far) the loop logs,
in one `log(s, metrics)` call per step:
- evaluation (bench.job.evaluate: val/*, grad/*, collapse/*) at s = 0, every
  `train.eval_every` and at s = train.steps, so even a short run has a curve;
- train/loss, train/elbo, train/kl, train/beta (means over the interval),
  estimator/* (the estimator's own metrics, last value), perf/steps_per_s,
  cost/f_evals (evaluations of f per example so far: steps x Estimator.f_evaluations),
  perf/peak_mem_mb, perf/eval_seconds, perf/wall_seconds every `train.log_every`
  (perf/peak_mem_mb: the job's peak since it started; perf/steps_per_s leaves out
  the compiling first step with train.compile: bench.job.meter says how).

Between logging steps nothing leaves the device (bench.job.meter); a NaN/inf
loss or evaluation metric raises `NonFiniteError` at the next flush. That is
also how non-finite logits surface on an accelerator, where the estimator does
not check them per step (estimators.base); on a CPU it raises at once.

Device and speed: `device=auto` is CUDA when present; the data set lives on
the device and minibatches are gathered there. The training step sees the
model through bench.job.accel.step_view: the bare model for fp32 eager, else a
StepModel applying `train.precision` (fp32 | tf32 | bf16: the networks only,
estimators always fp32) and `train.compile` (torch.compile of the model's
forward pieces, eager fallback with a warning; perf/compiled logs 1 while
compiled code runs). Evaluation always uses the plain fp32 model.

Per step: a minibatch drawn by index on the device, beta(t) from `kl`, the
temperature schedule assigned to `est.tau` (estimators whose class declares
`temperature`), the objective of bench.job.objective, one Adam step on the model
(its learned prior by SGD at `train.prior_lr` instead, when set) and, when the
estimator has parameters (learned baselines, control variates, REBAR's tau and
eta), one Adam step of its own optimiser on `aux_loss`.
Same seed, same device -> identical metrics (CPU).

Checkpoints (bench.job.checkpoint), when the job runner passes `checkpoint`:
the whole state every `train.checkpoint_every` steps, and at the first step
boundary after SIGTERM/SIGUSR1/SIGUSR2, which then raises `Preempted`. The
state of step N is taken after N updates and before step N is logged;
`restore(state)` before `run()` continues from there, so that an interrupted
and resumed run logs exactly what the uninterrupted one does (CPU).
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from . import checkpoint as CK
from .accel import step_view
from .build import build, pick_device
from .evaluate import Evaluator
from .meter import IntervalMeter, peak_mem_mb, reset_peak_mem
from .objective import objective
from .schedules import kl_schedule, temperature_schedule

Log = Callable[[int, dict], None]
# (local file, folder in the run's artifacts): files a run produces besides metrics
Artifact = Callable[[Path, str], None]


class NonFiniteError(RuntimeError):
    """The loss or an evaluation metric became NaN or infinite."""


def adam_kernel(cfg) -> dict:
    """Adam's implementation: `train.fused_adam` picks torch's fused kernel,
    else torch's default (foreach) is left to choose."""
    return {"fused": True} if cfg.train.get("fused_adam", False) else {}


class Trainer:
    def __init__(self, cfg, log: Log, desc: str = "", artifact: Optional[Artifact] = None,
                 task=None, checkpoint: Optional[CK.Checkpointing] = None):
        self.cfg, self.log, self.desc, self.checkpoint = cfg, log, desc, checkpoint
        self.artifact = artifact or (lambda path, folder: None)
        self.device = device = pick_device(cfg.device)
        reset_peak_mem(device)          # perf/peak_mem_mb: this job's, not the process's
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.task, self.model, self.est = task, model, est = build(cfg, device, task)
        lat = model.latent
        # evaluations of f per example per step: the unit of equal-compute comparisons
        self.f_per_step = est.f_evaluations(lat.D, getattr(lat, "K", 1))
        budget = cfg.train.f_evals
        self.steps = steps = cfg.train.steps if budget is None else max(1, budget // self.f_per_step)
        self.lam, self.mode = float(cfg.kl.free_bits), cfg.kl.free_bits_mode
        self.sampled = cfg.kl.form == "sampled"      # the KL inside f (bench.job.objective)
        self.beta = kl_schedule(cfg.kl, steps)
        self.tau = temperature_schedule(cfg.temperature, est.tau, steps) if est.temperature else None
        self.evaluator = Evaluator(cfg, task, model, est, self.lam, self.mode, artifact=self.artifact)

        # dry run: estimators with lazily shaped networks (learned baseline, RELAX)
        # create their parameters at the first call; their optimiser needs them.
        # Eval mode and a forked RNG: no EMA update, no draw taken from training.
        model.eval()
        est.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            objective(model, est, self.evaluator.gbatch, self.beta(0), self.lam, self.mode,
                      self.sampled)
        self.opt, self.prior_opt = self.optimisers(cfg, model)
        est_params = [p for p in est.parameters() if p.requires_grad]
        self.est_opt = torch.optim.Adam(
            est_params, lr=cfg.train.estimator_lr, betas=(cfg.train.estimator_beta1, 0.999),
            **adam_kernel(cfg)) if est_params else None
        self.opts = list(self.named_opts().values())   # stepped together, every step
        self.step_model = step_view(model, device, cfg.train.precision, cfg.train.compile)
        self.final: dict[str, float] = {}
        self.gen = task.generator(cfg.seed)     # the training minibatches
        self.meter = IntervalMeter(device)
        self.start, self.rng = 0, None          # set by restore()
        self.saved: Optional[int] = None        # the step of the checkpoint on disk
        self.stopped = None     # (signal, previous handler): a stop signal met no step boundary

    def named_opts(self) -> dict:
        return {k: o for k, o in (("model", self.opt), ("prior", self.prior_opt),
                                  ("estimator", self.est_opt)) if o is not None}

    def state(self, step: int) -> dict:
        """Everything the rest of the run depends on, after `step` updates
        (bench.job.checkpoint says what and why)."""
        ck = self.checkpoint
        return {"format": CK.FORMAT, "config_hash": ck.config_hash, "run_id": ck.run_id,
                "config": ck.config, "step": step, "device": self.device.type,
                "model": self.model.state_dict(), "estimator": self.est.state_dict(),
                "estimator_attrs": CK.scalar_attrs(self.est),
                "optimisers": {k: o.state_dict() for k, o in self.named_opts().items()},
                "rng": CK.rng_state(self.device), "generator": self.gen.get_state(),
                "meter": self.meter.state_dict(), "final": dict(self.final)}

    def restore(self, state: dict) -> None:
        """Continue from a checkpoint (CheckpointMismatch when it does not fit)."""
        path = self.checkpoint.path if self.checkpoint is not None else "<state>"
        if not 0 < state["step"] <= self.steps:
            raise CK.CheckpointMismatch(path, f"step {state['step']} is outside 1..{self.steps}")
        CK.load_module(path, "model", self.model, state["model"])
        CK.load_module(path, "estimator", self.est, state["estimator"])
        CK.set_scalar_attrs(path, self.est, state["estimator_attrs"])
        CK.load_optimisers(path, self.named_opts(), state["optimisers"])
        there, here = CK.device_of(state), self.device.type
        if there == here:
            self.gen.set_state(state["generator"])
        else:           # bench.job.checkpoint: states that do not carry over, re-seeded
            self.gen.manual_seed(CK.reseed(self.cfg.seed, state["step"]))
            warnings.warn(f"checkpoint {path} was written on {there}, this run is on {here}: "
                          "the data generator and CUDA RNG states do not carry over and are "
                          "re-seeded from (seed, step); the run continues deterministically, "
                          "not with the uninterrupted run's draws", RuntimeWarning, stacklevel=2)
        self.meter.load_state_dict(state["meter"])
        self.final = dict(state["final"])
        self.start, self.rng = state["step"], state["rng"]   # RNG: set where run() starts
        self.saved = state["step"]

    def save(self, step: int) -> None:
        self.checkpoint.sync()      # every point before step N in the store first
        CK.save(self.checkpoint.path, self.state(step), kept=self.saved)
        self.saved = step

    def boundary(self, done: int) -> bool:
        """Does step `done` (updates so far) log anything?"""
        t = self.cfg.train
        return done % t.log_every == 0 or done % t.eval_every == 0 or done == self.steps

    def run(self) -> dict[str, float]:
        """Train for train.steps (from the restored step); return the last
        evaluation's metrics."""
        cfg, steps, ck, start = self.cfg, self.steps, self.checkpoint, self.start
        gen, meter = self.gen, self.meter
        nan_at = cfg.debug.nan_at_step
        self.bar = tqdm(total=steps, initial=start, desc=self.desc, file=sys.stdout,
                        dynamic_ncols=True, mininterval=1.0,
                        disable=not (cfg.progress and sys.stdout.isatty()))
        if self.rng is not None:
            CK.set_rng_state(self.rng, self.device, CK.reseed(cfg.seed, start))
        self.model.train()
        self.est.train()
        with CK.StopSignals(enabled=ck is not None) as stop:   # only while training
            try:
                if start == 0 or self.boundary(start):
                    self.flush(start)           # a resumed run logs the step of its checkpoint
                for step in range(start, steps):
                    batch = self.task.sample("train", cfg.train.batch_size, gen)
                    if self.tau is not None:
                        self.est.tau = self.tau(step)
                    obj = objective(self.step_model, self.est, batch, self.beta(step),
                                    self.lam, self.mode, self.sampled)
                    loss = obj.loss
                    if nan_at is not None and step == nan_at:
                        loss = loss * float("nan")      # debug.nan_at_step: the failure path
                    self.update(loss, obj.aux_loss)
                    meter.add(step, obj, loss)
                    if step == start and cfg.train.compile:
                        meter.exclude_so_far()  # this step compiled: not a speed
                    self.bar.update(1)
                    done = step + 1
                    if stop.caught is not None:
                        try:
                            self.save(done)
                        except CK.WriteFailed as e:     # still KILLED, resumable from the last one
                            raise CK.Preempted(stop.caught, self.saved, ck.path,
                                               stop.previous[stop.caught], failed=e) from e
                        raise CK.Preempted(stop.caught, done, ck.path, stop.previous[stop.caught])
                    if ck is not None and ck.due(done, steps):
                        self.save(done)
                    if self.boundary(done):
                        self.flush(done)
                if stop.caught is not None:     # during the last step's logging: the run is done
                    self.stopped = (stop.caught, stop.previous[stop.caught])
            except (NonFiniteError, CK.Preempted):
                raise
            except Exception as e:
                bad = meter.bad_step()
                if bad is not None:     # the error is a consequence of an earlier NaN
                    raise NonFiniteError(f"non-finite train/loss at step {bad} "
                                         f"(then {type(e).__name__}: {e})") from e
                raise
            finally:
                self.bar.close()
        return self.final

    @staticmethod
    def optimisers(cfg, model):
        """(Adam on the model, SGD on its learned prior or None). With train.prior_lr
        set, the parameters `model.prior_parameters()` names get their own SGD
        (DisARM, Dong et al. 2020: prior logits by SGD at 1e-2) and leave the Adam."""
        lr, kernel = cfg.train.prior_lr, adam_kernel(cfg)
        if lr is None:
            return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, **kernel), None
        prior = model.prior_parameters()
        if not prior:
            raise ValueError(f"train.prior_lr={lr!r} is not valid for this model: it has no "
                             f"learned prior (set model.learned_prior=true, or train.prior_lr=null)")
        ids = {id(p) for p in prior}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return torch.optim.Adam(rest, lr=cfg.train.lr, **kernel), torch.optim.SGD(prior, lr=lr)

    def update(self, loss: torch.Tensor, aux_loss) -> None:
        """One Adam step on the model, one SGD step on its prior when train.prior_lr
        is set and, when it has parameters, one Adam step on the estimator."""
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        (loss if aux_loss is None else loss + aux_loss).backward()
        for opt in self.opts:
            opt.step()

    def flush(self, step: int) -> None:
        """Evaluate and/or log at `step` (updates done so far), one `log` call."""
        cfg, meter = self.cfg, self.meter
        metrics: dict[str, float] = {}
        t_eval = time.perf_counter()
        if step == 0 or step % cfg.train.eval_every == 0 or step == self.steps:
            metrics.update(self.evaluator(step, self.beta(max(step - 1, 0)), final=step == self.steps))
            self.final = dict(metrics)
        if step == 0:           # what a frozen / LoRA backbone leaves to train
            params = list(self.model.parameters())
            metrics["model/parameters"] = float(sum(p.numel() for p in params))
            metrics["model/trainable_parameters"] = float(sum(p.numel() for p in params
                                                              if p.requires_grad))
        if meter.steps and (step % cfg.train.log_every == 0 or step == self.steps):
            metrics.update(meter.flush(t_eval))
            metrics["train/beta"] = self.beta(step - 1)
            if self.tau is not None:
                metrics["train/tau"] = self.tau(step - 1)
            metrics["perf/peak_mem_mb"] = peak_mem_mb(self.device)
            metrics["cost/f_evals"] = float(step * self.f_per_step)
            if cfg.train.compile:
                metrics["perf/compiled"] = float(self.step_model.compiled)
            self.bar.set_postfix(elbo=f"{metrics['train/elbo']:.2f}",
                                 steps_s=f"{metrics.get('perf/steps_per_s', math.nan):.0f}", refresh=False)
            bad = meter.bad_step()
            if bad is not None:
                raise NonFiniteError(f"non-finite train/loss at step {bad}")
        if metrics:
            metrics["perf/wall_seconds"] = time.perf_counter() - meter.t0
            metrics["perf/eval_seconds"] = meter.eval_seconds + (time.perf_counter() - t_eval)
            self.log(step, metrics)
            bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
            if bad:
                raise NonFiniteError(f"non-finite {', '.join(bad)} at step {step}")
        meter.add_eval_time(time.perf_counter() - t_eval)


def train(cfg, log: Log, desc: str = "", artifact: Optional[Artifact] = None,
          task=None, checkpoint: Optional[CK.Checkpointing] = None) -> dict[str, float]:
    return Trainer(cfg, log, desc, artifact, task, checkpoint).run()
