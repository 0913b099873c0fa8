"""What the training loop accumulates between two logging steps.

Between logging steps nothing leaves the device: the interval's sums of
train/loss, train/elbo, train/kl and a "first non-finite step" marker are
tensors, so the one host sync per interval is `flush`. The meter also splits
wall-clock time into training and evaluation: perf/steps_per_s counts
training time only. `state_dict` / `load_state_dict` carry an open interval
across a checkpoint (bench.job.checkpoint): its sums, the estimator's last
metrics and the clocks as durations, so a resumed run's interval means are
those of the uninterrupted run and its wall time leaves out the downtime.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

SUMS = ("train/loss", "train/elbo", "train/kl")


class IntervalMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.sums = {k: torch.zeros((), device=device) for k in SUMS}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.est_metrics: dict = {}          # the estimator's own metrics, last step's
        self.steps = 0                       # steps in the open interval
        self.t0 = self.t_interval = time.perf_counter()
        self.eval_seconds = 0.0              # evaluation and logging time, whole run
        self.eval_in_interval = 0.0

    def add(self, step: int, obj, loss: torch.Tensor) -> None:
        """One training step's numbers, without a host sync."""
        with torch.no_grad():
            ld = loss.detach()
            self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(ld),
                                         torch.full_like(self.first_bad, step), self.first_bad)
            self.sums["train/loss"] += ld
            self.sums["train/elbo"] += obj.elbo.mean()
            self.sums["train/kl"] += obj.kl.mean()
        self.est_metrics = obj.metrics
        self.steps += 1

    def bad_step(self) -> Optional[int]:
        """The first step whose loss was NaN/inf, or None (a host sync)."""
        step = int(self.first_bad)
        return step if step >= 0 else None

    def flush(self, now: float) -> dict[str, float]:
        """The interval's means, the estimator's metrics and steps/s; opens the next interval."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        metrics = {k: float(v) / self.steps for k, v in self.sums.items()}
        metrics.update({f"estimator/{k}": float(v) for k, v in self.est_metrics.items()})
        # training time only: evaluation inside the interval is not counted
        train_s = now - self.t_interval - self.eval_in_interval
        metrics["perf/steps_per_s"] = self.steps / max(train_s, 1e-9)
        for v in self.sums.values():
            v.zero_()
        self.steps = 0
        self.t_interval, self.eval_in_interval = now, 0.0
        return metrics

    def state_dict(self) -> dict:
        now = time.perf_counter()
        cpu = lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t   # noqa: E731
        return {"sums": {k: v.cpu() for k, v in self.sums.items()},
                "first_bad": self.first_bad.cpu(),
                "est_metrics": {k: cpu(v) for k, v in self.est_metrics.items()},
                "steps": self.steps, "wall_s": now - self.t0, "eval_seconds": self.eval_seconds,
                "interval_s": now - self.t_interval, "eval_in_interval": self.eval_in_interval}

    def load_state_dict(self, state: dict) -> None:
        dev = lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t   # noqa: E731
        self.sums = {k: state["sums"][k].to(self.device) for k in SUMS}
        self.first_bad = state["first_bad"].to(self.device)
        self.est_metrics = {k: dev(v) for k, v in state["est_metrics"].items()}
        self.steps = int(state["steps"])
        now = time.perf_counter()
        self.t0, self.t_interval = now - state["wall_s"], now - state["interval_s"]
        self.eval_seconds, self.eval_in_interval = state["eval_seconds"], state["eval_in_interval"]

    def add_eval_time(self, seconds: float) -> None:
        self.eval_seconds += seconds
        self.eval_in_interval += seconds
