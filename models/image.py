"""Class-conditional VAE on binarised images (Kingma et al. 2014; Sohn et al. 2015).

    encoder  q(z | x, y)   MLP on pixels, label through the conditioning module
                           (`encoder_conditioned=False`: q(z | x))
    decoder  p(x | z, y)   MLP on the flattened code, label through the
                           conditioning module; Bernoulli pixels
    prior    p(z | y)      uniform / N(0, I), or a learned table per class
                           (`learned_prior`, zero-initialised = the fixed prior);
                           one table (D, K) when the conditioning type uses no
                           condition (`conditioning=none`), which `prior_parameters`
                           names for its own optimiser (`train.prior_lr`)

The models of the estimator papers are options (defaults: today's network):
  encoder_hidden / decoder_hidden   widths per hidden layer; [] = one linear map,
                           the "linear" sigmoid belief net of REBAR (Tucker et al.
                           2017), RELAX (Grathwohl et al. 2018) and DisARM (Dong et
                           al. 2020); DisARM's nonlinear model is [200, 200, 200] /
                           [200, 200] with activation=leaky_relu, negative_slope=0.3
  activation, negative_slope, norm  relu | leaky_relu | tanh; layer | none (the papers
                           use no normalisation)
  center_input             the encoder sees x minus the training mean (DisARM's
                           --demean_input)
  init=glorot              Glorot-uniform weights and zero biases in encoder and
                           decoder (the papers' Keras/TF layers); default: PyTorch's
  output_bias_init=data    the decoder's output bias starts at logit(training pixel
                           mean), the mean clipped to [1e-3, 1 - 1e-3] so that
                           always-off pixels get a finite bias (DisARM's
                           --initialize_with_bias)
Both data-dependent options read the task's training split at build time.

The decoder reads `latent.code(z)`: a categorical z (S, B, D, K) flattened to
(S, B, D*K), which is the embedding z @ table summed over variables (hard,
soft and straight-through samples all pass); a Bernoulli latent's signed bit
2b - 1 (S, B, D), the papers' binary VAE.

Batch: x (B, P) float in {0, 1}, c (B,) long label. Axis legend: S samples,
B batch, P pixels, D latent variables, K categories, E label embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import conditioning as cond_types
from .base import FAMILIES, LatentModel
from .data import Batch
from . import layers
from .layers import CondMLP
from .registry import check_choice, check_latent_options, check_range

ACTIVATIONS = tuple(layers.ACTIVATIONS)
NORMS = tuple(layers.NORMS)
BIAS_INITS = ("default", "data")         # default: PyTorch's uniform init of nn.Linear
INITS = ("default", "glorot")            # glorot: Keras' glorot_uniform and zero biases
CONTEXTS = ("features", "input")
MEAN_CLIP = 1e-3                         # the training mean is clipped to [c, 1 - c] before the logit


def _widths(key: str, value: Any) -> list[int]:
    """A list of positive integer widths (an OmegaConf list too), or refuse naming the key."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{key}={value!r} is not valid; it must be a list of integer widths "
                         f"(e.g. [200, 200]; [] for no hidden layer)")
    widths = list(value)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"{key}={value!r} is not valid; every width must be an integer >= 1")
    return widths


def train_pixel_mean(task) -> Tensor:
    """Mean training image (P,): under dynamic binarisation the mean of the grey
    levels, i.e. the expected binarised pixel, rather than one draw's mean."""
    raw = task._raw("train") if hasattr(task, "_raw") else task.split("train")
    return raw.x.double().mean(0).float()


@dataclass
class ImageConfig:
    hidden: Any = 128                  # MLP width of encoder and decoder, or a list of widths
    n_layers: int = 2                  # hidden layers per MLP (when `hidden` is one width)
    d_cond: int = 32                   # width of the learned label embedding
    encoder_conditioned: bool = True   # q(z | x, y); False: q(z | x)
    learned_prior: bool = False        # p(z | y) learned per class; False: uniform / N(0, I)
    latent_dropout: float = 0.0        # P(decoder gets the learned "no latent" code), training only
    encoder_hidden: Optional[Any] = None   # encoder widths per hidden layer; None: from hidden, n_layers
    decoder_hidden: Optional[Any] = None   # decoder widths per hidden layer; [] = linear
    activation: str = "relu"           # relu | leaky_relu | tanh
    negative_slope: float = 0.01       # leaky_relu only (PyTorch's default; DisARM 0.3)
    norm: str = "layer"                # layer | none: after each hidden Linear
    center_input: bool = False         # encoder input x - training mean
    output_bias_init: str = "default"  # default | data: decoder output bias = logit(training mean)
    init: str = "default"              # default (PyTorch's) | glorot: Glorot-uniform weights, zero biases
    context: str = "features"          # what input-dependent baselines see: features (the encoder's
                                       # last hidden layer) | input (x itself, as DisARM's RELAX network)

    def __post_init__(self):
        check_latent_options(self)
        for key in ("n_layers", "d_cond"):
            check_range(key, getattr(self, key), 1, integer=True)
        if isinstance(self.hidden, int) and not isinstance(self.hidden, bool):
            check_range("hidden", self.hidden, 1, integer=True)
        else:
            self.hidden = _widths("hidden", self.hidden)
        for key in ("encoder_hidden", "decoder_hidden"):
            if getattr(self, key) is not None:
                setattr(self, key, _widths(key, getattr(self, key)))
        check_choice("activation", self.activation, ACTIVATIONS)
        check_range("negative_slope", self.negative_slope, 0.0)
        check_choice("norm", self.norm, NORMS)
        check_choice("output_bias_init", self.output_bias_init, BIAS_INITS)
        check_choice("init", self.init, INITS)
        check_choice("context", self.context, CONTEXTS)
        if not isinstance(self.center_input, bool):
            raise ValueError(f"center_input={self.center_input!r} is not valid; it must be true or false")

    def widths(self, key: str) -> list[int]:
        """Hidden widths of the encoder or decoder ("encoder_hidden" | "decoder_hidden")."""
        given = getattr(self, key)
        return layers.widths_of(self.hidden, self.n_layers) if given is None else given

    def mlp(self) -> dict:
        return dict(activation=self.activation, negative_slope=self.negative_slope, norm=self.norm)


