"""`concat`: the condition is concatenated to the network's input features.

    Concat(d_in, d_cond, d_out)(h (..., [T,] d_in), c (..., d_cond)) -> (..., [T,] d_out)

It replaces the first linear layer: Linear([h, c]). In the sequence model
every token embedding is concatenated with the summed latent slots.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Conditioning, InlineInput, broadcast_to_tokens, register


@register
class Concat(Conditioning):
    name = "concat"
    families = ("image", "sequence")

    def __init__(self, d_in: int, d_cond: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in + d_cond, d_out)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return self.proj(torch.cat([h, broadcast_to_tokens(h, c)], -1))

    @classmethod
    def mlp_input(cls, d_in: int, d_cond: int, d_out: int) -> nn.Module:
        return cls(d_in, d_cond, d_out)

    @classmethod
    def decoder_input(cls, d_model: int, n_heads: int, config, n_memory: int) -> nn.Module:
        return InlineInput(inject=cls(d_model, d_model, d_model))
