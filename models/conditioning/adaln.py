"""`adaln`: adaptive GroupNorm from the label in every residual block of the
conv family (adaLN-Zero: Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers" (DiT); adaptive GroupNorm as in Dhariwal & Nichol 2021).

    AdaLN(C, E)(h, c) = (1 + γ(c)) · h + β(c),   [γ, β] = W c + b,  per channel

Applied directly after each GroupNorm of a residual block (both norms, encoder
and decoder), so the block computes γ'(y) · GroupNorm(h) + β(y) with
γ' = 1 + γ. W and b start at zero, as in adaLN-Zero, so every block starts as
its unconditioned self and the network at initialisation equals the conv
network without a condition; the gradient with respect to W is not zero, so
the modulation is learned. DiT's zero-initialised residual gate α is left
out: with it a block would start as the identity, not as its unconditioned self.

Relation to `film`: the same affine map of a normalised activation (Perez et al.
2018), applied per channel of a GroupNorm-ed feature map and broadcast over
space, where film acts per unit after the MLP's LayerNorm.
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import Conditioning, register


@register
class AdaLN(Conditioning):
    name = "adaln"
    families = ("conv",)

    def __init__(self, channels: int, d_cond: int):
        super().__init__()
        self.proj = nn.Linear(d_cond, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        gamma, beta = self.proj(c)[..., None, None].chunk(2, 1)       # (N, C, 1, 1) each
        return (1 + gamma) * h + beta

    @classmethod
    def conv_block_modulation(cls, channels: int, d_cond: int) -> nn.Module:
        return cls(channels, d_cond)