@FAMILIES.register("image")
class ImageCVAE(LatentModel):
    family = "image"
    Config = ImageConfig

    def __init__(self, task, latent, conditioning: str = "film",
                 config: Optional[ImageConfig] = None):
        super().__init__(task, latent, conditioning, config)
        config = self.config
        P, n_classes = task.spec["n_pixels"], task.spec["n_classes"]
        n_params, code = latent.n_params, latent.code_size()
        # a type that uses no condition (none) gets no label embedding and one prior table
        labelled = conditioning is None or cond_types.get(conditioning).uses_condition
        enc_cond = conditioning if config.encoder_conditioned and labelled else None
        # creation order = the seed's initial weights: new options add modules last
        self.enc_label = nn.Embedding(n_classes, config.d_cond) if enc_cond else None
        self.encoder = CondMLP(P, config.widths("encoder_hidden"), n_params, config.n_layers,
                               enc_cond, config.d_cond, **config.mlp())
        self.dec_label = nn.Embedding(n_classes, config.d_cond) if labelled else None
        self.decoder = CondMLP(code, config.widths("decoder_hidden"), P, config.n_layers,
                               conditioning, config.d_cond, **config.mlp())
        self.prior_table = nn.Embedding(n_classes, n_params) \
            if config.learned_prior and labelled else None
        if self.prior_table is not None:
            nn.init.zeros_(self.prior_table.weight)
        self.null_code = nn.Parameter(torch.zeros(code))       # the "no latent" input
        self.prior_logits = nn.Parameter(torch.zeros(latent.raw_shape)) \
            if config.learned_prior and not labelled else None  # (D, K) | (D, 2) | (D,)
        if config.init == "glorot":
            # the networks' own layers; a conditioning type's maps keep their init (film: zero)
            for name, layer in (nm for net in (self.encoder, self.decoder) for nm in net.named_modules()):
                if isinstance(layer, nn.Linear) and not name.startswith("mods"):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
        if config.center_input or config.output_bias_init == "data":
            mean = train_pixel_mean(task)                          # (P,)
            if config.center_input:
                self.register_buffer("input_mean", mean)
            if config.output_bias_init == "data":
                with torch.no_grad():
                    self.decoder.output_bias().copy_(torch.logit(mean.clamp(MEAN_CLIP, 1 - MEAN_CLIP)))

    def prior_parameters(self) -> list[nn.Parameter]:
        """As DisARM trains its prior logits: the per-class table or the one table."""
        if self.prior_table is not None:
            return [self.prior_table.weight]
        return [] if self.prior_logits is None else [self.prior_logits]

    def _enc_cond(self, batch: Batch) -> Optional[Tensor]:
        return self.enc_label(batch.c) if self.enc_label is not None else None   # (B, E)

    def _enc_features(self, batch: Batch, c: Optional[Tensor] = None) -> Tensor:
        x = batch.x.to(self.null_code.dtype)                                # (B, P)
        if self.config.center_input:
            x = x - self.input_mean.to(x.dtype)
        return self.encoder.features(x, c)                                  # (B, hidden[-1] | P)

    def posterior(self, batch: Batch) -> Tensor:
        c = self._enc_cond(batch)
        out = self.encoder.head(self._enc_features(batch, c), c)           # (B, n_params)
        return self.latent.params(out)                                      # (B, D, K) | (B, D, 2)

    def prior(self, batch: Batch) -> Tensor:
        if self.prior_logits is not None:
            return self.latent.params(self.prior_logits[None]).expand(batch.size, *self.latent.param_shape)
        return self.class_prior(batch, self.prior_table, self.null_code)

    def logits(self, batch: Batch, z: Tensor) -> Tensor:
        """Pixel logits (S, B, P) of p(x | z, c)."""
        self.check_z(batch, z)
        S, B = z.shape[:2]
        code = self.latent.code(z)                                          # (S, B, code_size)
        code = self.drop_latent(code.reshape(S * B, -1), self.null_code,
                                self.config.latent_dropout).view(S, B, -1)
        c = self.dec_label(batch.c).expand(S, B, -1) if self.dec_label is not None else None  # (S, B, E)
        return self.decoder(code, c)                                        # (S, B, P)

    def decode_mean(self, batch: Batch, z: Tensor) -> Tensor:
        """E[x | z, c] (S, B, P): the Bernoulli means (samples, adherence)."""
        return torch.sigmoid(self.logits(batch, z))

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        logits = self.logits(batch, z)                                      # (S, B, P)
        x = batch.x.to(logits.dtype).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)   # (S, B)

    def context(self, batch: Batch) -> Tensor:
        if self.config.context == "input":
            return batch.x.to(self.null_code.dtype)                              # (B, P)
        with torch.no_grad():
            return self._enc_features(batch, self._enc_cond(batch)).detach()   # (B, hidden[-1] | P)
