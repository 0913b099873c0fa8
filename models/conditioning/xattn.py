"""`xattn`: decoder states attend to condition tokens (Vaswani et al. 2017).

    CrossAttention(d_model, n_heads)(h (N, T, d), memory (N, M, d)) -> (N, T, d)
    = h + Attn(query = norm(h), keys = values = memory)      (pre-norm residual)

The decoder reads `<bos> <y> y…`; every block attends to a memory made of the
context tokens and the latent slots, encoded by `memory_layers` blocks. No
mask: every decoder position may see every condition token, all known before
generation starts. Sequence family only.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import attend
from ..layers import Block
from .base import Conditioning, DecoderTokens, register


class MemoryInput(nn.Module):
    def __init__(self, d_model: int, n_heads: int, config, n_memory: int):
        super().__init__()
        self.mem_pos = nn.Embedding(n_memory, d_model)
        self.memory = nn.ModuleList(Block(d_model, n_heads, mlp_ratio=config.mlp_ratio)
                                    for _ in range(config.memory_layers))

    def forward(self, t: DecoderTokens):
        h = t.embed(torch.cat([t.bos, t.y_in], 1))                         # (N, 1 + L, d)
        mem = torch.cat([t.embed(t.context), t.slots.to(h.dtype)], 1)      # (N, Lc + Dz, d)
        memory = mem + self.mem_pos.weight[: mem.shape[1]]
        for block in self.memory:
            memory = block(memory, causal=False)
        return h + t.pos[: h.shape[1]], memory, None


@register
class CrossAttention(Conditioning):
    name = "xattn"
    families = ("sequence",)

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, h: Tensor, memory: Tensor) -> Tensor:
        N, T, d = h.shape
        H = self.n_heads
        q = self.q(self.norm(h)).view(N, T, H, d // H).transpose(1, 2)          # (N, H, T, d/H)
        k, v = self.kv(memory).view(N, -1, 2, H, d // H).permute(2, 0, 3, 1, 4)  # (N, H, M, d/H) each
        a = attend(q, k, v)                                                      # (N, H, T, d/H)
        return h + self.out(a.transpose(1, 2).reshape(N, T, d))

    @classmethod
    def block_cross_attention(cls, d_model: int, n_heads: int) -> nn.Module:
        return cls(d_model, n_heads)

    @classmethod
    def decoder_input(cls, d_model: int, n_heads: int, config, n_memory: int) -> nn.Module:
        return MemoryInput(d_model, n_heads, config, n_memory)
