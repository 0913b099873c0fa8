"""Gradient statistics at fixed parameters: variance (trace of the covariance),
SNR, bias and cosine to the exact gradient, seconds per estimate.

    stats = gradient_stats(model, lambda: est(model.posterior(b), f).loss,
                           params=["encoder."], n=100,
                           exact_fn=lambda: exact(model.posterior(b), f).loss)
    stats.metrics()   # {"grad/log10_var": ..., "grad/snr": ..., "grad/bias": ..., ...}

`loss_fn()` returns a scalar whose gradient is minus one gradient estimate,
computed with `module`'s parameters; `params` selects them by name or name
prefix (all of them by default). N independent estimates g_1..g_N give

- variance  sum over parameters of Var(g_i)  (the trace of the covariance),
- snr       mean over parameters of |E g_i| / sqrt(Var g_i), over the coordinates
            whose estimates vary: one that does not (a deterministic part such
            as an analytic KL's, or float32 noise, sd < 1e-6 |mean|) has an
            infinite or meaningless SNR that would swamp the mean; none left:
            no snr reported,
- bias      |E g - g_exact|_2 and cosine(E g, g_exact), when `exact_fn` is given,
- seconds per estimate, so estimators can be compared at equal compute.

The N estimates are drawn in one vectorised backward pass (torch.func.vmap
over independent draws, chunked) where the estimator allows it; estimators
that differentiate inside their own forward (rebar, relax) fall back to N
separate passes. `GradStats.batched` says which path ran.

`logit_gradient_stats(est, logits, f, params)` is the fast path for the usual
VAE setup, where f does not depend on the logits (KL analytic, outside f):
the N draws become N replicas of the batch in one estimator call (the replica
axis folded into f's sample axis), and the gradients reach `params` through
one batched vector-Jacobian product of the encoder (`is_grads_batched`).
Every estimator takes this path, rebar and relax included.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

LossFn = Callable[[], Tensor]


@dataclass
class GradStats:
    n: int
    mean: Tensor                   # (P,) flattened mean gradient of the *target* (= -d loss)
    variance: float                # trace of the covariance
    snr: Optional[float]           # None: no coordinate varies
    seconds_per_estimate: float
    batched: bool
    bias: Optional[float] = None
    cosine: Optional[float] = None

    @property
    def log10_var(self) -> float:
        return float(torch.log10(torch.tensor(max(self.variance, 1e-300), dtype=torch.float64)))

    def metrics(self, prefix: str = "grad/") -> dict[str, float]:
        out = {"log10_var": self.log10_var, "seconds_per_estimate": self.seconds_per_estimate}
        if self.snr is not None:
            out["snr"] = self.snr
        if self.bias is not None:
            out.update(bias=self.bias, cosine=self.cosine)
        return {prefix + k: float(v) for k, v in out.items()}


class _Closure(nn.Module):
    """Lets functional_call swap `module`'s parameters while loss_fn runs."""

    def __init__(self, module: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.m, self.loss_fn = module, loss_fn

    def forward(self) -> Tensor:
        return self.loss_fn()


def select(module: nn.Module, params: Optional[Sequence[str]]) -> dict[str, Tensor]:
    named = dict(module.named_parameters())
    if params is None:
        chosen = named
    else:
        chosen = {k: p for k, p in named.items() if any(k == s or k.startswith(s) for s in params)}
    if not chosen:
        raise ValueError(f"gradient_stats: params={list(params or [])} select no parameter; "
                         f"valid names are {sorted(named)}")
    return chosen


def _flat(grads: Sequence[Tensor]) -> Tensor:
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], 1)   # (N, P)


def _looped(module: nn.Module, loss_fn: LossFn, chosen: dict[str, Tensor], n: int) -> Tensor:
    leaves = list(chosen.values())
    rows = []
    for _ in range(n):
        g = torch.autograd.grad(-loss_fn(), leaves, allow_unused=True)
        rows.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1)
                               for x, p in zip(g, leaves)]))
    return torch.stack(rows)                                             # (N, P)


