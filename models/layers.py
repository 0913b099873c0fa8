"""Building blocks shared by the model families: a conditioned MLP and a
pre-norm transformer block with optional FiLM and cross-attention.

Axis legend: N rows (samples x batch folded), T tokens, M memory tokens,
d model width, E condition width.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from . import conditioning as cond_types
from .attention import attend


class CondMLP(nn.Module):
    """in -> [Linear -> LayerNorm -> condition -> ReLU] x n_layers -> Linear -> out.

    `conditioning` (a name or None) decides where c (..., E) enters: `concat`
    replaces the first Linear by Linear([h, c]); `add` and `film` act after
    each block's LayerNorm. With None the network ignores c; a zero-initialised
    `film` network has exactly the parameters (by name) of that network plus
    the FiLM maps, and the same output until those maps move.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int = 2,
                 conditioning: Optional[str] = None, d_cond: int = 0):
        super().__init__()
        if conditioning is not None:
            cond_types.check(conditioning, "image")
        self.conditioning = conditioning
        self.first = (cond_types.Concat(d_in, d_cond, d_hidden) if conditioning == "concat"
                      else nn.Linear(d_in, d_hidden))
        self.hidden = nn.ModuleList(nn.Linear(d_hidden, d_hidden) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(d_hidden) for _ in range(n_layers))
        block_cls = {"add": cond_types.Add, "film": cond_types.FiLM}.get(conditioning)
        self.mods = (nn.ModuleList(block_cls(d_hidden, d_cond) for _ in range(n_layers))
                     if block_cls else None)
        self.out = nn.Linear(d_hidden, d_out)

    def features(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        """The last hidden layer (..., d_hidden)."""
        h = self.first(h, c) if self.conditioning == "concat" else self.first(h)
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
    """Pre-norm transformer block; `film` modulates both norms from a vector
    (N, E), `xattn` adds a cross-attention sublayer over a memory (N, M, d)."""

    def __init__(self, d_model: int, n_heads: int, film_dim: int = 0, xattn: bool = False,
                 mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))
        self.film1 = cond_types.FiLM(d_model, film_dim) if film_dim else None
        self.film2 = cond_types.FiLM(d_model, film_dim) if film_dim else None
        self.xattn = cond_types.CrossAttention(d_model, n_heads) if xattn else None

    def forward(self, h: Tensor, causal: bool = True, cond: Optional[Tensor] = None,
                memory: Optional[Tensor] = None) -> Tensor:
        a = self.norm1(h)
        if self.film1 is not None:
            a = self.film1(a, cond)
        h = h + self.attn(a, causal)
        if self.xattn is not None:
            h = self.xattn(h, memory)
        m = self.norm2(h)
        if self.film2 is not None:
            m = self.film2(m, cond)
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
