"""`rebar`: REINFORCE with a Concrete control variate (Tucker et al. 2017).

With z = log q + g, b = H(z) = one-hot argmax z and z~ ~ p(z | b) (the
conditional Gumbel, reparameterised in the logits),

    g = [f(b) - eta f(s(z~))] grad log q(b) + eta grad f(s(z)) - eta grad f(s(z~))

where s is the relaxation (`relaxation`):

    "concrete"  s(z) = softmax(z / tau)                           (the paper's)
    "muprop"    s(z) = softmax(z / tau + tau / (tau + 1) * log q)  (the official
                code's default, `muprop_relaxation=True`)

The official code states the MuProp form for a Bernoulli of logit theta,
x = theta + logistic noise: sigmoid(x / tau + tau / (tau + 1) * theta). The
categorical form above is its lift: it is a softmax of a linear combination
of z and log q, invariant to adding a constant to the logits, and for K = 2,
with logits (0, theta), its second coordinate is
sigmoid((z_1 - z_0) / tau + tau / (tau + 1) * (log q_1 - log q_0)), where
z_1 - z_0 = theta + (g_1 - g_0) is exactly x (a difference of two Gumbels is
logistic) and log q_1 - log q_0 = theta: the Bernoulli formula. It keeps that
formula's two limits: the hard sample b as tau -> 0 and the mean q as
tau -> inf, the point MuProp (Gu et al. 2016) expands f around, so tau now
slides the control variate between REBAR's and MuProp's. z~ gets the same
shift (the same function s applied to z~).

Unbiasedness, for every eta, tau and either relaxation: E_z[c(s(z))] =
E_b[E_{z~|b}[c(s(z~))]], so the two pathwise terms have equal expectations as
long as both apply the same function s (its direct dependence on the logits
included) and are differentiated *through* z(theta, u) and z~(theta, b, v)
(forgetting the second path is a known bug of other implementations; shifting
z but not z~ is another, tests/test_estimators_muprop.py). eta and tau are
learned by minimising the estimator's own variance,
sum((d surrogate / d logits)^2), which is what `aux_loss` carries; it reaches
eta and tau only, and `loss` never does.

`eta_bound=True` parameterises eta = 2 sigmoid(raw) in (0, 2) as the official
code does (`_create_eta`), `eta` then giving the initial value; the default
learns eta unbounded.

f is called once per step, on the three points stacked along the sample
axis: (3S, B, D, K).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .base import Estimate, Estimator, Fn, check_choice, check_positive, register
from .sampling import (log_softmax, conditional_perturbed, log_prob_from, one_hot_argmax, perturbed, relaxed,
                       relaxed_muprop)

RELAXATIONS = ("concrete", "muprop")


def check_relaxation(relaxation: str) -> None:
    check_choice("relaxation", relaxation, RELAXATIONS)


def relax_pair(z: Tensor, zt: Tensor, logits: Tensor, tau: Tensor, relaxation: str,
               logp: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """s(z), s(z~), each (S, B, D, K): one function s for both points, which is
    what keeps the two pathwise terms' expectations equal."""
    if relaxation == "muprop":
        return relaxed_muprop(z, logits, tau, logp), relaxed_muprop(zt, logits, tau, logp)
    return relaxed(z, tau), relaxed(zt, tau)


def check_eta_bound(eta_bound) -> None:
    if not isinstance(eta_bound, bool):
        raise ValueError(f"eta_bound={eta_bound!r} is not valid; choose one of [False, True]")


def eta_parameter(eta: float, eta_bound: bool) -> nn.Parameter:
    """The raw parameter behind eta: eta itself, or logit(eta / 2) when
    eta = 2 sigmoid(raw) is bounded to (0, 2) as in the official REBAR code."""
    check_eta_bound(eta_bound)
    if not eta_bound:
        return nn.Parameter(torch.tensor(float(eta)))
    if not 0.0 < eta < 2.0:
        raise ValueError(f"eta={eta!r} is not valid; with eta_bound=True it must lie "
                         f"in the open interval (0, 2) (eta = 2 sigmoid(raw))")
    return nn.Parameter(torch.tensor(math.log(eta / (2.0 - eta))))


def eta_value(raw: Tensor, eta_bound: bool) -> Tensor:
    return 2.0 * torch.sigmoid(raw) if eta_bound else raw


def tau_metric(tau: Tensor, log_tau: Tensor) -> Tensor:
    """log_tau.exp(), detached, for logging: `tau` itself when it holds that
    value already (no cast to the logits' dtype in between)."""
    return tau.detach() if tau.dtype == log_tau.dtype else log_tau.detach().exp()


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
    """REBAR (Tucker et al. 2017): learned temperature tau and scale eta, on the
    Concrete or the MuProp-shifted relaxation."""

    name = "rebar"
    uses_context = False
    unbiased = True
    min_samples = 1
    bf16_safe = False       # f(b) minus the control variate at the relaxed sample
    double_backward = True  # variance_objective differentiates grad f(s(z)) in eta and tau

    def f_evaluations(self, D: int, K: int) -> int:
        return 3 * self.n_samples              # f(b), f(s(z)), f(s(z~))

    def __init__(self, *, tau: float = 0.5, eta: float = 1.0, relaxation: str = "concrete",
                 eta_bound: bool = False, n_samples: int = 1):
        check_positive("tau", tau)
        check_relaxation(relaxation)
        super().__init__(n_samples=n_samples)
        self.relaxation = relaxation
        self.eta_bound = eta_bound
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        # named for what it holds, so a state dict never reads a raw logit as eta
        raw = eta_parameter(eta, eta_bound)
        if eta_bound:
            self.eta_logit = raw
        else:
            self.eta = raw

    def eta_raw(self) -> nn.Parameter:
        return self.eta_logit if self.eta_bound else self.eta

    def relaxed_pair(self, z: Tensor, zt: Tensor, logits: Tensor, tau: Tensor, logp=None):
        return relax_pair(z, zt, logits, tau, self.relaxation, logp)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        raw = self.eta_raw()
        tau = self.gate(self.log_tau).exp().to(logits.dtype)
        eta = eta_value(self.gate(raw), self.eta_bound).to(logits.dtype)
        # one log-softmax for the sample, the conditional sample and log q(b):
        # one backward node instead of three, in both the first- and second-order pass
        logp = log_softmax(logits)                        # (B, D, K)
        z = perturbed(logits, S, logp)                       # (S, B, D, K)
        b = one_hot_argmax(z.detach())                       # (S, B, D, K)
        zt = conditional_perturbed(logits, b, logp)          # (S, B, D, K)
        s_z, s_zt = self.relaxed_pair(z, zt, logits, tau, logp)   # (S, B, D, K) each
        f_all = f(torch.cat([b, s_z, s_zt]))                 # (3S, B)
        f_b, f_z, f_zt = f_all.split(S)
        logq = log_prob_from(logp, b)                        # (S, B)
        surr = control_variate_surrogate(f_b, logq, eta * f_z, eta * f_zt)
        var = variance_objective(surr, logits)
        aux = None if var is None else self.aux_from_objective(var, [self.log_tau, raw])
        metrics = {"tau": tau_metric(tau, self.log_tau),
                   "eta": eta_value(raw.detach(), self.eta_bound)}
        if var is not None:
            metrics["grad_sq"] = var.detach()
        return Estimate(loss=-surr.mean(), value=f_b.detach().mean(0), aux_loss=aux,
                        metrics=metrics)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, relaxation={self.relaxation!r}, "
                f"eta_bound={self.eta_bound}")
