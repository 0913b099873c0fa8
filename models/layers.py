"""Building blocks shared by the model families: a conditioned MLP and a
pre-norm transformer block, each calling the hooks of a conditioning type
(models.conditioning.base) where the condition may enter.

Axis legend: N rows (samples x batch folded), T tokens, M memory tokens,
d model width, E condition width.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attend
from .conditioning.base import Conditioning


def _relu(h: Tensor, slope: float) -> Tensor:
    return F.relu(h)


def _leaky_relu(h: Tensor, slope: float) -> Tensor:
    return F.leaky_relu(h, slope)


def _tanh(h: Tensor, slope: float) -> Tensor:
    return torch.tanh(h)


# activation name -> f(h, negative_slope): module-level functions, so a model pickles
ACTIVATIONS = {"relu": _relu, "leaky_relu": _leaky_relu, "tanh": _tanh}
# norm name -> module factory (width -> module); the papers' MLPs have none
NORMS = {"layer": nn.LayerNorm, "none": lambda d: nn.Identity()}


def widths_of(d_hidden: Union[int, Sequence[int]], n_layers: int) -> list[int]:
    """`d_hidden` as one width per hidden layer: an int repeats n_layers times."""
    return [d_hidden] * n_layers if isinstance(d_hidden, int) else list(d_hidden)


class CondMLP(nn.Module):
    """in -> [Linear -> norm -> condition -> activation] x layers -> Linear -> out.

    `d_hidden` is one width (repeated `n_layers` times) or a list of widths,
    one per hidden layer (DisARM's encoder 784-200-200-200: [200, 200, 200]).
    An empty list is one linear map in -> out (the "linear" sigmoid belief
    net of REBAR, RELAX and DisARM): then `first` is that map and the
    condition's block module, if its type has one, acts on its output.

    `conditioning` (a conditioning class, a registered name, or None for none)
    decides where c (..., E) enters through its hooks `mlp_input` (the first
    layer) and `mlp_block` (after each norm). With None the network ignores
    c; a zero-initialised `film` network has the parameters of that network
    plus the FiLM maps, and the same output until those maps move.
    `norm` (layer | none) and `activation` (relu | leaky_relu | tanh, with
    `negative_slope`) are looked up in NORMS and ACTIVATIONS.
    """

    def __init__(self, d_in: int, d_hidden: Union[int, Sequence[int]], d_out: int, n_layers: int = 2,
                 conditioning=None, d_cond: int = 0, activation: str = "relu",
                 negative_slope: float = 0.01, norm: str = "layer"):
        super().__init__()
        if isinstance(conditioning, str):
            from . import conditioning as types
            types.check(conditioning, "image")
            conditioning = types.get(conditioning)
        cond = conditioning or Conditioning
        widths = widths_of(d_hidden, n_layers)
        self.widths, self.slope = widths, negative_slope
        self.act = ACTIVATIONS[activation]
        # creation order first, hidden, norms, mods, out: the seed's initial weights
        self.first = cond.mlp_input(d_in, d_cond, widths[0] if widths else d_out)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(NORMS[norm](w) for w in widths)
        mods = [cond.mlp_block(w, d_cond) for w in (widths or [d_out])]
        self.mods = nn.ModuleList(mods) if mods[0] is not None else None
        self.out = nn.Linear(widths[-1], d_out) if widths else None

    def features(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        """The last hidden layer (..., d_hidden[-1]); the input itself when there is none."""
        if not self.widths:
            return h
        h = self.first(h, c)
        for i, norm in enumerate(self.norms):
            if i > 0:
                h = self.hidden[i - 1](h)
            h = norm(h)
            if self.mods is not None:
                h = self.mods[i](h, c)
            h = self.act(h, self.slope)
        return h

    def head(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        """`features` (..., d) -> the output (..., d_out)."""
        if self.out is not None:
            return self.out(h)
        h = self.first(h, c)                        # the one linear map
        return h if self.mods is None else self.mods[0](h, c)

    def forward(self, h: Tensor, c: Optional[Tensor] = None) -> Tensor:
        return self.head(self.features(h, c), c)

    def output_bias(self) -> Tensor:
        """The bias of the layer that writes the output (d_out,)."""
        layer = self.out if self.out is not None else \
            [m for m in self.first.modules() if isinstance(m, nn.Linear)][-1]
        return layer.bias


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
