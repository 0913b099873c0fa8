"""`concat`: the condition is concatenated to the network's input features.

    Concat(d_in, d_cond, d_out)(h (..., [T,] d_in), c (..., d_cond)) -> (..., [T,] d_out)

It replaces the first linear layer: Linear([h, c]). A vector condition is
broadcast over a token axis when h has one more dimension than c.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


def broadcast_to_tokens(h: Tensor, c: Tensor) -> Tensor:
    """c (..., E) -> (..., T, E) when h carries a token axis c lacks."""
    if h.dim() == c.dim() + 1:
        c = c.unsqueeze(-2).expand(*h.shape[:-1], c.shape[-1])
    return c


class Concat(nn.Module):
    name: ClassVar[str] = "concat"
    families: ClassVar[tuple[str, ...]] = ("image", "sequence")

    def __init__(self, d_in: int, d_cond: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in + d_cond, d_out)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return self.proj(torch.cat([h, broadcast_to_tokens(h, c)], -1))
