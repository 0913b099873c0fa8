"""`relax`: a learned control variate on the relaxed sample (Grathwohl et al. 2018).

    g = [f(b) - c(z~)] grad log q(b) + grad f(b) + grad c(z) - grad c(z~)

with b = H(z), z~ ~ p(z | b) as in REBAR, and the control variate

    c(z) = r_phi(softmax(z / tau), x)  [+ eta f(softmax(z / tau)) if use_f]

a small network on the relaxed sample and the input features x (`context`, or
the detached logits). `relaxation="muprop"` replaces softmax(z / tau) by the
official REBAR code's softmax(z / tau + tau / (tau + 1) log q) (the categorical
form and why it is the Bernoulli one for K = 2: `estimators/rebar.py`), and
`eta_bound=True` bounds eta = 2 sigmoid(raw) in (0, 2) (both only matter
through s, resp. with `use_f`). Unbiased for any c and either relaxation,
since c(z) and c(z~) are the same function of z and z~ (the shift included);
phi, tau (and eta) minimise the estimator's variance through `aux_loss`. With `use_f=False` (the default) f is
called once per step, on b alone, which makes RELAX cheaper than REBAR; with
`use_f=True` it is the REBAR-plus-network variant of the paper's VAE runs.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from .base import Estimate, Estimator, Fn, check_positive, register
from .rebar import (check_eta_bound, check_relaxation, control_variate_surrogate,
                    eta_parameter, eta_value, relax_pair, tau_metric, variance_objective)
from .reinforce import features
from .sampling import conditional_perturbed, log_prob_from, one_hot_argmax, perturbed


@register
class Relax(Estimator):
    """RELAX (Grathwohl et al. 2018): learned control-variate network and temperature."""

    name = "relax"
    unbiased = True
    min_samples = 1
    bf16_safe = False       # f(b) minus the control variate at the relaxed sample

    @property
    def double_backward(self) -> bool:
        # with use_f, c holds eta f(s(z)): the variance objective differentiates
        # grad f again; without, f is only called on the hard b (no path to the logits)
        return self.use_f

    def f_evaluations(self, D: int, K: int) -> int:
        # f(b); with use_f also REBAR's f(s(z)), f(s(z~)) (the network is not f)
        return (3 if self.use_f else 1) * self.n_samples

    def __init__(self, *, hidden: int = 64, tau: float = 0.5, use_f: bool = False,
                 eta: float = 1.0, relaxation: str = "concrete", eta_bound: bool = False,
                 n_samples: int = 1):
        check_positive("tau", tau)
        check_positive("hidden", hidden, minimum=1, strict=False)
        check_relaxation(relaxation)
        check_eta_bound(eta_bound)
        super().__init__(n_samples=n_samples)
        self.use_f = bool(use_f)
        self.relaxation = relaxation
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        # eta and its bound only exist with use_f, as before (ignored otherwise)
        self.eta_bound = eta_bound and self.use_f
        raw = eta_parameter(eta, eta_bound) if use_f else None
        self.eta = None if self.eta_bound else raw
        self.eta_logit = raw if self.eta_bound else None
        # input width (D*K + C) is known at the first call; applied by hand in
        # control_variate so each weight passes through the gradient gate
        self.net = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def control_variate(self, y: Tensor, x: Tensor) -> Tensor:
        """r_phi on relaxed samples y (N, B, D, K) and features x (B, C) -> (N, B)."""
        inp = torch.cat([y.flatten(2), x.expand(y.shape[0], *x.shape)], -1)  # (N, B, D*K + C)
        if any(is_lazy(p) for p in self.net_parameters()):
            with torch.no_grad():
                self.net(inp)                     # materialise the lazy layer
            self.net.to(dtype=y.dtype)
        w1, b1, w2, b2 = (self.gate(p) for p in self.net_parameters())
        return F.linear(F.linear(inp, w1, b1).relu(), w2, b2).squeeze(-1)

    def net_parameters(self) -> list[Tensor]:
        """self.net.parameters(), in order, read directly (the generator walks
        the module tree, several microseconds per call)."""
        first, _, last = self.net
        return [first.weight, first.bias, last.weight, last.bias]

    def relaxed_pair(self, z: Tensor, zt: Tensor, logits: Tensor, tau: Tensor, logp=None):
        return relax_pair(z, zt, logits, tau, self.relaxation, logp)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        tau = self.gate(self.log_tau).exp().to(logits.dtype)
        x = features(logits, context).to(logits.dtype)      # (B, C)
        logp = logits.log_softmax(-1)                        # (B, D, K), shared: one backward node
        z = perturbed(logits, S, logp)                       # (S, B, D, K)
        b = one_hot_argmax(z.detach())                       # (S, B, D, K)
        zt = conditional_perturbed(logits, b, logp)          # (S, B, D, K)
        y = torch.cat(self.relaxed_pair(z, zt, logits, tau, logp))  # (2S, B, D, K)
        c = self.control_variate(y, x)                       # (2S, B)
        raw = self.eta_logit if self.eta_bound else self.eta
        if self.use_f:
            f_all = f(torch.cat([b, y]))                     # (3S, B)
            f_b, f_y = f_all[:S], f_all[S:]
            c = c + eta_value(self.gate(raw), self.eta_bound).to(logits.dtype) * f_y
        else:
            f_b = f(b)                                       # (S, B)
        c_z, c_zt = c.split(S)
        logq = log_prob_from(logp, b)                        # (S, B)
        surr = control_variate_surrogate(f_b, logq, c_z, c_zt)
        var = variance_objective(surr, logits)
        own = [self.log_tau, *self.net_parameters()] + ([raw] if self.use_f else [])
        aux = None if var is None else self.aux_from_objective(var, own)
        metrics = {"tau": tau_metric(tau, self.log_tau)}
        if self.use_f:
            metrics["eta"] = eta_value(raw.detach(), self.eta_bound)
        if var is not None:
            metrics["grad_sq"] = var.detach()
        return Estimate(loss=-surr.mean(), value=f_b.detach().mean(0), aux_loss=aux,
                        metrics=metrics)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, use_f={self.use_f}, relaxation={self.relaxation!r}, "
                f"eta_bound={self.eta_bound}")
