"""Latent types: the distribution a model's posterior and prior parameterise.

    lat = models.latents.build("categorical", D=8, K=10)   # or build("gaussian", D=16),
                                                           # build("bernoulli", D=200)
    lat.param_shape        (D, K) logits              | (D, 2) [mean, log_std]
    lat.raw_shape          what a network outputs per example: (D, K) | (D, 2) | (D,) one logit per Bernoulli
    lat.n_params           its size: D*K | D*2 | D
    lat.params(out)        (B, n_params) or (B, *raw_shape) -> (B, *param_shape), what estimators take
    lat.code(z)            (S, B, D, K) | (S, B, D) -> (S, B, code_size()): the decoder's input
    lat.kl(q, p)           (B, D) analytic KL(q_d || p_d) per variable
    lat.log_prob(params, z) (S, B) summed over variables
    lat.log_ratio(p, q, z) (S, B) log p(z) - log q(z): the sampled KL term, in fewer passes
    lat.sample(params, S)  (S, B, D, K) one-hot floats, no gradient
                           | (S, B, D) reparameterised: gradient flows to params
    lat.mean(params)       (B, D, K) probabilities | (B, D) means: E_q[z]
    lat.entropy(params)    (B, D) per variable
    lat.estimator_kind     "categorical" | "gaussian"  (= Estimator.latent)

`bernoulli` is the binary VAE of REBAR, RELAX and DisARM as their code has it:
the network outputs one logit a per variable, the estimators receive it as
the two logits [0, a] (a K = 2 categorical with the same distribution, so every
categorical estimator takes it unchanged), and the decoder reads the signed
bit 2b - 1 (D inputs), not a one-hot pair (2D inputs).

Prior parameters may broadcast against the batch ((1, D, K) for a fixed prior).
Axis legend: S samples, B batch, D latent variables, K categories.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from estimators.kl import kl_bernoulli, kl_categorical
from estimators.sampling import log_softmax as _log_softmax

from .registry import Registry, check_options, check_range

LATENTS: Registry[type] = Registry("latent")
_LOG_2PI = math.log(2 * math.pi)


class Latent:
    """Common interface; subclasses fix the parameter layout."""

    name = ""
    estimator_kind = ""
    D: int

    @property
    def param_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def fixed_prior(self, like: Tensor) -> Tensor:
        """Parameters of the standard prior (uniform / N(0, I)): (1, *param_shape)."""
        return torch.zeros((1, *self.param_shape), dtype=like.dtype, device=like.device)

    def code_size(self) -> int:
        """Width of a flattened z: D * K or D."""
        raise NotImplementedError

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError

    def log_ratio(self, p: Tensor, q: Tensor, z: Tensor) -> Tensor:
        """log p(z) - log q(z) (S, B) for parameters p, q that broadcast against
        the batch; subclasses fold the two into one pass where they can."""
        return self.log_prob(p, z) - self.log_prob(q, z)

    @property
    def raw_shape(self) -> tuple[int, ...]:
        """The shape of what a network outputs per example (a learned prior's table)."""
        return self.param_shape

    @property
    def n_params(self) -> int:
        """How many numbers a network outputs per example for these parameters."""
        return math.prod(self.raw_shape)

    def params(self, out: Tensor) -> Tensor:
        """A network's output (B, n_params) or (B, *raw_shape) as parameters (B, *param_shape)."""
        return out.reshape(out.shape[0], *self.param_shape)

    def code(self, z: Tensor) -> Tensor:
        """The decoder's input (S, B, code_size()) of a sample z (S, B, ...)."""
        return z.reshape(z.shape[0], z.shape[1], -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in vars(self).items())})"


@LATENTS.register("categorical")
class Categorical(Latent):
    """D independent categoricals with K classes each; K = 2 is a Bernoulli."""

    name = estimator_kind = "categorical"

    def __init__(self, D: int = 8, K: int = 10):
        check_range("D", D, 1, integer=True)
        check_range("K", K, 2, integer=True)
        self.D, self.K = D, K

    @property
    def param_shape(self):
        return (self.D, self.K)

    def code_size(self) -> int:
        return self.D * self.K

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return kl_categorical(q, p)                                    # (B, D)

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        return (z * params.log_softmax(-1)).sum((-1, -2))              # (S, B)

    def log_ratio(self, p: Tensor, q: Tensor, z: Tensor) -> Tensor:
        return (z * (_log_softmax(p) - _log_softmax(q))).sum((-1, -2))  # (S, B)

    def sample(self, params: Tensor, S: int, generator: Optional[torch.Generator] = None) -> Tensor:
        with torch.no_grad():
            u = torch.rand((S, *params.shape), generator=generator, dtype=params.dtype,
                           device=params.device).clamp_(torch.finfo(params.dtype).tiny, 1.0)
            g = -torch.log(-torch.log(u))                              # Gumbel-max draw
            idx = (params.log_softmax(-1) + g).argmax(-1)              # (S, B, D)
            return F.one_hot(idx, self.K).to(params.dtype)             # (S, B, D, K)

    def mean(self, params: Tensor) -> Tensor:
        return params.softmax(-1)                                      # (B, D, K)

    def entropy(self, params: Tensor) -> Tensor:
        logq = params.log_softmax(-1)
        return -(logq.exp() * logq).sum(-1)                            # (B, D)


