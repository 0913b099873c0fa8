"""`spatial_concat`: the label as a learned 1 x h x w map concatenated to the
features of the conv family (the conditional-VAE recipe of Sohn et al. 2015,
with the one-hot label replaced by a learned spatial map at the latent
resolution).

    SpatialConcat(C_in, E, C_out, (h, w))(h, c) = Conv([h; M c]),  M c: (N, 1, h, w)

Enters twice: before the encoder's 1x1 latent head (the map joins the
lowest-resolution features) and at the decoder's input (the map joins the
z map before the first 3x3 convolution). M is a linear map of the label
embedding, so each class has its own learned map.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Conditioning, register


@register
class SpatialConcat(Conditioning):
    name = "spatial_concat"
    families = ("conv",)

    def __init__(self, c_in: int, d_cond: int, c_out: int, size: tuple[int, int], kernel: int):
        super().__init__()
        self.size = tuple(size)
        self.label_map = nn.Linear(d_cond, self.size[0] * self.size[1])
        self.conv = nn.Conv2d(c_in + 1, c_out, kernel, padding=kernel // 2)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        m = self.label_map(c).view(-1, 1, *self.size).to(h.dtype)     # (N, 1, h, w)
        return self.conv(torch.cat([h, m], 1))                         # (N, C_out, h, w)

    @classmethod
    def conv_head(cls, c_in: int, d_cond: int, c_out: int, size: tuple[int, int]) -> nn.Module:
        return cls(c_in, d_cond, c_out, size, kernel=1)

    @classmethod
    def conv_input(cls, c_in: int, d_cond: int, c_out: int, size: tuple[int, int]) -> nn.Module:
        return cls(c_in, d_cond, c_out, size, kernel=3)
