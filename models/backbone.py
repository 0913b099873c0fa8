"""One causal transformer in the three roles of the sequence CVAE
(`model.backbone=shared`), its pooling and heads, its modes and its checkpoint.

The design of a CVAE on a language model (Bowman et al. 2016 put the latent
of a VAE on an LSTM language model; Li et al. 2020, "Optimus", on a
pretrained transformer): the same base model reads

    router     p(z | x)      `<bos> <x> x… </x>`                  pooled -> router head
    inference  q(z | x, y)   `<bos> <x> x… </x> <y> y… </y>`      pooled -> inference head
    decoder    p(y | x, z)   the conditioning type's layout, z through its hooks

For the router and the inference network the blocks run without their
conditioning modules (there is no z yet); pooling is attention with a
learned query per role, over every token of that role's input.

Modes (`model.backbone_mode`): `full` trains everything; `frozen` trains the
heads, the latent slots and the conditioning modules only; `lora` adds
low-rank adapters (models.lora; Hu et al. 2022) to every block's attention
and MLP projections and trains those besides. `frozen` and `lora` need a
trained base (`model.base`: a checkpoint path or the MLflow run id of
`python -m bench.pretrain`).

Axis legend: N rows, T tokens, d model width, V vocabulary.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .layers import Block
from .lora import add_lora
from .registry import check_choice, check_range

BACKBONES = ("separate", "shared")
MODES = ("frozen", "lora", "full")
LORA_TARGETS = ("attn.qkv", "attn.out", "mlp.0", "mlp.2")   # per block
COND_PARTS = ("mod1", "mod2", "xattn")   # Block attributes made by conditioning hooks: not base weights
ARTIFACT = "backbone/backbone.pt"        # where bench.pretrain logs the checkpoint in its run
FORMAT = "discrete-latent-bench/backbone/1"
# what a checkpoint must agree on, with the name an error uses
SPEC_NAMES = {"d_model": "width", "vocab_size": "vocabulary", "n_layers": "layers",
              "n_heads": "heads", "mlp_ratio": "mlp_ratio"}


def check_options(cfg: Any) -> None:
    """The backbone options of SequenceConfig (called from its __post_init__)."""
    check_choice("backbone", cfg.backbone, BACKBONES)
    check_choice("backbone_mode", cfg.backbone_mode, MODES)
    check_range("lora_rank", cfg.lora_rank, 1, integer=True)
    check_range("lora_alpha", cfg.lora_alpha, 0.0, lo_strict=True)
    if cfg.base is not None and not isinstance(cfg.base, str):
        raise ValueError(f"base={cfg.base!r} is not valid; it must be a checkpoint path or an MLflow run id")
    if cfg.backbone == "separate":
        if cfg.backbone_mode != "full" or cfg.base is not None:
            raise ValueError(f"backbone_mode={cfg.backbone_mode!r} and base={cfg.base!r} need "
                             f"backbone=shared; backbone=separate trains its own networks in full")
    elif cfg.backbone_mode != "full" and cfg.base is None:
        raise ValueError(f"backbone_mode={cfg.backbone_mode} needs a trained base model: set "
                         f"model.base=<checkpoint path or MLflow run id of bench.pretrain>; only "
                         f"backbone_mode=full may start from random initialisation")


class AttentionPool(nn.Module):
    """Attention pooling with a learned query (the [CLS]-free pooling of
    Lee et al. 2019, "Set Transformer", PMA with one seed): (N, T, d) -> (N, d)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(d_model))   # zero: starts as the mean over the span
        self.key = nn.Linear(d_model, d_model)

    def forward(self, h: Tensor) -> Tensor:
        scores = self.key(h) @ self.query.to(h.dtype) / math.sqrt(h.shape[-1])   # (N, T)
        return (scores.softmax(-1).unsqueeze(-1) * h).sum(1)


def head(d_model: int, n_out: int, zero: bool) -> nn.Sequential:
    """MLP head; `zero` zero-initialises its last layer (the router then starts
    as the uniform / N(0, I) prior, as the separate router does)."""
    mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, n_out))
    if zero:
        nn.init.zeros_(mlp[-1].weight)
        nn.init.zeros_(mlp[-1].bias)
    return mlp


