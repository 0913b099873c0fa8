"""Building blocks of the conv family (models.conv): a residual block with
GroupNorm and SiLU whose norms a conditioning type may modulate, down- and
upsampling by 2, and spatial self-attention (the blocks of the DDPM U-Net,
Ho et al. 2020, without the time embedding).

Axis legend: N rows (samples x batch folded), C channels, H, W height and
width, T = H*W positions, E condition width.
"""
from __future__ import annotations

from math import gcd
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attend
from .conditioning.base import Conditioning


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # the largest group count <= `groups` that divides the width, so any width builds
    return nn.GroupNorm(gcd(channels, groups), channels)


class ResBlock(nn.Module):
    """h + conv(act(mod(GN(conv(act(mod(GN(h)))))))), a 1x1 skip where widths differ.

    A conditioning class (or None) may modulate both GroupNorms from c (N, E)
    through its hook `conv_block_modulation` (adaln); with the default hook the
    block ignores c.
    """

    def __init__(self, c_in: int, c_out: int, conditioning=None, d_cond: int = 0, groups: int = 8):
        super().__init__()
        cond = conditioning or Conditioning
        self.norm1, self.norm2 = group_norm(c_in, groups), group_norm(c_out, groups)
        self.mod1 = cond.conv_block_modulation(c_in, d_cond)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.mod2 = cond.conv_block_modulation(c_out, d_cond)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        a = self.norm1(h)
        if self.mod1 is not None:
            a = self.mod1(a, c)
        a = self.conv1(F.silu(a))
        a = self.norm2(a)
        if self.mod2 is not None:
            a = self.mod2(a, c)
        return self.skip(h) + self.conv2(F.silu(a))                    # (N, C_out, H, W)


class Down(nn.Module):
    """A stride-2 3x3 convolution: (N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h)


class Up(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution (no checkerboard of a
    transposed convolution): (N, C_in, H, W) -> (N, C_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class SpatialAttention(nn.Module):
    """h + Attn(GN(h)) over the H*W positions (written-out attention,
    models.attention, so REBAR/RELAX can take second derivatives)."""

    def __init__(self, channels: int, n_heads: int = 1, groups: int = 8):
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"width {channels} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        N, C, H, W = h.shape
        q, k, v = self.qkv(self.norm(h)).view(N, 3, self.n_heads, C // self.n_heads, H * W) \
            .transpose(-1, -2).unbind(1)                                # (N, heads, T, C/heads) each
        a = attend(q, k, v).transpose(-1, -2).reshape(N, C, H, W)
        return h + self.out(a)


class ConvEncoder(nn.Module):
    """(N, 1, H, W) -> features (N, C2, H/4, W/4): stem, ResBlock x n at C0,
    [Down, ResBlock x n] x 2 (widths C1, C2), attention, GroupNorm, SiLU."""

    def __init__(self, widths: tuple[int, int, int], n_blocks: int, conditioning, d_cond: int,
                 groups: int, n_heads: int, c_in: int = 1):
        super().__init__()
        c0, c1, c2 = widths
        self.stem = nn.Conv2d(c_in, c0, 3, padding=1)
        self.blocks = nn.ModuleList()
        # the width changes in the first block of a level (its 1x1 skip), not in Down
        for level, (w_in, w) in enumerate(((c0, c0), (c0, c1), (c1, c2))):
            if level:
                self.blocks.append(Down(w_in, w_in))
            self.blocks.extend(ResBlock(w_in if i == 0 else w, w, conditioning, d_cond, groups)
                               for i in range(n_blocks))
        self.attn = SpatialAttention(c2, n_heads, groups)
        self.norm = group_norm(c2, groups)

    def forward(self, x: Tensor, c: Optional[Tensor]) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, c) if isinstance(block, ResBlock) else block(h)
        return F.silu(self.norm(self.attn(h)))                          # (N, C2, H/4, W/4)


class ConvDecoder(nn.Module):
    """Features (N, C2, h, w) -> logits (N, 1, 4h, 4w): the encoder mirrored.
    Attention, [ResBlock x n (the last one changes the width), Up] x 2 (widths
    C2 -> C1 -> C0), ResBlock x n at C0, GroupNorm, SiLU, 3x3 convolution.
    The width drops before each upsampling, as it rises after each downsampling
    in the encoder, so no wide convolution runs at the higher resolution."""

    def __init__(self, widths: tuple[int, int, int], n_blocks: int, conditioning, d_cond: int,
                 groups: int, n_heads: int, c_out: int = 1):
        super().__init__()
        c0, c1, c2 = widths
        self.attn = SpatialAttention(c2, n_heads, groups)
        self.blocks = nn.ModuleList()
        for level, (w, w_next) in enumerate(((c2, c1), (c1, c0), (c0, c0))):
            self.blocks.extend(ResBlock(w, w_next if i == n_blocks - 1 else w, conditioning, d_cond, groups)
                               for i in range(n_blocks))
            if level < 2:
                self.blocks.append(Up(w_next, w_next))
        self.norm = group_norm(c0, groups)
        self.out = nn.Conv2d(c0, c_out, 3, padding=1)

    def forward(self, h: Tensor, c: Optional[Tensor]) -> Tensor:
        h = self.attn(h)
        for block in self.blocks:
            h = block(h, c) if isinstance(block, ResBlock) else block(h)
        return self.out(F.silu(self.norm(h)))                           # (N, 1, 4h, 4w)
