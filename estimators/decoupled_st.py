"""`decoupled_st`: straight-through Gumbel-softmax with decoupled forward and
backward temperatures (Shah, Yan, Mozer & Liu 2024, "Improving discrete
optimisation via decoupled straight-through Gumbel-softmax").

One Gumbel draw g per variable and sample, and the perturbed point
x = log q / tau_forward + g:

    forward:   b = one_hot(argmax x),          b ~ Cat(softmax(logits / tau_forward))
    backward:  z = b + y - stopgrad(y),        y = softmax(x / tau_backward)

tau_forward sets how random the forward sample is (the paper's exploration
knob); tau_backward sets how the gradient spreads over the categories (its
dispersion knob). At tau_forward = 1 the samples are draws from q and the
estimator is straight-through Gumbel-softmax at temperature tau_backward
(`gumbel` with hard=true), bit for bit in the draws; tau_forward != 1 draws
from a tempered q, so E f is then taken under a distribution other than q
(part of the bias this estimator is measured for). The backward relaxation
takes the same point x, so its argmax is the forward sample, as in ST-GS.
Reading of the paper: the hard sample argmax((log q + g) / tau) does not
depend on tau, so a forward temperature that changes anything must change
the distribution the sample is drawn from, which is what the paper's
"forward-pass stochasticity" knob does here; we had no authors' code to
check this against.
Biased; one evaluation of f per sample.

Axis legend: S samples, B batch, D latent variables, K categories.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import Estimate, Estimator, Fn, register
from .sampling import log_softmax, one_hot_argmax, perturbed, relaxed
from .st import check_tau


@register
class DecoupledStraightThrough(Estimator):
    """Decoupled ST Gumbel-softmax (Shah et al. 2024): tau_forward, tau_backward."""

    name = "decoupled_st"
    uses_context = False
    unbiased = False
    min_samples = 1

    def __init__(self, *, tau_forward: float = 1.0, tau_backward: float = 1.0,
                 n_samples: int = 1):
        tau_forward = check_tau(self.name, tau_forward, "tau_forward")
        tau_backward = check_tau(self.name, tau_backward, "tau_backward")
        super().__init__(n_samples=n_samples)
        self.tau_forward, self.tau_backward = tau_forward, tau_backward

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        logp = log_softmax(logits)                                    # (B, D, K)
        if self.tau_forward != 1.0:
            logp = logp / self.tau_forward
        x = perturbed(logits, self.n_samples, logp)                   # (S, B, D, K)
        y = relaxed(x, self.tau_backward)                             # (S, B, D, K) in the simplex
        f_z = f(one_hot_argmax(x.detach()) + (y - y.detach()))       # (S, B), value f(b)
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))

    def extra_repr(self) -> str:
        return (f"tau_forward={self.tau_forward}, tau_backward={self.tau_backward}, "
                f"n_samples={self.n_samples}")