class Backbone(nn.Module):
    """Causal pre-norm transformer language model: tok, pos, blocks (with the
    conditioning type's hooks, if any), norm, head (the LM head)."""

    def __init__(self, vocab_size: int, positions: int, d_model: int, n_heads: int, n_layers: int,
                 mlp_ratio: int, conditioning=None):
        super().__init__()
        self.spec = dict(d_model=d_model, vocab_size=vocab_size, n_layers=n_layers, n_heads=n_heads,
                         mlp_ratio=mlp_ratio, positions=positions)
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(positions, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, conditioning, mlp_ratio=mlp_ratio)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def features(self, tokens: Tensor) -> Tensor:
        """Final-norm states of the base model, conditioning modules bypassed:
        (N, T) long -> (N, T, d)."""
        h = self.tok(tokens) + self.pos.weight[: tokens.shape[1]]
        for b in self.blocks:
            h = h + b.attn(b.norm1(h), True)
            h = h + b.mlp(b.norm2(h))
        return self.norm(h)

    def lm_logits(self, tokens: Tensor) -> Tensor:
        """(N, T) long -> (N, T, V): next-token logits (pretraining)."""
        return self.head(self.features(tokens))

    # -- modes ---------------------------------------------------------------
    def is_base(self, name: str) -> bool:
        parts = name.split(".")
        return not any(p in COND_PARTS or p.startswith("lora_") for p in parts)

    def base_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if self.is_base(n)]

    def add_adapters(self, rank: int, alpha: float) -> None:
        for block in self.blocks:
            add_lora(block, LORA_TARGETS, rank, alpha)

    def freeze_base(self) -> None:
        for p in self.base_parameters():
            p.requires_grad_(False)

    # -- checkpoint ----------------------------------------------------------
    def base_state_dict(self) -> dict[str, Tensor]:
        """The base model's weights under adapter-free names (a LoRA layer's
        `….base.weight` saved as `….weight`)."""
        return {n.replace(".base.", "."): t.detach().cpu().clone() for n, t in self.state_dict().items()
                if self.is_base(n)}

    def checkpoint(self) -> dict:
        return {"format": FORMAT, "spec": dict(self.spec), "state": self.base_state_dict()}

    def load_base(self, ckpt: dict, where: str = "model.base") -> None:
        """Load a checkpoint's base weights; a mismatch is a ValueError naming what differs.
        A longer position table is cut to this model's (its first rows)."""
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ValueError(f"{where}: not a backbone checkpoint of bench.pretrain (format {FORMAT})")
        spec = ckpt["spec"]
        diff = [f"{SPEC_NAMES[k]} ({k}): checkpoint {spec.get(k)}, model {v}"
                for k, v in self.spec.items() if k in SPEC_NAMES and spec.get(k) != v]
        if spec.get("positions", 0) < self.spec["positions"]:
            diff.append(f"positions: checkpoint {spec.get('positions')}, model needs "
                        f"{self.spec['positions']}")
        if diff:
            raise ValueError(f"{where}: the checkpoint does not fit this model: " + "; ".join(diff))
        state = dict(ckpt["state"])
        if "pos.weight" in state:
            state["pos.weight"] = state["pos.weight"][: self.spec["positions"]]
        own = self.base_state_dict().keys()
        if set(state) != set(own):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ValueError(f"{where}: the checkpoint's weights differ from this model's: "
                             f"missing {missing[:5]}, unexpected {extra[:5]}")
        result = self.load_state_dict(state, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys


def save_checkpoint(backbone: Backbone, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.checkpoint(), path)
    return path


def load_checkpoint(ref: str, tracking_uri: Optional[str] = None) -> dict:
    """A checkpoint by file path, or by the MLflow run id of `bench.pretrain`
    (its artifact `backbone/backbone.pt`, from MLFLOW_TRACKING_URI unless given)."""
    path = Path(ref).expanduser()
    if not path.is_file():
        if not re.fullmatch(r"[0-9a-f]{32}", ref):
            raise ValueError(f"model.base={ref!r}: no such checkpoint file, and not an MLflow run id")
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        try:
            import mlflow
            path = Path(mlflow.artifacts.download_artifacts(run_id=ref, artifact_path=ARTIFACT,
                                                            tracking_uri=uri))
        except Exception as e:  # noqa: BLE001 -- any failure to fetch is the same user error
            raise ValueError(f"model.base={ref!r}: no checkpoint {ARTIFACT} in MLflow run {ref} "
                             f"(store {uri or 'the MLflow default'}): {type(e).__name__}: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file
        raise ValueError(f"model.base={ref!r}: {path} is not a readable checkpoint: {e}") from e
