"""A throw-away conditioning type for the image family: the label gates every
hidden layer, h * 2 sigmoid(W c) (the identity at W = 0, b = 0)."""
from __future__ import annotations

import torch
from torch import nn

from models.conditioning.base import Conditioning, register


@register
class Gate(Conditioning):
    name = "gate"
    families = ("image",)

    def __init__(self, d_model: int, d_cond: int):
        super().__init__()
        self.proj = nn.Linear(d_cond, d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h, c):
        return h * 2 * torch.sigmoid(self.proj(c))

    @classmethod
    def mlp_block(cls, d_model: int, d_cond: int) -> nn.Module:
        return cls(d_model, d_cond)
