"""The conditioning-type contract: how the condition (and, in the sequence
model, the latent) enters a network, stated once.

A conditioning type is one class in one file of this package, registered
with `@register`; `families` declares which model families take it (the only
declaration of that fact). A family builds its networks by calling the
class's hooks; the defaults below mean "does not enter here", so a type
overrides only the hooks where it acts:

image family (models.layers.CondMLP: in -> [Linear, LayerNorm, hook, ReLU] x n -> out)
    mlp_input(d_in, d_cond, d_out)   the first layer, called as layer(h, c)
    mlp_block(d_model, d_cond)       after each block's LayerNorm, m(h, c); None: nothing

sequence family (models.sequence: pre-norm causal transformer decoder)
    block_modulation(d_model, d_cond)       on both norms of every block, m(h, vec); None: nothing
    block_cross_attention(d_model, n_heads) after self-attention, m(h, memory); None: nothing
    decoder_input(d_model, n_heads, config, n_memory)
                                     a module mapping `DecoderTokens` to the decoder's
                                     input stream (N, T, d), the memory for cross-attention
                                     (N, M, d) or None, and the vector for modulation (N, d)
                                     or None; default: `<bos> <x> x… </x> <y> y…` with the
                                     summed latent slots as the vector

conv family (models.conv: residual U-shaped encoder / decoder on (N, C, H, W) maps)
    conv_block_modulation(channels, d_cond)
                                     after each GroupNorm of every residual block, m(h, c)
                                     with h (N, C, H, W), c (N, E); None: nothing
    conv_head(c_in, d_cond, c_out, size)
                                     the encoder's 1x1 latent head at the latent map of
                                     size (h, w), called as layer(h, c)
    conv_input(c_in, d_cond, c_out, size)
                                     the decoder's first 3x3 convolution on the z map
                                     (N, Cz, h, w), called as layer(z, c)

Modules created by the hooks are created in the order the family calls them,
so a given seed gives the same initial weights whatever else is registered.

Axis legend: B batch, N = S*B rows (samples x batch), T tokens, M memory
tokens, Dz latent slots, d model width, E condition width, C channels,
H, W feature-map height and width.
"""
from __future__ import annotations

from typing import Callable, ClassVar, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..registry import Registry

CONDITIONING: Registry[type["Conditioning"]] = Registry(
    "conditioning", package=__name__.rsplit(".", 1)[0],
    entry_points="discrete_latent_bench.conditioning")


def register(cls: type["Conditioning"]) -> type["Conditioning"]:
    return CONDITIONING.register(cls.name)(cls)


def broadcast_to_tokens(h: Tensor, c: Tensor) -> Tensor:
    """c (..., E) -> (..., T, E) when h carries a token axis c lacks."""
    if h.dim() == c.dim() + 1:
        c = c.unsqueeze(-2).expand(*h.shape[:-1], c.shape[-1])
    return c


class DecoderTokens(NamedTuple):
    """What the sequence decoder hands its conditioning type's input module."""
    embed: Callable[[Tensor], Tensor]  # (B, T) long -> (N, T, d), the same tokens for every sample
    bos: Tensor          # (B, 1) <bos>
    x: Tensor            # (B, Lc + 2) <x> x… </x>
    z_open: Tensor       # (B, 1) <z>
    z_close: Tensor      # (B, 1) </z>
    y_in: Tensor         # (B, L) <y> y… (teacher forcing: the targets shifted right)
    context: Tensor      # (B, Lc) x alone
    slots: Tensor        # (N, Dz, d) latent slot embeddings
    pos: Tensor          # (P, d) the decoder's position table


class IgnoreCondition(nn.Module):
    """A layer that takes (h, c) and ignores c."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        return self.layer(h)


class InlineInput(nn.Module):
    """`<bos> <x> x… </x> <y> y…`; the vector is the summed latent slots, which
    `inject(h, vec)` (when given) adds to every token embedding."""

    def __init__(self, inject: Optional[nn.Module] = None):
        super().__init__()
        self.inject = inject

    def forward(self, t: DecoderTokens):
        h = t.embed(torch.cat([t.bos, t.x, t.y_in], 1))              # (N, T, d)
        vec = t.slots.sum(1).to(h.dtype)                              # (N, d)
        h = h + t.pos[: h.shape[1]]
        if self.inject is not None:
            h = self.inject(h, vec)
        return h, None, vec


class Conditioning(nn.Module):
    """Base class of conditioning types; its hooks are the "not here" defaults
    (module docstring). With no conditioning type at all, a family uses these."""

    name: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ()
    # False: the family builds nothing for the label (no embedding, one prior table)
    uses_condition: ClassVar[bool] = True

    @classmethod
    def mlp_input(cls, d_in: int, d_cond: int, d_out: int) -> nn.Module:
        return IgnoreCondition(nn.Linear(d_in, d_out))

    @classmethod
    def mlp_block(cls, d_model: int, d_cond: int) -> Optional[nn.Module]:
        return None

    @classmethod
    def block_modulation(cls, d_model: int, d_cond: int) -> Optional[nn.Module]:
        return None

    @classmethod
    def block_cross_attention(cls, d_model: int, n_heads: int) -> Optional[nn.Module]:
        return None

    @classmethod
    def decoder_input(cls, d_model: int, n_heads: int, config, n_memory: int) -> nn.Module:
        return InlineInput()

    @classmethod
    def conv_block_modulation(cls, channels: int, d_cond: int) -> Optional[nn.Module]:
        return None

    @classmethod
    def conv_head(cls, c_in: int, d_cond: int, c_out: int, size: tuple[int, int]) -> nn.Module:
        return IgnoreCondition(nn.Conv2d(c_in, c_out, 1))

    @classmethod
    def conv_input(cls, c_in: int, d_cond: int, c_out: int, size: tuple[int, int]) -> nn.Module:
        return IgnoreCondition(nn.Conv2d(c_in, c_out, 3, padding=1))