def _vmapped(module: nn.Module, loss_fn: LossFn, chosen: dict[str, Tensor], n: int,
             chunk: int) -> Tensor:
    wrapper = _Closure(module, loss_fn)
    detached = {"m." + k: p.detach() for k, p in chosen.items()}

    def target(p: dict[str, Tensor], _draw: Tensor) -> Tensor:
        return -functional_call(wrapper, p, ())

    draws = torch.arange(n, device=next(iter(chosen.values())).device)
    g = vmap(grad(target), in_dims=(None, 0), randomness="different", chunk_size=chunk)(
        detached, draws)
    return _flat([g["m." + k] for k in chosen])                         # (N, P)


def _summarise(g: Tensor, seconds: float, batched: bool, exact: Optional[Tensor]) -> GradStats:
    g = g.detach().double()
    mean, var = g.mean(0), g.var(0)                                       # (P,), (P,)
    sd = var.sqrt()
    varies = sd > 1e-6 * mean.abs()                                       # (P,)
    snr = float((mean[varies].abs() / sd[varies]).mean()) if bool(varies.any()) else None
    stats = GradStats(n=g.shape[0], mean=mean, variance=float(var.sum()), snr=snr,
                      seconds_per_estimate=seconds, batched=batched)
    if exact is not None:
        exact = exact.double()
        stats.bias = float((mean - exact).norm())
        stats.cosine = float(torch.nn.functional.cosine_similarity(mean, exact, 0))
    return stats


def _replica_logit_grads(est, logits: Tensor, f, n: int) -> Tensor:
    """(n, B, D, K): n iid estimates of d target / d logits, one estimator call."""
    B = logits.shape[0]
    rep = logits.detach().repeat(n, 1, 1).requires_grad_()             # (n*B, D, K)

    def f_rep(z: Tensor) -> Tensor:                                     # (S, n*B, ...) -> (S, n*B)
        S = z.shape[0]
        return f(z.reshape(S * n, B, *z.shape[2:])).reshape(S, n * B)

    (g,) = torch.autograd.grad(est(rep, f_rep).loss, rep)
    return -n * g.reshape(n, *logits.shape)


def logit_gradient_stats(est, logits: Tensor, f, params: Sequence[Tensor], n: int = 100,
                         exact_est=None, chunk: int = 25) -> GradStats:
    """Statistics of d/d params of E_q[f] for q = Cat(logits(params)); f must
    not depend on the logits (checked), as with an analytic KL outside f."""
    if n < 2:
        raise ValueError(f"logit_gradient_stats: n={n} is not valid; it needs n >= 2 estimates")
    probe = f(torch.zeros(1, *logits.shape, dtype=logits.dtype, device=logits.device))
    if probe.requires_grad and torch.autograd.grad(probe.sum(), logits, retain_graph=True,
                                                   allow_unused=True)[0] is not None:
        raise ValueError("logit_gradient_stats: f depends on the logits; use gradient_stats")
    params = list(params)
    start = time.perf_counter()
    rows = []
    for lo in range(0, n, chunk):
        G = _replica_logit_grads(est, logits, f, min(chunk, n - lo))   # (c, B, D, K)
        gp = torch.autograd.grad(logits, params, grad_outputs=G, is_grads_batched=True,
                                 retain_graph=True)
        rows.append(_flat(gp))
    seconds = (time.perf_counter() - start) / n
    exact = None
    if exact_est is not None:
        G = _replica_logit_grads(exact_est, logits, f, 1)
        exact = _flat(torch.autograd.grad(logits, params, grad_outputs=G, is_grads_batched=True,
                                          retain_graph=True))[0]
    return _summarise(torch.cat(rows), seconds, True, exact)


def gradient_stats(module: nn.Module, loss_fn: LossFn, params: Optional[Sequence[str]] = None,
                   n: int = 100, exact_fn: Optional[LossFn] = None, batched: bool = True,
                   chunk: int = 25) -> GradStats:
    if n < 2:
        raise ValueError(f"gradient_stats: n={n} is not valid; it needs n >= 2 estimates")
    chosen = select(module, params)
    start = time.perf_counter()
    g = None
    if batched:
        try:
            g = _vmapped(module, loss_fn, chosen, n, chunk)
        except (RuntimeError, NotImplementedError, TypeError):
            g = None   # the estimator is not vmap-able (hooks, inner autograd.grad)
    used_vmap = g is not None
    if g is None:
        g = _looped(module, loss_fn, chosen, n)
    seconds = (time.perf_counter() - start) / n
    exact = _looped(module, exact_fn, chosen, 1)[0] if exact_fn is not None else None
    return _summarise(g, seconds, used_vmap, exact)
