"""Low-rank adapters (LoRA: Hu et al. 2022, "LoRA: Low-Rank Adaptation of
Large Language Models", ICLR).

    LoRALinear(base: nn.Linear, rank, alpha)(h) = base(h) + (alpha / rank) · h Aᵀ Bᵀ
    A (rank, d_in) Kaiming-uniform, B (d_out, rank) zero

B starts at zero, so an adapted model computes exactly what its base computes
until the first update; the gradient with respect to B is not zero (A is
not), so the adapter learns. The base layer's weights are frozen here
(requires_grad=False) whatever the caller does afterwards: an adapter over a
trained base is the point.

Written here rather than taken from `peft`: peft requires transformers,
accelerate, huggingface_hub and safetensors (a large install for one
50-line layer), and wraps the whole model in its own PeftModel, while these
models are plain nn.Modules built by `models.build` whose state dicts are
read by the harness.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"lora_rank={rank!r} is not valid; it must be an integer >= 1")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scale = alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        # the initialisation of Hu et al.'s reference code (and of nn.Linear)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, h: Tensor) -> Tensor:
        return self.base(h) + self.scale * ((h @ self.lora_A.T) @ self.lora_B.T)

    def merged_weight(self) -> Tensor:
        """W + (alpha / rank) B A: the one matrix an exported model would hold."""
        return self.base.weight + self.scale * self.lora_B @ self.lora_A


def add_lora(module: nn.Module, targets: Iterable[str], rank: int, alpha: float) -> list[str]:
    """Replace each nn.Linear of `module` named in `targets` (dotted paths
    relative to `module`, e.g. "attn.qkv", "mlp.0") by a LoRALinear over it.
    Returns the paths replaced; a path that is not an nn.Linear raises."""
    done = []
    for path in targets:
        parent_path, _, name = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        layer = getattr(parent, name) if not name.isdigit() else parent[int(name)]
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"LoRA target {path!r} is a {type(layer).__name__}, not an nn.Linear")
        wrapped = LoRALinear(layer, rank, alpha)
        if name.isdigit():
            parent[int(name)] = wrapped
        else:
            setattr(parent, name, wrapped)
        done.append(path)
    return done


def adapter_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every adapter matrix inside `module`."""
    return [(n, p) for n, p in module.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B")]
