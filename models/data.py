"""The batch every task produces and every model consumes.

Axis legend: B batch, P pixels, L target length, Lc context length.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor


class Batch(NamedTuple):
    """One minibatch, already on the device.

    x      what is generated: pixels (B, P) float in {0, 1}, or target tokens (B, L) long
    c      the condition: class label (B,) long, or context tokens (B, Lc) long
    truth  (B,) long hidden strategy (the `strategies` task, evaluation only) or None
    """

    x: Tensor
    c: Tensor
    truth: Optional[Tensor] = None

    @property
    def size(self) -> int:
        return self.c.shape[0]

    def to(self, device) -> "Batch":
        return Batch(self.x.to(device), self.c.to(device),
                     None if self.truth is None else self.truth.to(device))

    def index(self, idx: Tensor) -> "Batch":
        """The rows `idx` (a long tensor on the same device): a gather, no host copy."""
        return Batch(self.x[idx], self.c[idx], None if self.truth is None else self.truth[idx])
