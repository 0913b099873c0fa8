"""`rebar`: REINFORCE with a Concrete control variate (Tucker et al. 2017).

With z = log q + g, b = H(z) = one-hot argmax z and z~ ~ p(z | b) (the
conditional Gumbel, reparameterised in the logits),

    g = [f(b) - eta f(s(z~))] grad log q(b) + eta grad f(s(z)) - eta grad f(s(z~))

where s(z) = softmax(z / tau). The two pathwise terms have equal expectations
as long as they are differentiated *through* z(theta, u) and z~(theta, b, v)
(forgetting the second path is a known bug of other implementations), so the
estimator is unbiased for every eta and tau. Both are learned by minimising
the estimator's own variance, sum((d surrogate / d logits)^2), which is what
`aux_loss` carries; it reaches eta and tau only, and `loss` never does.

f is called once per step, on the three points stacked along the sample
axis: (3S, B, D, K).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .base import Estimate, Estimator, Fn, check_positive, register
from .sampling import conditional_perturbed, log_prob, one_hot_argmax, perturbed, relaxed


def control_variate_surrogate(f_b: Tensor, logq: Tensor, c_z: Tensor, c_zt: Tensor) -> Tensor:
    """(S, B): value f(b); gradient
    (f(b) - c(z~)) grad log q(b) + grad f(b) + grad c(z) - grad c(z~).

    The score term multiplies a factor whose value is exactly 0, so the
    coefficient needs no detach: its own gradient is scaled by 0 in the model's
    loss, while the aux objective still sees how it depends on eta and tau."""
    score = logq - logq.detach()
    pathwise = c_z - c_zt
    return f_b + (f_b - c_zt) * score + pathwise - pathwise.detach()


def variance_objective(surr: Tensor, logits: Tensor) -> Optional[Tensor]:
    """Single-sample estimate of E|g|^2 for g = d surr / d logits, per example
    summed over the batch; its gradient in eta, tau, phi is that of Var(g)
    because the mean of g does not depend on them (the estimator is unbiased)."""
    if not logits.requires_grad:
        return None
    S, B = surr.shape
    (g,) = torch.autograd.grad(surr.sum() / S, logits, create_graph=True)  # (B, D, K)
    return (g ** 2).sum() / B


@register
class Rebar(Estimator):
    """REBAR (Tucker et al. 2017): learned temperature tau and scale eta."""

    name = "rebar"
    unbiased = True
    min_samples = 1

    def __init__(self, *, tau: float = 0.5, eta: float = 1.0, n_samples: int = 1):
        check_positive("tau", tau)
        super().__init__(n_samples=n_samples)
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        self.eta = nn.Parameter(torch.tensor(float(eta)))

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        tau = self.gate(self.log_tau).exp().to(logits.dtype)
        eta = self.gate(self.eta).to(logits.dtype)
        z = perturbed(logits, S)                             # (S, B, D, K)
        b = one_hot_argmax(z.detach())                       # (S, B, D, K)
        zt = conditional_perturbed(logits, b)                # (S, B, D, K)
        f_all = f(torch.cat([b, relaxed(z, tau), relaxed(zt, tau)]))  # (3S, B)
        f_b, f_z, f_zt = f_all.split(S)
        logq = log_prob(logits, b)                           # (S, B)
        surr = control_variate_surrogate(f_b, logq, eta * f_z, eta * f_zt)
        var = variance_objective(surr, logits)
        aux = None if var is None else self.aux_from_objective(var, [self.log_tau, self.eta])
        metrics = {"tau": self.log_tau.detach().exp(), "eta": self.eta.detach()}
        if var is not None:
            metrics["grad_sq"] = var.detach()
        return Estimate(loss=-surr.mean(), value=f_b.detach().mean(0), aux_loss=aux,
                        metrics=metrics)
