"""`reinmax`: ReinMax (Liu, Dong, Liu, Yu & Gao, NeurIPS 2023), straight-through
with a second-order (Heun's method) backward pass.

With pi0 = softmax(theta), a hard sample D ~ Cat(pi0) and

    pi1 = (D + softmax(theta / tau)) / 2,

the estimate of d E[f] / d theta is

    (2 J(pi1) - J(pi0) / 2)^T grad f(D),    J(p) = diag p - p p^T,

i.e. the paper's pi2 = 2 pi1 - pi0 / 2 behind z = D + pi2 - stopgrad(pi2),
where pi1 is re-parameterised as softmax(stopgrad(log pi1 - theta) + theta):
its value is pi1 (held fixed) and its Jacobian in theta is J(pi1), with no
1/tau factor. tau only moves the point pi1 at which the Jacobian is taken;
D is drawn from softmax(theta) at every tau. At tau = 1 the backward pass is
Heun's (trapezoidal) rule, exact for f quadratic in z; the authors recommend
tau >= 1. Biased in general; one evaluation of f per sample.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import Estimate, Fn, register
from .sampling import softmax, sample_one_hot
from .st import StraightThrough


def softmax_tangent(logits: Tensor, p: Tensor) -> Tensor:
    """Zero in value, with Jacobian J(p) = diag p - p p^T in `logits`: the linear
    term of softmax around the fixed point p. Equivalent to the paper's
    softmax(stopgrad(log p - theta) + theta) - p without a log of p, so float32
    probabilities that underflow to 0 cannot produce -inf or NaN."""
    delta = logits - logits.detach()                          # value 0, gradient identity
    return p * (delta - (p * delta).sum(-1, keepdim=True))


@register
class ReinMax(StraightThrough):
    """ReinMax (Liu et al. 2023): Heun's-method correction of straight-through;
    the options, their checks and the traits are straight-through's."""

    name = "reinmax"

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        b = sample_one_hot(logits, self.n_samples)            # (S, B, D, K), no gradient
        pi0 = softmax(logits)                              # (B, D, K)
        pi1 = 0.5 * (b + softmax(logits.detach() / self.tau))   # (S, B, D, K), fixed
        # 2 J(pi1) - J(pi0) / 2 behind a value-zero correction, so f sees b
        grad_path = 2 * softmax_tangent(logits, pi1) - 0.5 * (pi0 - pi0.detach())
        f_z = f(b + grad_path)                                # (S, B)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))
