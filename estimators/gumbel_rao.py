"""`gumbel_rao`: Gumbel-Rao (Paulus, Maddison & Krause, ICLR 2021), the
straight-through Gumbel-softmax estimator Rao-Blackwellised over the noise.

Straight-through Gumbel-softmax evaluates f at D = argmax(log p + G) and
back-propagates through softmax((log p + G) / tau) with G held fixed. Gumbel-Rao
replaces that backward factor by its conditional expectation given D, estimated
with M = n_mc conditional draws G_m ~ p(G | argmax(log p + G) = D):

    z = D + s - stopgrad(s),    s = (1/M) sum_m softmax((log p + G_m) / tau).

The noise G_m is held fixed in the backward pass (d z~_m / d logits = d log p /
d logits), as in straight-through Gumbel-softmax and in the authors' code:
differentiating through the conditional sampler, as REBAR does, would be a
different estimator. Same mean as `gumbel` with hard=True at the same tau,
variance no larger (Rao-Blackwell); f is evaluated on D only, once per sample.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import log_softmax, conditional_perturbed, relaxed, sample_one_hot
from .st import check_tau


@register
class GumbelRao(Estimator):
    """Gumbel-Rao (Paulus et al. 2021): ST Gumbel-softmax with n_mc conditional draws."""

    name = "gumbel_rao"
    uses_context = False
    unbiased = False
    min_samples = 1
    temperature = True

    def __init__(self, *, tau: float = 1.0, n_mc: int = 10, n_samples: int = 1):
        tau = check_tau(self.name, tau)
        if not isinstance(n_mc, int) or isinstance(n_mc, bool) or n_mc < 1:
            raise ValueError(f"{self.name}: n_mc={n_mc!r} is not valid; it must be an integer >= 1")
        super().__init__(n_samples=n_samples)
        self.tau, self.n_mc = tau, n_mc

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        logp = log_softmax(logits)                         # (B, D, K), one for all three uses
        lp = logp.detach()
        b = sample_one_hot(logits, self.n_samples, lp)        # (S, B, D, K), no gradient
        draws = b.expand(self.n_mc, *b.shape)                 # (M, S, B, D, K)
        noise = conditional_perturbed(lp, draws, lp) - lp     # G_m, fixed
        s = relaxed(logp + noise, self.tau).mean(0)           # (S, B, D, K)
        f_z = f(b + (s - s.detach()))                         # (S, B), value f(D)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))

    def extra_repr(self) -> str:
        return f"tau={self.tau}, n_mc={self.n_mc}, n_samples={self.n_samples}"