@LATENTS.register("bernoulli")
class Bernoulli(Categorical):
    """D independent Bernoullis, one logit a per variable (REBAR, Tucker et al.
    2017; RELAX, Grathwohl et al. 2018; DisARM, Dong et al. 2020). Parameters
    are the logits [0, a] (B, D, 2), so estimators see a K = 2 categorical;
    z is one-hot over {0, 1} (or a relaxed point of the simplex), of which the
    decoder reads 2 z[..., 1] - 1: the papers' 2b - 1 for a hard sample."""

    name = "bernoulli"

    def __init__(self, D: int = 8):
        super().__init__(D=D, K=2)

    @property
    def raw_shape(self) -> tuple[int, ...]:
        return (self.D,)

    def params(self, out: Tensor) -> Tensor:
        return F.pad(out.reshape(out.shape[0], self.D, 1), (1, 0))    # (B, D, 2) = [0, a]

    def code_size(self) -> int:
        return self.D

    def code(self, z: Tensor) -> Tensor:
        return z[..., 1] - z[..., 0]                                   # (S, B, D): 2b - 1

    # the logit a = l_1 - l_0 of any two logits (params() gives [0, a]); the
    # difference is also a contiguous tensor, which elementwise ops need to be
    # fast: softplus of the strided view params[..., 1] is ~15x slower on CPU
    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        return kl_bernoulli(q[..., 1] - q[..., 0], p[..., 1] - p[..., 0])   # (B, D)

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        a = params[..., 1] - params[..., 0]                            # (B, D)
        # b log s(a) + (1 - b) log s(-a) = b a - softplus(a), linear in b as in
        # the papers' code (a relaxed b gives the same interpolation)
        return (z[..., 1] * a - F.softplus(a)).sum(-1)                 # (S, B)

    def log_ratio(self, p: Tensor, q: Tensor, z: Tensor) -> Tensor:
        ap, aq = p[..., 1] - p[..., 0], q[..., 1] - q[..., 0]          # (B | 1, D)
        # sum_d b (ap - aq) + softplus(aq) - softplus(ap): the b-free part once per example
        return (z[..., 1] * (ap - aq)).sum(-1) + (F.softplus(aq) - F.softplus(ap)).sum(-1)


@LATENTS.register("gaussian")
class Gaussian(Latent):
    """D independent Gaussians; params [..., 0] mean, [..., 1] log standard deviation."""

    name = estimator_kind = "gaussian"

    def __init__(self, D: int = 16):
        check_range("D", D, 1, integer=True)
        self.D = D

    @property
    def param_shape(self):
        return (self.D, 2)

    def code_size(self) -> int:
        return self.D

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        mq, lq = q.unbind(-1)
        mp, lp = p.unbind(-1)
        return lp - lq + ((2 * lq).exp() + (mq - mp) ** 2) / (2 * (2 * lp).exp()) - 0.5   # (B, D)

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        m, ls = params.unbind(-1)                                      # (B, D)
        return (-0.5 * ((z - m) / ls.exp()) ** 2 - ls - 0.5 * _LOG_2PI).sum(-1)   # (S, B)

    def sample(self, params: Tensor, S: int, generator: Optional[torch.Generator] = None) -> Tensor:
        m, ls = params.unbind(-1)
        eps = torch.randn((S, *m.shape), generator=generator, dtype=m.dtype, device=m.device)
        return m + ls.exp() * eps                                      # (S, B, D)

    def mean(self, params: Tensor) -> Tensor:
        return params[..., 0]                                          # (B, D)

    def entropy(self, params: Tensor) -> Tensor:
        return params[..., 1] + 0.5 * (1 + _LOG_2PI)                  # (B, D)


def names() -> list[str]:
    return LATENTS.names()


def get(name: str) -> type[Latent]:
    """The latent class registered as `name`."""
    return LATENTS.get(name)


def build(name: str, **sizes) -> Latent:
    """`build("categorical", D=..., K=...)`, `build("bernoulli", D=...)` or `build("gaussian", D=...)`."""
    cls = LATENTS.get(name)
    valid = ["D", "K"] if cls is Categorical else ["D"]
    check_options(f"latent {name!r}", sizes, valid)
    return cls(**sizes)
