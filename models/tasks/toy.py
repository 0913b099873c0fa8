"""`toy`: maximise E_{b ~ Bern(sigmoid(theta))}[-(b - t)^2] (Tucker et al. 2017;
Grathwohl et al. 2018).

t = 0.45 follows Tucker et al. 2017 (REBAR), t = 0.499 Grathwohl et al. 2018
(RELAX); the closer t is to 1/2, the smaller the true gradient relative to the
noise. There is no data: batches are dummies of the requested size (x (B, 0),
c (B,) zeros) so the harness loop runs unchanged; the model carries t.
"""
from __future__ import annotations

import torch

from ..data import Batch
from ..registry import check_range
from .base import Task, register


class ToyTask(Task):
    def sample(self, split, batch_size, generator=None) -> Batch:
        self._raw(split)                       # validates the split name
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not valid; it must be an integer >= 1")
        return dummy(batch_size, self.device)


def dummy(B: int, device) -> Batch:
    return Batch(torch.zeros(B, 0, device=device), torch.zeros(B, dtype=torch.long, device=device))


@register("toy")
def load_toy(*, device="cpu", seed: int = 0, t: float = 0.45, D: int = 1) -> Task:
    """The REBAR/RELAX toy with target t and D independent Bernoulli variables."""
    check_range("t", t, 0.0, 1.0)
    check_range("D", D, 1, integer=True)
    splits = {k: dummy(1, "cpu") for k in ("train", "val", "test")}
    return ToyTask("toy", "toy", {"t": float(t), "D": D}, splits,
                   device=device, seed=seed)
