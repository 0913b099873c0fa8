"""`relax`: a learned control variate on the relaxed sample (Grathwohl et al. 2018).

    g = [f(b) - c(z~)] grad log q(b) + grad f(b) + grad c(z) - grad c(z~)

with b = H(z), z~ ~ p(z | b) as in REBAR, and the control variate

    c(z) = r_phi(softmax(z / tau), x)  [+ eta f(softmax(z / tau)) if use_f]

a small network on the relaxed sample and the input features x (`context`, or
the detached logits): `layers` hidden layers of `hidden` units with
`activation` (relu | leaky_relu, slope 0.3 as DisARM's | tanh, as RELAX's).
`net_input="perturbed"` feeds the network the perturbed logits z itself
instead of s(z): for K = 2 the logistic sample z_1 - z_0 = a + logit(u), one
number per variable, which is what the papers' binary-VAE code feeds it.
`eta_scales_net=True` makes the control variate eta (f(s(z)) + r_phi) as both
papers' code has it (RELAX binary_vae_multilayer_per_layer.py, relaxation
"add"; DisARM networks.py, get_relax_control_variate), instead of
r_phi + eta f(s(z)). `relaxation="muprop"` replaces softmax(z / tau) by the
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

from .base import Estimate, Estimator, Fn, check_choice, check_positive, register
from .rebar import (check_eta_bound, check_relaxation, control_variate_surrogate,
                    eta_parameter, eta_value, relax_pair, tau_metric, variance_objective)
from .reinforce import features
from .sampling import log_softmax, conditional_perturbed, log_prob_from, one_hot_argmax, perturbed


class _LeakyReLU03(nn.LeakyReLU):
    """LeakyReLU(0.3): the control network of DisARM's launcher."""

    def __init__(self):
        super().__init__(0.3)


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": _LeakyReLU03, "tanh": nn.Tanh}
NET_INPUTS = ("relaxed", "perturbed")


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

    def __init__(self, *, hidden: int = 64, layers: int = 1, activation: str = "relu",
                 net_input: str = "relaxed", tau: float = 0.5, use_f: bool = False,
                 eta: float = 1.0, eta_scales_net: bool = False, relaxation: str = "concrete",
                 eta_bound: bool = False, n_samples: int = 1):
        check_positive("tau", tau)
        check_positive("hidden", hidden, minimum=1, strict=False)
        check_positive("layers", layers, minimum=1, strict=False)
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("net_input", net_input, NET_INPUTS)
        if not isinstance(eta_scales_net, bool):
            raise ValueError(f"eta_scales_net={eta_scales_net!r} is not valid; choose one of [False, True]")
        if eta_scales_net and not use_f:
            raise ValueError("eta_scales_net=True is not valid with use_f=False: eta exists "
                             "only with use_f=True (set both, or neither)")
        check_relaxation(relaxation)
        check_eta_bound(eta_bound)
        super().__init__(n_samples=n_samples)
        self.use_f = bool(use_f)
        self.relaxation, self.net_input, self.eta_scales_net = relaxation, net_input, eta_scales_net
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        # eta and its bound only exist with use_f, as before (ignored otherwise)
        self.eta_bound = eta_bound and self.use_f
        raw = eta_parameter(eta, eta_bound) if use_f else None
        self.eta = None if self.eta_bound else raw
        self.eta_logit = raw if self.eta_bound else None
        # input width (D*K | D + C) is known at the first call; applied by hand in
        # control_variate so each weight passes through the gate
        act = ACTIVATIONS[activation]
        body = [nn.LazyLinear(hidden), act()]
        for _ in range(layers - 1):
            body += [nn.Linear(hidden, hidden), act()]
        self.net = nn.Sequential(*body, nn.Linear(hidden, 1))
        self.act = act()

    def control_variate(self, y: Tensor, x: Tensor) -> Tensor:
        """r_phi on network inputs y (N, B, D, K) or (N, B, D) and features x (B, C) -> (N, B)."""
        inp = torch.cat([y.flatten(2), x.expand(y.shape[0], *x.shape)], -1)  # (N, B, D*K | D + C)
        if any(is_lazy(p) for p in self.net_parameters()):
            with torch.no_grad():
                self.net(inp)                     # materialise the lazy layer
            self.net.to(dtype=y.dtype)
        params = [self.gate(p) for p in self.net_parameters()]
        h = inp
        for i in range(0, len(params) - 2, 2):
            h = self.act(F.linear(h, params[i], params[i + 1]))
        return F.linear(h, params[-2], params[-1]).squeeze(-1)

    def net_parameters(self) -> list[Tensor]:
        """self.net.parameters(), in order, read directly (the generator walks
        the module tree, several microseconds per call)."""
        return [t for layer in self.net[::2] for t in (layer.weight, layer.bias)]

    def net_inputs(self, z: Tensor, zt: Tensor, y: Tensor) -> Tensor:
        """What r_phi sees for z and z~, stacked: (2S, B, ...)."""
        if self.net_input == "relaxed":
            return y
        if z.shape[-1] == 2:                      # the logistic sample of a Bernoulli
            return torch.cat([z[..., 1] - z[..., 0], zt[..., 1] - zt[..., 0]])   # (2S, B, D)
        return torch.cat([z, zt])                                               # (2S, B, D, K)

    def relaxed_pair(self, z: Tensor, zt: Tensor, logits: Tensor, tau: Tensor, logp=None):
        return relax_pair(z, zt, logits, tau, self.relaxation, logp)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        tau = self.gate(self.log_tau).exp().to(logits.dtype)
        x = features(logits, context).to(logits.dtype)      # (B, C)
        logp = log_softmax(logits)                        # (B, D, K), shared: one backward node
        z = perturbed(logits, S, logp)                       # (S, B, D, K)
        b = one_hot_argmax(z.detach())                       # (S, B, D, K)
        zt = conditional_perturbed(logits, b, logp)          # (S, B, D, K)
        y = torch.cat(self.relaxed_pair(z, zt, logits, tau, logp))  # (2S, B, D, K)
        c = self.control_variate(self.net_inputs(z, zt, y), x)      # (2S, B)
        raw = self.eta_logit if self.eta_bound else self.eta
        if self.use_f:
            f_all = f(torch.cat([b, y]))                     # (3S, B)
            f_b, f_y = f_all[:S], f_all[S:]
            eta = eta_value(self.gate(raw), self.eta_bound).to(logits.dtype)
            c = eta * (f_y + c) if self.eta_scales_net else c + eta * f_y
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
                f"eta_bound={self.eta_bound}, net_input={self.net_input!r}, "
                f"eta_scales_net={self.eta_scales_net}")
