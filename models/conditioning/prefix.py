"""`prefix`: the condition and the latent are prepended to the decoder's input
as tokens (or latent slots), so ordinary causal self-attention reads them.

    Prefix()(h (N, T, d), prefix (N, M, d)) -> (N, M + T, d)

The sequence model builds the prefix of the DESIGN.md template
`<bos> <x> x… </x> <z> k </z>` with the latent slot(s) embedded as z @ table
(categorical) or a projection of z (Gaussian), then `<y>` and the targets.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class Prefix(nn.Module):
    name: ClassVar[str] = "prefix"
    families: ClassVar[tuple[str, ...]] = ("sequence",)

    def forward(self, h: Tensor, prefix: Tensor) -> Tensor:
        return torch.cat([prefix, h], 1)
