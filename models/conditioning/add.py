"""`add`: a learned embedding of the condition is added to hidden features.

    Add(d_model, d_cond)(h (..., [T,] d_model), c (..., d_cond)) -> h + W c

The image model adds it after every block's normalisation; the sequence model
adds the summed latent slots to every token embedding (the "add z to every
input" of Bowman et al. 2016).
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import Conditioning, InlineInput, broadcast_to_tokens, register


@register
class Add(Conditioning):
    name = "add"
    families = ("image", "sequence")

    def __init__(self, d_model: int, d_cond: int):
        super().__init__()
        self.proj = nn.Linear(d_cond, d_model)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + broadcast_to_tokens(h, self.proj(c))

    @classmethod
    def mlp_block(cls, d_model: int, d_cond: int) -> nn.Module:
        return cls(d_model, d_cond)

    @classmethod
    def decoder_input(cls, d_model: int, n_heads: int, config, n_memory: int) -> nn.Module:
        return InlineInput(inject=cls(d_model, d_model))
