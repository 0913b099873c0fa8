"""Copulas that make n uniforms negatively dependent, for the antithetic
multi-sample estimators `arms` and `carms` (Dimitriev & Zhou, ICML 2021 and
NeurIPS 2021).

A copula here draws n uniforms per variable, each U(0, 1) on its own and
exchangeable, and gives the bivariate CDF C(x, y) = P(u_s <= x, u_t <= y)
of any two of them (s != t); the estimators need that to undo the
correlation of a pair (the importance ratio q q / joint).

- `dirichlet`: d ~ Dirichlet(1, ..., 1) of dimension n, u_s = (1 - d_s)^{n-1};
  C(x, y) = max(x^{1/(n-1)} + y^{1/(n-1)} - 1, 0)^{n-1}.
- `gaussian`: normals with correlation -1/(n-1) (the most negative an
  exchangeable n-vector allows) pushed through Phi; C is the bivariate normal
  CDF, by Gauss-Legendre quadrature of Sheppard's integral
  Phi2(h, k; rho) = Phi(h) Phi(k)
                    + 1/(2 pi) int_0^{asin rho} exp(-(h^2 + k^2 - 2 h k sin t) / (2 cos^2 t)) dt.

For n = 2 both are the countermonotone pair u_2 = 1 - u_1.

Axis legend: n samples, ... the variables' shape.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import Estimator, check_choice
from .sampling import uniform

COPULAS = ("dirichlet", "gaussian")

# Gauss-Legendre nodes on [-1, 1]; 96 nodes integrate Sheppard's integrand
# (smooth on [asin rho, 0]) to ~1e-12 against scipy's bivariate normal CDF
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(96)


class CopulaEstimator(Estimator):
    """What `arms` and `carms` share: n >= 2 samples coupled by a copula."""

    uses_context = False
    unbiased = True
    min_samples = 2
    bf16_safe = False           # differences of f between nearby samples

    def __init__(self, *, n_samples: int = 4, copula: str = "dirichlet"):
        check_choice("copula", copula, COPULAS)
        super().__init__(n_samples=n_samples)
        self.copula = copula

    def extra_repr(self) -> str:
        return f"n_samples={self.n_samples}, copula={self.copula!r}"


def sample(copula: str, n: int, shape, like: Tensor) -> Tensor:
    """n exchangeable, negatively dependent U(0, 1) per variable: (n, *shape)."""
    if copula == "dirichlet":
        e = -torch.log(uniform((n, *shape), like))            # (n, ...) exponentials
        d = e / e.sum(0, keepdim=True)                        # Dirichlet(1, ..., 1)
        return (1 - d).pow(n - 1)
    g = torch.randn((n, *shape), dtype=like.dtype, device=like.device)
    # centring gives correlation -1/(n-1); the factor restores unit variance
    x = (g - g.mean(0, keepdim=True)) * math.sqrt(n / (n - 1))
    return torch.special.ndtr(x)


def cdf2(copula: str, n: int, x: Tensor, y: Tensor) -> Tensor:
    """C(x, y) = P(u_s <= x, u_t <= y) for s != t, elementwise (broadcast)."""
    x, y = torch.broadcast_tensors(x, y)
    if copula == "dirichlet":
        e = 1.0 / (n - 1)
        return (x.clamp(0, 1).pow(e) + y.clamp(0, 1).pow(e) - 1).clamp_min(0).pow(n - 1)
    return _gaussian_cdf2(x, y, -1.0 / (n - 1))


def _gaussian_cdf2(x: Tensor, y: Tensor, rho: float) -> Tensor:
    # at the edges the answer is exact (0, or the other margin), and the
    # quantiles there are infinite: clamp them and overwrite those entries
    lim = 9.0
    h = torch.special.ndtri(x.clamp(0, 1)).clamp(-lim, lim)
    k = torch.special.ndtri(y.clamp(0, 1)).clamp(-lim, lim)
    # cos^2 t -> 0 only at rho = -1, where the numerator is > 0 unless h = -k
    # (there the integrand tends to exp(-h^2 / 2)): the floor keeps it finite
    top = math.asin(rho)                                     # in [-pi/2, 0)
    squares, cross = h * h + k * k, 2 * h * k
    integral = torch.zeros_like(x)
    # one node at a time: memory stays that of the inputs (CARMS evaluates C on
    # (B, D, orders, K+1, K+1) grids, and a node axis would multiply that by N)
    for node, weight in zip(_NODES.tolist(), _WEIGHTS.tolist()):
        t = 0.5 * top * (node + 1)                           # in [top, 0]
        cos2 = max(math.cos(t) ** 2, torch.finfo(x.dtype).tiny)
        integral = integral + weight * torch.exp(-(squares - cross * math.sin(t)) / (2 * cos2))
    integral = 0.5 * top * integral                          # (...)
    out = x * y + integral / (2 * math.pi)
    out = torch.where((x <= 0) | (y <= 0), torch.zeros_like(out), out)
    out = torch.where(x >= 1, y, out)
    return torch.where(y >= 1, x, out).clamp(0, 1)
