"""Scaled dot-product attention written out.

Not F.scaled_dot_product_attention: its fused CPU and CUDA kernels have no
second derivative, and REBAR and RELAX differentiate their own gradient
(d/d eta, tau of |d surrogate / d logits|^2) through the decoder. At the
sequence lengths used here the explicit form costs about the same.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def attend(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """q (N, H, T, e), k and v (N, H, M, e) -> (N, H, T, e)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])          # (N, H, T, M)
    if causal:
        T, M = scores.shape[-2:]
        mask = torch.ones(T, M, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(-1) @ v
