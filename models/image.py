"""Class-conditional VAE on binarised images (Kingma et al. 2014; Sohn et al. 2015).

    encoder  q(z | x, y)   MLP on pixels, label through the conditioning module
                           (`encoder_conditioned=False`: q(z | x))
    decoder  p(x | z, y)   MLP on the flattened code, label through the
                           conditioning module; Bernoulli pixels
    prior    p(z | y)      uniform / N(0, I), or a learned table per class
                           (`learned_prior`, zero-initialised = the fixed prior)

A categorical z (S, B, D, K) is flattened to (S, B, D*K) before the first
linear layer, which is the embedding z @ table summed over variables: hard,
soft and straight-through samples all pass.

Batch: x (B, P) float in {0, 1}, c (B,) long label. Axis legend: S samples,
B batch, P pixels, D latent variables, K categories, E label embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FAMILIES, LatentModel
from .data import Batch
from .layers import CondMLP
from .registry import check_latent_options, check_range


@dataclass
class ImageConfig:
    hidden: int = 128                  # MLP width of encoder and decoder
    n_layers: int = 2                  # hidden layers per MLP
    d_cond: int = 32                   # width of the learned label embedding
    encoder_conditioned: bool = True   # q(z | x, y); False: q(z | x)
    learned_prior: bool = False        # p(z | y) learned per class; False: uniform / N(0, I)
    latent_dropout: float = 0.0        # P(decoder gets the learned "no latent" code), training only

    def __post_init__(self):
        check_latent_options(self)
        for key in ("hidden", "n_layers", "d_cond"):
            check_range(key, getattr(self, key), 1, integer=True)


@FAMILIES.register("image")
class ImageCVAE(LatentModel):
    family = "image"
    Config = ImageConfig

    def __init__(self, task, latent, conditioning: str = "film", config: Optional[ImageConfig] = None):
        super().__init__(task, latent, conditioning, config)
        config = self.config
        P, n_classes = task.spec["n_pixels"], task.spec["n_classes"]
        n_params = int(torch.Size(latent.param_shape).numel())
        code = latent.code_size()
        enc_cond = conditioning if config.encoder_conditioned else None
        self.enc_label = nn.Embedding(n_classes, config.d_cond) if enc_cond else None
        self.encoder = CondMLP(P, config.hidden, n_params, config.n_layers, enc_cond, config.d_cond)
        self.dec_label = nn.Embedding(n_classes, config.d_cond)
        self.decoder = CondMLP(code, config.hidden, P, config.n_layers, conditioning, config.d_cond)
        self.prior_table = nn.Embedding(n_classes, n_params) if config.learned_prior else None
        if self.prior_table is not None:
            nn.init.zeros_(self.prior_table.weight)
        self.null_code = nn.Parameter(torch.zeros(code))       # the "no latent" input

    def _enc_features(self, batch: Batch) -> Tensor:
        c = self.enc_label(batch.c) if self.enc_label is not None else None
        return self.encoder.features(batch.x.to(self.null_code.dtype), c)  # (B, hidden)

    def posterior(self, batch: Batch) -> Tensor:
        out = self.encoder.out(self._enc_features(batch))                   # (B, D*K | D*2)
        return out.view(batch.size, *self.latent.param_shape)

    def prior(self, batch: Batch) -> Tensor:
        if self.prior_table is None:
            return self.fixed_prior(batch, self.null_code)
        return self.prior_table(batch.c).view(batch.size, *self.latent.param_shape)

    def logits(self, batch: Batch, z: Tensor) -> Tensor:
        """Pixel logits (S, B, P) of p(x | z, c)."""
        self.check_z(batch, z)
        S, B = z.shape[:2]
        code = z.reshape(S, B, -1)                                          # (S, B, D*K | D)
        code = self.drop_latent(code.reshape(S * B, -1), self.null_code,
                                self.config.latent_dropout).view(S, B, -1)
        c = self.dec_label(batch.c).expand(S, B, -1)                        # (S, B, E)
        return self.decoder(code, c)                                        # (S, B, P)

    def decode_mean(self, batch: Batch, z: Tensor) -> Tensor:
        """E[x | z, c] (S, B, P): the Bernoulli means (samples, adherence)."""
        return torch.sigmoid(self.logits(batch, z))

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        logits = self.logits(batch, z)                                      # (S, B, P)
        x = batch.x.to(logits.dtype).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)   # (S, B)

    def context(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self._enc_features(batch).detach()                       # (B, hidden)
