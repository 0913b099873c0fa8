"""What the training loop accumulates between two logging steps.

Between logging steps nothing leaves the device, and a step adds no tensor
work: the meter keeps references to the step's detached loss (), elbo (B,)
and kl (B,), and `flush` reduces the interval in one go (three stacks and
means, the one host sync per interval). At the literature setting a step is
~10 ms and running on-device sums cost ~0.2 ms of it. The meter also splits
wall-clock time into training and evaluation: perf/steps_per_s counts
training time only. `state_dict` / `load_state_dict` carry an open interval
across a checkpoint (bench.job.checkpoint): its values, the estimator's last
metrics and the clocks as durations, so a resumed run's interval means are
those of the uninterrupted run and its wall time leaves out the downtime.

With train.compile the first training step of a process compiles, seconds
to minutes: `exclude_so_far` leaves the steps up to it out of perf/steps_per_s
(an interval of that step alone logs no rate). Later recompilations (a new
shape) are not left out.

perf/peak_mem_mb is the job's peak, from `reset_peak_mem` at its start (the
basic launcher runs jobs one after another in one process): on CUDA the peak
of allocated tensor memory; on CPU the peak resident set size (Linux: VmHWM,
reset through /proc/self/clear_refs, so it includes the interpreter, torch and
the data set). Where that reset is refused (not Linux, Linux < 4.0) the CPU
number is the process's high-water mark: a later job of the process reads at
least the earlier jobs' peak.
"""
from __future__ import annotations

import resource
import time
from typing import Optional

import torch

KEYS = ("train/loss", "train/elbo", "train/kl")


def reset_peak_mem(device: torch.device) -> None:
    """Start the peak that `peak_mem_mb` reads afresh (module docstring)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                # 5: the peak RSS := the current RSS, nothing else
    except OSError:
        pass                            # the process's high-water mark (module docstring)


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss     # Linux: KiB
    return kib / 1024


class IntervalMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.values: dict[str, list] = {k: [] for k in KEYS}   # the open interval's, per step
        self.first_step = 0                  # step of the interval's first value
        self.first_bad: Optional[int] = None  # first non-finite loss of a closed interval
        self.est_metrics: dict = {}          # the estimator's own metrics, last step's
        self.t0 = self.t_interval = time.perf_counter()
        self.eval_seconds = 0.0              # evaluation and logging time, whole run
        self.eval_in_interval = 0.0
        self.untimed = 0                     # steps of the open interval left out of the rate

    @property
    def steps(self) -> int:
        """Steps in the open interval."""
        return len(self.values["train/loss"])

    def add(self, step: int, obj, loss: torch.Tensor) -> None:
        """One training step's numbers: references only, no tensor op, no sync."""
        if not self.steps:
            self.first_step = step
        self.values["train/loss"].append(loss.detach())
        # detach() again (no tensor op): an estimator from outside that broke the
        # detached-value contract would otherwise keep log_every graphs alive here
        self.values["train/elbo"].append(obj.elbo.detach())
        self.values["train/kl"].append(obj.kl.detach())
        self.est_metrics = obj.metrics

    def _bad_in_interval(self, losses: Optional[torch.Tensor] = None) -> Optional[int]:
        if not self.steps:
            return None
        if losses is None:
            losses = torch.stack(self.values["train/loss"])
        bad = (~torch.isfinite(losses)).nonzero()
        return self.first_step + int(bad[0]) if len(bad) else None

    def bad_step(self) -> Optional[int]:
        """The first step whose loss was NaN/inf, or None (a host sync)."""
        return self.first_bad if self.first_bad is not None else self._bad_in_interval()

    def flush(self, now: float) -> dict[str, float]:
        """The interval's means, the estimator's metrics and steps/s; opens the next interval."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        steps = self.steps
        stacked = {k: torch.stack(v) for k, v in self.values.items()}   # (steps,), (steps, B)
        if self.first_bad is None:
            self.first_bad = self._bad_in_interval(stacked["train/loss"])
        metrics = {k: float(v.mean()) for k, v in stacked.items()}
        metrics.update({f"estimator/{k}": float(v) for k, v in self.est_metrics.items()})
        # training time only: evaluation inside the interval is not counted
        train_s = now - self.t_interval - self.eval_in_interval
        if steps > self.untimed:
            metrics["perf/steps_per_s"] = (steps - self.untimed) / max(train_s, 1e-9)
        self.values = {k: [] for k in KEYS}
        self.t_interval, self.eval_in_interval, self.untimed = now, 0.0, 0
        return metrics

    def exclude_so_far(self) -> None:
        """Leave the open interval's steps so far, and their time, out of
        perf/steps_per_s (compilation: module docstring). One device sync."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.untimed = self.steps
        self.t_interval, self.eval_in_interval = time.perf_counter(), 0.0

    def state_dict(self) -> dict:
        now = time.perf_counter()
        cpu = lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t   # noqa: E731
        return {"values": {k: [v.cpu() for v in vs] for k, vs in self.values.items()},
                "first_step": self.first_step, "first_bad": self.first_bad,
                "est_metrics": {k: cpu(v) for k, v in self.est_metrics.items()},
                "wall_s": now - self.t0, "eval_seconds": self.eval_seconds,
                "interval_s": now - self.t_interval, "eval_in_interval": self.eval_in_interval}

    def load_state_dict(self, state: dict) -> None:
        dev = lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t   # noqa: E731
        self.values = {k: [dev(v) for v in state["values"][k]] for k in KEYS}
        self.first_step, self.first_bad = int(state["first_step"]), state["first_bad"]
        self.est_metrics = {k: dev(v) for k, v in state["est_metrics"].items()}
        now = time.perf_counter()
        self.t0, self.t_interval = now - state["wall_s"], now - state["interval_s"]
        self.eval_seconds, self.eval_in_interval = state["eval_seconds"], state["eval_in_interval"]

    def add_eval_time(self, seconds: float) -> None:
        self.eval_seconds += seconds
        self.eval_in_interval += seconds
