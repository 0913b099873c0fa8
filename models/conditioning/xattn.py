"""`xattn`: decoder states attend to condition tokens (Vaswani et al. 2017).

    CrossAttention(d_model, n_heads)(h (N, T, d), memory (N, M, d)) -> (N, T, d)
    = h + Attn(query = norm(h), keys = values = memory)      (pre-norm residual)

No mask: every decoder position may see every condition token, which are all
known before generation starts.
"""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ..attention import attend


class CrossAttention(nn.Module):
    name: ClassVar[str] = "xattn"
    families: ClassVar[tuple[str, ...]] = ("sequence",)

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
