"""Sequence CVAE with a strategy latent (a router, an inference network and a
strategy-conditioned decoder).

    router     p(z | x)      pooled embedding of the context -> MLP, last layer
                             zero-initialised (starts as the uniform / N(0, I)
                             prior); `learned_prior=False`: the fixed prior
    inference  q(z | x, y)   bidirectional encoder over `<x> x… </x> <y> y… </y>`,
                             mean-pooled (`encoder_conditioned=False`: `<y> y… </y>`)
    decoder    p(y | x, z)   small causal transformer, teacher forced

`backbone=shared` (models.backbone) runs one causal transformer in all three
roles instead, with learned pooling and heads for the router and the
inference network, optionally from a pretrained base (`base`) and frozen or
LoRA-adapted (`backbone_mode`); the decoder side below is the same, with the
backbone's embeddings, blocks and LM head.

The latent becomes slot embeddings (N, Dz, d): a categorical z gives D slots,
slot_d = z_d @ table_d (so soft and straight-through z work); a Gaussian z one
slot, a linear projection of z to model width. Latent dropout replaces a
row's slots with a learned "no latent" embedding (training mode only).
The conditioning type decides where x and the slots go, through its hooks
(models.conditioning.base): the decoder's input stream, a memory for
cross-attention, a vector that modulates the blocks' norms:

  prefix  `<bos> <x> x… </x> <z> slots </z> <y> y…`
  xattn   `<bos> <y> y…`, every block attends to memory = encoder([x; slots])
  film    `<bos> <x> x… </x> <y> y…`, γ, β of every norm from the summed slots
  add     same layout, summed slots added to every token embedding
  concat  same layout, Linear([token embedding, summed slots]) per token

Only the L target tokens are scored: `</y> <eos>` follow from the fixed length
and would add the same constant for every model.

Batch: x (B, L) long targets, c (B, Lc) long context (ids from the task, the
first ids reserved for the specials in spec["specials"]). Axis legend: S
samples, B batch, N = S*B rows, T tokens, D latent variables, K categories,
d model width.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import backbone as bb
from . import conditioning as types
from .base import FAMILIES, LatentModel
from .conditioning import DecoderTokens
from .data import Batch
from .layers import Block, TokenEncoder
from .registry import check_latent_options, check_range


@dataclass
class SequenceConfig:
    d_model: int = 64                  # transformer width everywhere
    n_layers: int = 2                  # decoder blocks (shared: the backbone's blocks)
    n_heads: int = 4                   # attention heads
    mlp_ratio: int = 2                 # block MLP width / d_model (2, not 4: the MLP dominates CPU time)
    encoder_layers: int = 1            # blocks of the inference network q(z | x, y) (separate)
    memory_layers: int = 1             # blocks encoding the xattn memory (xattn only)
    encoder_conditioned: bool = True   # q(z | x, y); False: q(z | y)
    learned_prior: bool = True         # router p(z | x); False: uniform / N(0, I)
    latent_dropout: float = 0.0        # P(a sequence's decoder gets no latent), training only
    backbone: str = "separate"         # separate: three networks | shared: one causal transformer
    backbone_mode: str = "full"        # shared: frozen | lora | full (frozen, lora need `base`)
    base: Optional[str] = None         # shared: checkpoint path or MLflow run id of bench.pretrain
    lora_rank: int = 8                 # lora: adapter rank r
    lora_alpha: float = 16.0           # lora: adapter scale alpha (update scaled by alpha / r)

    def __post_init__(self):
        for key in ("d_model", "n_layers", "n_heads", "mlp_ratio"):
            check_range(key, getattr(self, key), 1, integer=True)
        for key in ("encoder_layers", "memory_layers"):
            check_range(key, getattr(self, key), 0, integer=True)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not valid; it must be divisible "
                             f"by n_heads={self.n_heads}")
        check_latent_options(self)
        bb.check_options(self)


@FAMILIES.register("sequence")
class SequenceCVAE(LatentModel):
    family = "sequence"
    Config = SequenceConfig

    @classmethod
    def latent_sizes(cls, task) -> dict[str, dict]:
        # categorical: one variable with two categories per hidden strategy
        return {"categorical": dict(D=1, K=2 * task.spec["n_strategies"]), "gaussian": dict(D=8)}

    def __init__(self, task, latent, conditioning: str = "film", config: Optional[SequenceConfig] = None):
        super().__init__(task, latent, conditioning, config)
        config, spec = self.config, task.spec
        V, L, Lc = spec["vocab_size"], spec["length"], spec["context_length"]
        self.sp = dict(spec["specials"])                                  # token name -> id
        d, H = config.d_model, config.n_heads
        n_params = int(torch.Size(latent.param_shape).numel())
        self.categorical = latent.estimator_kind == "categorical"
        self.n_slots = latent.D if self.categorical else 1

        self.shared = config.backbone == "shared"
        if self.shared:
            self._build_shared(task, n_params)
            return

        # inference network q(z | x, y) and router p(z | x)
        self.encoder = TokenEncoder(V, Lc + L + 4, d, H, config.encoder_layers, config.mlp_ratio)
        self.enc_head = nn.Linear(d, n_params)
        if config.learned_prior:
            self.router_tok = nn.Embedding(V, d)
            self.router_pos = nn.Embedding(Lc, d)
            self.router = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, n_params))
            nn.init.zeros_(self.router[-1].weight)
            nn.init.zeros_(self.router[-1].bias)
        self._build_slots(d)

        # decoder
        self.tok = nn.Embedding(V, d)
        self.pos = nn.Embedding(Lc + L + self.n_slots + 5, d)
        cond = types.get(conditioning)
        self.blocks = nn.ModuleList(Block(d, H, cond, mlp_ratio=config.mlp_ratio)
                                    for _ in range(config.n_layers))
        self.decoder_input = cond.decoder_input(d, H, config, Lc + self.n_slots)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, V)

    def _build_slots(self, d: int) -> None:
        """Latent slots: z @ table (categorical) or a projection (Gaussian)."""
        latent = self.latent
        if self.categorical:
            self.z_table = nn.Parameter(0.02 * torch.randn(latent.D, latent.K, d))
        else:
            self.z_proj = nn.Linear(latent.D, d)
        self.slot_pos = nn.Parameter(0.02 * torch.randn(self.n_slots, d))
        self.null_slots = nn.Parameter(0.02 * torch.randn(self.n_slots, d))

    def _build_shared(self, task, n_params: int) -> None:
        """One backbone for router, inference network and decoder (models.backbone)."""
        config, spec = self.config, task.spec
        V, L, Lc = spec["vocab_size"], spec["length"], spec["context_length"]
        d, H = config.d_model, config.n_heads
        cond = types.get(self.conditioning)
        self.backbone = bb.Backbone(V, Lc + L + self.n_slots + 5, d, H, config.n_layers,
                                    config.mlp_ratio, cond)
        self.enc_pool = bb.AttentionPool(d)
        self.enc_head = bb.head(d, n_params, zero=False)
        if config.learned_prior:
            self.router_pool = bb.AttentionPool(d)
            self.router = bb.head(d, n_params, zero=True)
        self._build_slots(d)
        self.decoder_input = cond.decoder_input(d, H, config, Lc + self.n_slots)
        if config.base is not None:
            self.backbone.load_base(bb.load_checkpoint(config.base), f"model.base={config.base!r}")
        if config.backbone_mode == "lora":
            self.backbone.add_adapters(config.lora_rank, config.lora_alpha)
        if config.backbone_mode != "full":
            self.backbone.freeze_base()

    def trainable_parameters(self) -> int:
        """Number of parameter elements the optimiser updates (requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- token helpers -------------------------------------------------------
    def _special(self, name: str, n: int, device) -> Tensor:
        return torch.full((n, 1), self.sp[name], dtype=torch.long, device=device)

    def _x_tokens(self, batch: Batch) -> list[Tensor]:
        B, dev = batch.size, batch.c.device
        return [self._special("<x>", B, dev), batch.c, self._special("</x>", B, dev)]

    def _enc_features(self, batch: Batch) -> Tensor:
        B, dev = batch.size, batch.x.device
        y = [self._special("<y>", B, dev), batch.x, self._special("</y>", B, dev)]
        x = self._x_tokens(batch)
        tokens = torch.cat((x + y) if self.config.encoder_conditioned else y, 1)
        if self.shared:   # the whole (x, y) sequence, as the base model read it in pretraining
            bos = self._special("<bos>", B, dev)
            return self.enc_pool(self.backbone.features(torch.cat([bos, tokens], 1)))   # (B, d)
        return self.encoder(tokens)                                          # (B, d)

    # -- the contract --------------------------------------------------------
    def posterior(self, batch: Batch) -> Tensor:
        return self.enc_head(self._enc_features(batch)).view(batch.size, *self.latent.param_shape)

    def prior(self, batch: Batch) -> Tensor:
        if not self.config.learned_prior:
            return self.fixed_prior(batch, self.slot_pos)
        if self.shared:   # x alone: the causal base model's states over `<bos> <x> x… </x>`
            bos = self._special("<bos>", batch.size, batch.c.device)
            h = self.router_pool(self.backbone.features(torch.cat([bos, *self._x_tokens(batch)], 1)))
            return self.router(h).view(batch.size, *self.latent.param_shape)
        h = self.router_tok(batch.c) + self.router_pos.weight[: batch.c.shape[1]]
        return self.router(h.mean(1)).view(batch.size, *self.latent.param_shape)

    def context(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self._enc_features(batch).detach()                       # (B, d)

    def slots(self, z: Tensor) -> Tensor:
        """Latent slot embeddings, latent dropout applied: (S, B, ...) -> (S*B, Dz, d)."""
        S, B = z.shape[:2]
        if self.categorical:
            s = torch.einsum("sbdk,dke->sbde", z, self.z_table.to(z.dtype))   # (S, B, D, d)
        else:
            s = self.z_proj(z).unsqueeze(2)                                     # (S, B, 1, d)
        s = s.reshape(S * B, self.n_slots, -1)
        return self.drop_latent(s, self.null_slots, self.config.latent_dropout) + self.slot_pos

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        self.check_z(batch, z)
        S, B = z.shape[:2]
        N, dev, L = S * B, batch.x.device, batch.x.shape[1]
        slots = self.slots(z)                                                   # (N, Dz, d)
        y_in = torch.cat([self._special("<y>", B, dev), batch.x[:, :-1]], 1)  # (B, L)
        bos = self._special("<bos>", B, dev)
        x_tok = torch.cat(self._x_tokens(batch), 1)
        dec = self.backbone if self.shared else self      # both hold tok, pos, blocks, norm, head

        def rows(t: Tensor) -> Tensor:   # (B, T, d) -> (N, T, d): the same tokens for every sample
            return t.unsqueeze(0).expand(S, *t.shape).reshape(N, *t.shape[1:])

        h, memory, vec = self.decoder_input(DecoderTokens(
            embed=lambda tokens: rows(dec.tok(tokens)), bos=bos, x=x_tok,
            z_open=self._special("<z>", B, dev), z_close=self._special("</z>", B, dev),
            y_in=y_in, context=batch.c, slots=slots, pos=dec.pos.weight))
        for block in dec.blocks:
            h = block(h, causal=True, cond=vec, memory=memory)
        logits = dec.head(dec.norm(h[:, -L:]))                               # (N, L, V)
        target = batch.x.unsqueeze(0).expand(S, B, L).reshape(N, L)
        nll = F.cross_entropy(logits.reshape(N * L, -1), target.reshape(-1), reduction="none")
        return -nll.view(S, B, L).sum(-1)                                       # (S, B)
