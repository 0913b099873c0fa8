"""`film`: feature-wise scale and shift from the condition (Perez et al. 2018).

    FiLM(d_model, d_cond)(h, c) = (1 + γ(c)) · h + β(c),   [γ, β] = W c + b

Applied directly after a LayerNorm, so a block computes (1 + γ) · norm(h) + β:
after every block's norm in the image MLP, on both norms of every decoder
block in the sequence model (from the summed latent slots). W and b start at
zero: at initialisation every FiLM block is the identity and the network
equals its unconditioned version (zero-init as in x-transformers); the
gradient with respect to W is not zero, so the conditioning is learned.
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import Conditioning, broadcast_to_tokens, register


@register
class FiLM(Conditioning):
    name = "film"
    families = ("image", "sequence")

    def __init__(self, d_model: int, d_cond: int):
        super().__init__()
        self.proj = nn.Linear(d_cond, 2 * d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        gamma, beta = broadcast_to_tokens(h, self.proj(c)).chunk(2, -1)
        return (1 + gamma) * h + beta

    @classmethod
    def mlp_block(cls, d_model: int, d_cond: int) -> nn.Module:
        return cls(d_model, d_cond)

    @classmethod
    def block_modulation(cls, d_model: int, d_cond: int) -> nn.Module:
        return cls(d_model, d_cond)
