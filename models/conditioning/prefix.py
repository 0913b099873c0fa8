"""`prefix`: the condition and the latent are prepended to the decoder's input
as tokens, so ordinary causal self-attention reads them:

    <bos> <x> x… </x> <z> slots </z> <y> y…

with the latent slot(s) embedded as z @ table (categorical) or a projection of
z (Gaussian). Sequence family only: an MLP has no token axis to prepend to.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Conditioning, DecoderTokens, register


class PrefixInput(nn.Module):
    def forward(self, t: DecoderTokens):
        head = t.embed(torch.cat([t.bos, t.x, t.z_open], 1))        # (N, Lc + 4, d)
        tail = t.embed(torch.cat([t.z_close, t.y_in], 1))           # (N, 1 + L, d)
        h = torch.cat([head, t.slots.to(head.dtype), tail], 1)      # (N, T, d)
        return h + t.pos[: h.shape[1]], None, None


@register
class Prefix(Conditioning):
    name = "prefix"
    families = ("sequence",)

    @classmethod
    def decoder_input(cls, d_model: int, n_heads: int, config, n_memory: int) -> nn.Module:
        return PrefixInput()
