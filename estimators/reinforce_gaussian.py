"""`reinforce_gaussian`: the score function for a diagonal Gaussian latent,
log N(z; mu, sigma) with z held fixed (Williams 1992), baseline `none` or
`loo` (Kool et al. 2019): the comparison that shows what reparameterisation
buys. Arguments as for `reparam`: params (B, D, 2), z (S, B, D).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import Estimate, Estimator, Fn, check_choice, register
from .reinforce import leave_one_out_mean, score_surrogate
from .reparam import draw, log_normal


@register
class ReinforceGaussian(Estimator):
    """Score-function estimator for a Gaussian latent (Williams 1992), with the
    leave-one-out baseline of Kool et al. 2019."""

    name = "reinforce_gaussian"
    uses_context = False
    unbiased = True
    min_samples = 1
    latent = "gaussian"

    def __init__(self, *, baseline: str = "loo", n_samples: int = 4):
        check_choice("baseline", baseline, ("none", "loo"))
        if baseline == "loo" and n_samples < 2:
            raise ValueError(f"reinforce_gaussian: baseline='loo' needs n_samples >= 2, "
                             f"got n_samples={n_samples}")
        super().__init__(n_samples=n_samples)
        self.baseline = baseline

    def estimate(self, params: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        z = draw(params, S).detach()                         # (S, B, D)
        f_z = f(z)                                           # (S, B)
        logq = log_normal(params, z)                         # (S, B)
        b = 0.0
        if self.baseline == "loo":
            b = leave_one_out_mean(f_z.detach())
        surr = score_surrogate(f_z, logq, b)
        return Estimate(loss=-surr.mean(), value=f_z.detach().mean(0))
