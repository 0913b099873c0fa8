"""Building blocks shared by the model families: a conditioned MLP and a
pre-norm transformer block, each calling the hooks of a conditioning type
(models.conditioning.base) where the condition may enter.

Axis legend: N rows (samples x batch folded), T tokens, M memory tokens,
d model width, E condition width.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attend
from .conditioning.base import Conditioning


class CondMLP(nn.Module):
    """in -> [Linear -> LayerNorm -> condition -> ReLU] x n_layers -> Linear -> out.

    `conditioning` (a conditioning class, a registered name, or None for none)
    decides where c (..., E) enters through its hooks `mlp_input` (the first
    layer) and `mlp_block` (after each LayerNorm). With None the network
    ignores c; a zero-initialised `film` network has the parameters of that
    network plus the FiLM maps, and the same output until those maps move.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int = 2,
                 conditioning=None, d_cond: int = 0):
        super().__init__()
        if isinstance(conditioning, str):
            from . import conditioning as types
            types.check(conditioning, "image")
            conditioning = types.get(conditioning)
        cond = conditioning or Conditioning
        self.first = cond.mlp_input(d_in, d_cond, d_hidden)
        self.hidden = nn.ModuleList(nn.Linear(d_hidden, d_hidden) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(d_hidden) for _ in range(n_layers))
        mods = [cond.mlp_block(d_hidden, d_cond) for _ in range(n_layers)]
        self.mods = nn.ModuleList(mods) if mods[0] is not None else None
        self.out = nn.Linear(d_hidden, d_out)

    def features(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        """The last hidden layer (..., d_hidden)."""
        h = self.first(h, c)
        for i, norm in enumerate(self.norms):
            if i > 0:
                h = self.hidden[i - 1](h)
            h = norm(h)
            if self.mods is not None:
                h = self.mods[i](h, c)
            h = F.relu(h)
        return h

    def forward(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        return self.out(self.features(h, c))


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, h: Tensor, causal: bool) -> Tensor:
        N, T, d = h.shape
        H = self.n_heads
        q, k, v = self.qkv(h).view(N, T, 3, H, d // H).permute(2, 0, 3, 1, 4)   # (N, H, T, d/H) each
        a = attend(q, k, v, causal)
        return self.out(a.transpose(1, 2).reshape(N, T, d))


class Block(nn.Module):
    """Pre-norm transformer block. A conditioning class (or None) may modulate
    both norms from a vector (N, E) (`block_modulation`: film) and add a
    cross-attention sublayer over a memory (N, M, d) (`block_cross_attention`:
    xattn)."""

    def __init__(self, d_model: int, n_heads: int, conditioning=None, mlp_ratio: int = 2,
                 d_cond: Optional[int] = None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))
        cond = conditioning or Conditioning
        d_cond = d_model if d_cond is None else d_cond
        self.mod1 = cond.block_modulation(d_model, d_cond)
        self.mod2 = cond.block_modulation(d_model, d_cond)
        self.xattn = cond.block_cross_attention(d_model, n_heads)

    def forward(self, h: Tensor, causal: bool = True, cond: Optional[Tensor] = None,
                memory: Optional[Tensor] = None) -> Tensor:
        a = self.norm1(h)
        if self.mod1 is not None:
            a = self.mod1(a, cond)
        h = h + self.attn(a, causal)
        if self.xattn is not None:
            h = self.xattn(h, memory)
        m = self.norm2(h)
        if self.mod2 is not None:
            m = self.mod2(m, cond)
        return h + self.mlp(m)


class TokenEncoder(nn.Module):
    """Bidirectional encoder: token + position embeddings -> blocks -> LayerNorm
    -> mean over tokens. (N, T) long -> (N, d)."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int,
                 mlp_ratio: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio=mlp_ratio) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h, causal=False)
        return self.norm(h).mean(1)
