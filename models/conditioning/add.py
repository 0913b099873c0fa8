"""`add`: a learned embedding of the condition is added to hidden features.

    Add(d_model, d_cond)(h (..., [T,] d_model), c (..., d_cond)) -> h + W c

The image model adds it after every block's normalisation; the sequence model
adds it to the token embeddings (the "add z to every input" of Bowman et al. 2016).
"""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from .concat import broadcast_to_tokens


class Add(nn.Module):
    name: ClassVar[str] = "add"
    families: ClassVar[tuple[str, ...]] = ("image", "sequence")

    def __init__(self, d_model: int, d_cond: int):
        super().__init__()
        self.proj = nn.Linear(d_cond, d_model)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + broadcast_to_tokens(h, self.proj(c))
