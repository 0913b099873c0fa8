"""Convolutional class-conditional VAE with a spatial latent (`family="conv"`):
residual blocks with GroupNorm and SiLU, downsampling by 2 twice, one
self-attention block at the lowest resolution and a mirrored decoder (the
DDPM U-Net's blocks, Ho et al. 2020, without skips across the bottleneck:
Kingma & Welling 2014; Sohn et al. 2015 for the conditional VAE).

    encoder  q(z | x, y)   x (B, 1, H, W) -> features (B, C2, h, w), h = H/4, w = W/4,
                           -> 1x1 latent head (conditioning hook `conv_head`)
    decoder  p(x | z, y)   z map (N, Cz, h, w) -> 3x3 input conv (hook `conv_input`)
                           -> mirrored blocks -> logits (N, 1, H, W)
    prior    p(z | y)      uniform / N(0, I), or a learned table per class
                           (`learned_prior`, zero-initialised = the fixed prior)

The label enters through the conditioning type's hooks (models.conditioning.base:
`conv_block_modulation` in every residual block, `conv_head`, `conv_input`).
The decoder reads nothing else of the batch, so a z that every example shares
(the exact estimator's enumeration) is decoded once per class and gathered by
label (`logits` says why every class rather than the batch's labels).

Latent layout (one position = one cell of the h x w latent map):
    categorical   one variable of K categories per position: D = h*w, z (S, B, D, K)
                  -> the one-hot map (N, K, h, w)
    gaussian      C channels per position: D = C*h*w (channel-major), z (S, B, D)
                  -> (N, C, h, w)
Any other D is refused at build time with the valid value (8x8 digits: h*w = 4;
28x28: 49). `default_latent` gives K = 10 and C = 4.

Likelihood: `bernoulli` on binarised pixels (the tasks' default), or
`gaussian` with fixed standard deviation `sigma` on grey levels in [0, 1]
(squared error; the KL weight is the knob, as in the tutorials). The mean
image is sigmoid(logits) for both (`decode_mean`).

Axis legend: S samples, B batch, N = S*B, P pixels, D latent variables,
K categories, C channels, H, W image size, h, w latent map size, E label embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import conditioning as cond_types
from .base import FAMILIES, LatentModel
from .conv_blocks import ConvDecoder, ConvEncoder
from .data import Batch
from .registry import check_choice, check_latent_options, check_range

LIKELIHOODS = ("bernoulli", "gaussian")
GAUSSIAN_CHANNELS = 4           # C of the default Gaussian latent
DEFAULT_K = 10                  # K of the default categorical latent


@dataclass
class ConvConfig:
    width: int = 16                    # channels at full resolution; 2 * width at H/2 and H/4
    widths: Optional[list] = None      # channels at H, H/2, H/4 (three integers); None: from width
    n_blocks: int = 1                  # residual blocks per resolution (encoder and decoder)
    groups: int = 8                    # GroupNorm groups (the largest divisor of a width <= this)
    n_heads: int = 1                   # heads of the self-attention at the lowest resolution
    d_cond: int = 32                   # width of the learned label embedding
    likelihood: str = "bernoulli"      # bernoulli | gaussian (fixed sigma)
    sigma: float = 1.0                 # standard deviation of the gaussian likelihood
    encoder_conditioned: bool = True   # q(z | x, y); False: q(z | x)
    learned_prior: bool = False        # p(z | y) learned per class; False: uniform / N(0, I)
    latent_dropout: float = 0.0        # P(decoder gets the learned "no latent" code), training only

    def __post_init__(self):
        check_latent_options(self)
        for key in ("width", "n_blocks", "groups", "n_heads", "d_cond"):
            check_range(key, getattr(self, key), 1, integer=True)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        check_range("sigma", self.sigma, 0.0, lo_strict=True)
        if self.widths is not None:
            w = self.widths
            if isinstance(w, (str, bytes)) or not hasattr(w, "__iter__") or len(list(w)) != 3 \
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in w):
                raise ValueError(f"widths={w!r} is not valid; it must be three integers >= 1, the "
                                 f"channels at full, half and quarter resolution (e.g. [32, 64, 128]), "
                                 f"or null for (width, 2*width, 2*width)")
            self.widths = list(w)

    def level_widths(self) -> tuple[int, int, int]:
        """Channels at H, H/2, H/4."""
        return tuple(self.widths) if self.widths is not None else (self.width, 2 * self.width, 2 * self.width)


def latent_map(task) -> tuple[int, int]:
    """(h, w) of the spatial latent: the image size after two halvings."""
    H, W = task.spec["shape"]
    if H % 4 or W % 4:
        raise ValueError(f"the conv model needs an image size divisible by 4 (two halvings and "
                         f"a mirrored decoder); task {task.name!r} has {H}x{W}")
    return H // 4, W // 4


@FAMILIES.register("conv")
class ConvCVAE(LatentModel):
    family = "conv"
    task_families = ("image",)         # the tasks it takes (models.build checks)
    Config = ConvConfig

    @classmethod
    def latent_sizes(cls, task) -> dict[str, dict]:
        h, w = latent_map(task)
        return {"categorical": dict(D=h * w, K=DEFAULT_K), "gaussian": dict(D=GAUSSIAN_CHANNELS * h * w)}

    def __init__(self, task, latent, conditioning: str = "adaln", config: Optional[ConvConfig] = None):
        super().__init__(task, latent, conditioning, config)
        config = self.config
        self.shape = tuple(task.spec["shape"])
        self.size = h, w = latent_map(task)
        self.categorical = latent.estimator_kind == "categorical"
        self.z_channels = self._check_latent(task, latent, h * w)
        n_classes, E = task.spec["n_classes"], config.d_cond
        widths = config.level_widths()
        cond = cond_types.get(conditioning)
        enc_cond = cond if config.encoder_conditioned else None
        head_out = latent.K if self.categorical else 2 * self.z_channels
        self.enc_label = nn.Embedding(n_classes, E) if enc_cond else None
        self.encoder = ConvEncoder(widths, config.n_blocks, enc_cond, E, config.groups, config.n_heads)
        self.enc_head = (enc_cond or cond_types.Conditioning).conv_head(widths[2], E, head_out, self.size)
        self.dec_label = nn.Embedding(n_classes, E)
        self.dec_input = cond.conv_input(self.z_channels, E, widths[2], self.size)
        self.decoder = ConvDecoder(widths, config.n_blocks, cond, E, config.groups, config.n_heads)
        n_params = int(torch.Size(latent.param_shape).numel())
        self.prior_table = nn.Embedding(n_classes, n_params) if config.learned_prior else None
        if self.prior_table is not None:
            nn.init.zeros_(self.prior_table.weight)
        self.null_code = nn.Parameter(torch.zeros(latent.code_size()))   # the "no latent" input

    def _check_latent(self, task, latent, positions: int) -> int:
        """Channels of the z map; refuses a D the spatial latent cannot hold."""
        h, w = self.size
        where = f"the conv model on {task.name!r} ({self.shape[0]}x{self.shape[1]} -> {h}x{w} latent map)"
        if self.categorical:
            if latent.D != positions:
                raise ValueError(f"latent.D={latent.D} is not valid for {where}: a categorical latent "
                                 f"has one variable per latent position, so latent.D={positions}")
            return latent.K
        if latent.D % positions:
            raise ValueError(f"latent.D={latent.D} is not valid for {where}: a gaussian latent has C "
                             f"channels per latent position, so latent.D = C*{positions} "
                             f"(default {GAUSSIAN_CHANNELS * positions})")
        return latent.D // positions

    # -- encoder -------------------------------------------------------------
    def _enc_features(self, batch: Batch) -> tuple[Tensor, Optional[Tensor]]:
        x = batch.x.to(self.null_code.dtype).view(batch.size, 1, *self.shape)   # (B, 1, H, W)
        c = self.enc_label(batch.c) if self.enc_label is not None else None     # (B, E)
        return self.encoder(x, c), c                                             # (B, C2, h, w)

    def posterior(self, batch: Batch) -> Tensor:
        feats, c = self._enc_features(batch)
        out = self.enc_head(feats, c).flatten(2)                                 # (B, K | 2C, h*w)
        if self.categorical:
            return out.transpose(1, 2)                                           # (B, D, K)
        return out.view(batch.size, 2, -1).transpose(1, 2)                       # (B, D, 2)

    def prior(self, batch: Batch) -> Tensor:
        return self.class_prior(batch, self.prior_table, self.null_code)

    # -- decoder -------------------------------------------------------------
    def logits(self, batch: Batch, z: Tensor) -> Tensor:
        """Pixel logits (S, B, P) of p(x | z, c)."""
        self.check_z(batch, z)
        S, n = z.shape[0], self.dec_label.num_embeddings
        if self._shared_over_batch(z) and n < batch.size:
            # every example gets the same z (a stride-0 batch axis: the exact
            # estimator's enumeration of K^D values). The decoder reads only
            # (z, label), so each class is decoded once and the rows gathered
            # by label: 10 classes instead of 64 images per value of z. Every
            # class, not the batch's distinct labels: torch.unique would wait
            # for the device (a host sync and a data-dependent shape) at every
            # evaluation of f; a class absent from the batch costs a few rows,
            # and a batch no larger than the class count decodes every row.
            classes = torch.arange(n, device=batch.c.device)
            return self._decode(z[:, :1].expand(S, n, *z.shape[2:]), classes).index_select(1, batch.c)
        return self._decode(z, batch.c)

    def _shared_over_batch(self, z: Tensor) -> bool:
        # latent dropout draws per row, and a z with a gradient keeps its rows apart
        dropout = self.training and self.config.latent_dropout > 0
        return z.shape[1] > 1 and z.stride(1) == 0 and not z.requires_grad and not dropout

    def _decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """Logits (S, B, P) for z (S, B, ...) and labels (B,)."""
        return self.decode_embedded(z, self.dec_label(labels))

    def decode_embedded(self, z: Tensor, emb: Tensor) -> Tensor:
        """Logits (S, B, P) for z (S, B, ...) and decoder label embeddings emb (B, E):
        any point of the embedding space, e.g. a blend of two classes' rows
        (models.pictures.blend_grid); a class's own row gives that class."""
        S, B = z.shape[:2]
        code = self.drop_latent(z.reshape(S * B, -1), self.null_code, self.config.latent_dropout)
        if self.categorical:                                                     # (N, D*K) -> (N, K, h, w)
            zmap = code.view(S * B, *self.size, -1).permute(0, 3, 1, 2)
        else:                                                                    # (N, D) -> (N, C, h, w)
            zmap = code.view(S * B, self.z_channels, *self.size)
        c = emb.expand(S, B, -1).reshape(S * B, -1)                              # (N, E)
        out = self.decoder(self.dec_input(zmap, c), c)                           # (N, 1, H, W)
        return out.view(S, B, -1)

    def decode_mean(self, batch: Batch, z: Tensor) -> Tensor:
        """E[x | z, c] (S, B, P) in [0, 1]."""
        return torch.sigmoid(self.logits(batch, z))

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        logits = self.logits(batch, z)                                           # (S, B, P)
        x = batch.x.to(logits.dtype).expand_as(logits)
        if self.config.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)   # (S, B)
        sigma = self.config.sigma
        sq = (x - torch.sigmoid(logits)).pow(2).sum(-1)
        return -0.5 * sq / sigma ** 2 - x.shape[-1] * (math.log(sigma) + 0.5 * math.log(2 * math.pi))

    def context(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self._enc_features(batch)[0].mean((2, 3)).detach()            # (B, C2)
