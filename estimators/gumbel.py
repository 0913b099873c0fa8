"""`gumbel`: the Gumbel-softmax / Concrete relaxation (Jang et al. 2017;
Maddison et al. 2017).

f is evaluated at y = softmax((log q + g) / tau), a point inside the simplex,
and differentiated pathwise. Biased: the target it estimates is E[f(y)], not
E[f(z)], and the gap shrinks as tau -> 0 while the variance grows.

`hard=True` is the straight-through variant: f sees the one-hot argmax in the
forward pass and the gradient of the relaxed sample in the backward pass.
`tau` is a plain attribute, so a temperature schedule may assign it per step.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import Estimate, Estimator, Fn, check_positive, register
from .sampling import one_hot_argmax, perturbed, relaxed


@register
class Gumbel(Estimator):
    """Gumbel-softmax (Jang et al. 2017) / Concrete (Maddison et al. 2017),
    optionally straight-through (`hard`)."""

    name = "gumbel"
    uses_context = False
    unbiased = False
    min_samples = 1
    temperature = True

    def __init__(self, *, tau: float = 1.0, hard: bool = False, n_samples: int = 1):
        check_positive("tau", tau)
        if not isinstance(hard, bool):
            raise ValueError(f"gumbel: hard={hard!r} is not valid; it must be true or false")
        super().__init__(n_samples=n_samples)
        self.tau, self.hard = float(tau), hard

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        z = perturbed(logits, self.n_samples)               # (S, B, D, K)
        y = relaxed(z, self.tau)                            # (S, B, D, K) in the simplex
        if self.hard:
            # value of the one-hot, gradient of the relaxation
            y = one_hot_argmax(z) + (y - y.detach())
        f_y = f(y)                                          # (S, B)
        return Estimate(loss=-f_y.mean(), value=f_y.detach().mean(0))

    def extra_repr(self) -> str:
        return f"tau={self.tau}, hard={self.hard}, n_samples={self.n_samples}"
