"""`st`: the straight-through estimator (Bengio, Léonard & Courville 2013).

f sees a hard one-hot sample b ~ q = softmax(logits); the backward pass
treats b as if it were the probabilities:

    z = b + p - stopgrad(p),    p = softmax(logits / tau)

so the estimate is J_p^T grad f(b), with J_p = (diag p - p p^T) / tau the
Jacobian of softmax(logits / tau). tau = 1 is plain ST. The temperature enters
the backward pass only, and b is always drawn from softmax(logits), as in the
ReinMax authors' `st` (Liu et al. 2023, whose appendix tunes tau for ST).
Biased: a first-order (forward Euler) approximation of the gradient.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import softmax, sample_one_hot


def check_tau(name: str, tau, key: str = "tau") -> float:
    """A temperature (option `key`) must be a finite number > 0 (shared by the
    straight-through family)."""
    ok = isinstance(tau, (int, float)) and not isinstance(tau, bool)
    if not ok or not 0 < float(tau) < float("inf"):
        raise ValueError(f"{name}: {key}={tau!r} is not valid; it must be a finite number > 0")
    return float(tau)


@register
class StraightThrough(Estimator):
    """Straight-through (Bengio et al. 2013) with a backward temperature."""

    name = "st"
    uses_context = False
    unbiased = False
    min_samples = 1
    temperature = True

    def __init__(self, *, tau: float = 1.0, n_samples: int = 1):
        tau = check_tau(self.name, tau)
        super().__init__(n_samples=n_samples)
        self.tau = tau

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        b = sample_one_hot(logits, self.n_samples)            # (S, B, D, K), no gradient
        p = softmax(logits / self.tau)                   # (B, D, K)
        f_z = f(b + (p - p.detach()))                         # (S, B), value f(b)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))

    def extra_repr(self) -> str:
        return f"tau={self.tau}, n_samples={self.n_samples}"
