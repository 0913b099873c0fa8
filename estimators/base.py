"""The estimator contract, stated once.

An estimator turns a distribution's parameters and a function of a sample
into one scalar `loss` whose value is minus the target and whose gradient is
minus an estimate of the target's gradient (the surrogate trick):

    est = estimators.build("reinforce", baseline="loo", n_samples=4)
    out = est(logits, f)            # logits (B, D, K); f: z (S, B, D, K) -> (S, B)
    (out.loss + out.aux_loss).backward()   # aux_loss may be None

Categorical estimators: q(z) = prod_d Cat(softmax(logits[b, d])); K = 2 is a
Bernoulli. `z` reaches `f` as one-hot floats, or as points of the simplex for
relaxations, so decoders embed it as `z @ table`, never by index.

Gaussian estimators (`latent = "gaussian"`): the first argument is `params`
(B, D, 2) holding the mean in [..., 0] and the log standard deviation in
[..., 1]; `f` receives z of shape (S, B, D).

Target (`Estimator.target`): "expectation", mean_b E_{z~q_b}[f(z)_b], or
"bound", the S-sample bound mean_b E[log (1/S) sum_s exp f(z_s)_b] (`vimco`).

`f` values each sample on its own, so a caller may split the S axis over
several calls (`call_in_chunks`). It may depend on parameters, `logits`
included; those pathwise gradients are part of the estimate. `context` (B, C)
feeds input-dependent baselines; without it they see the detached logits.

Inputs are checked (`Estimator.forward`): shapes always; NaN or inf logits
raise ValueError at once on a CPU only. On an accelerator a per-step check
would cost a host sync or a device-side assert (which kills the CUDA context),
so the non-finite loss they cause is caught at the trainer's next flush
(bench.job.train: NonFiniteError).

Estimator parameters (baselines, temperatures, control variates) are trained
by `aux_loss` only: the gradient of `loss` never reaches them and the gradient
of `aux_loss` never reaches anything else, so one optimiser over a model that
holds the estimator as a submodule is safe, as are two separate optimisers.

What the harness needs to know about an estimator is declared on its class
(`Estimator` below documents each trait): target, unbiased, min_samples,
latent, temperature, bf16_safe, free_bits, deterministic, uses_context,
double_backward (a class attribute, or a property where options decide it),
and the method `f_evaluations(D, K)`, its cost per estimate in evaluations
of f. The harness reads these and never an estimator's name.

Registration: `@register` on the class. Every module of this package is
imported when the registry is first read (`estimators.registry`), so a new
estimator is one file here (plus `conf/estimator/<name>.yaml` for
`bench.run`); an installed package adds its own through the entry-point
group `discrete_latent_bench.estimators` (a module or an Estimator subclass).

Axis legend: S samples, B batch, D latent variables, K categories, C context.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

import torch
from torch import Tensor, nn

from .registry import Registry

Fn = Callable[[Tensor], Tensor]


def call_in_chunks(f: Fn, z: Tensor, max_rows: Optional[int]) -> Tensor:
    """f(z) for z (S, B, ...) in calls of whole samples, at most `max_rows` rows
    (samples x batch) a call; None: one call. f values each sample on its own
    (the contract above), so the result is that of one call. (S, B)"""
    S, B = z.shape[:2]
    if max_rows is None or S * B <= max_rows:
        return f(z)
    return torch.cat([f(part) for part in z.split(max(1, max_rows // B))])

ESTIMATORS: Registry[type["Estimator"]] = Registry(
    "estimator", package=__name__.rsplit(".", 1)[0], entry_points="discrete_latent_bench.estimators")


@dataclass
class Estimate:
    """What an estimator returns for one batch.

    `loss` is a surrogate, never the objective itself: its value is minus the
    batch mean of the target (E_q[f(z)], or for a bound estimator such as
    VIMCO the S-sample bound) and its gradient is minus the estimator's
    estimate of the target's gradient; call `loss.backward()` (plus
    `aux_loss`) and step an optimiser. `value` (B,) is the detached per-example
    target estimate, for logging. `aux_loss` trains the estimator's own
    parameters (baselines, control variates, REBAR's and RELAX's temperature
    and scale), None where it has none; `loss` never reaches them. `metrics`
    holds detached 0-dim tensors (temperature, eta, baseline, ...) to log."""

    loss: Tensor                      # () surrogate: value -target, grad -estimate
    value: Tensor                     # (B,) detached target estimate
    aux_loss: Optional[Tensor] = None  # () trains the estimator's own parameters
    # scalars worth logging, as detached 0-dim tensors: float() them at logging
    # time, so an estimator step never waits on the device
    metrics: dict[str, Tensor] = field(default_factory=dict)


def register(cls: type["Estimator"]) -> type["Estimator"]:
    """Class decorator: registers the estimator under `cls.name`."""
    return ESTIMATORS.register(cls.name)(cls)


def names() -> list[str]:
    """Registered estimator names, sorted."""
    return ESTIMATORS.names()


def get(name: str) -> type["Estimator"]:
    """The class registered as `name` (its traits, without building it)."""
    return ESTIMATORS.get(name)


def options(name: str) -> dict[str, object]:
    """The options `build(name, ...)` accepts, with their defaults."""
    cls = get(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]
            if p.kind is p.KEYWORD_ONLY}


def build(name: str, **opts) -> "Estimator":
    """Build a registered estimator; unknown names or options raise ValueError."""
    valid = options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"estimator {name!r}: unknown option(s) {unknown}; "
                         f"valid options are {sorted(valid)}")
    return get(name)(**opts)


def check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {sorted(choices)}")


def check_positive(key: str, value, minimum=0, strict=True) -> None:
    ok = value > minimum if strict else value >= minimum
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(f"{key}={value!r} is not valid; it must be {rel} {minimum}")


class Estimator(nn.Module):
    """Base class: validates inputs, then calls `estimate`.

    Subclasses take their options as keyword-only `__init__` arguments,
    validate them there, and declare their traits as class attributes:
    """

    name: ClassVar[str] = ""                 # = file stem = conf stem = MLflow tag
    target: ClassVar[str] = "expectation"    # "expectation" of f, or the multi-sample "bound"
    unbiased: ClassVar[bool] = True          # E[estimate] = gradient of the target
    min_samples: ClassVar[int] = 1           # smallest n_samples accepted
    latent: ClassVar[str] = "categorical"    # "categorical" | "gaussian": what `logits` holds
    # a plain float attribute `tau` that a schedule may anneal and a search may tune
    temperature: ClassVar[bool] = False
    # networks may run in bfloat16: False where f is differenced at nearby
    # points (control variates, leave-one-out bounds), so rounding does not cancel
    bf16_safe: ClassVar[bool] = True
    # the harness may clamp a separate KL term (False for bounds that hold the KL inside f)
    free_bits: ClassVar[bool] = True
    # the same estimate every call (zero variance by construction)
    deterministic: ClassVar[bool] = False
    # reads `context`: False lets the harness skip the features pass that makes it
    # (default True, so an estimator that does not say still gets it)
    uses_context: ClassVar[bool] = True
    # the estimate differentiates a gradient that flows through f (create_graph
    # over the model's pieces: a learned control variate's variance objective).
    # torch.compile's aot_autograd has no double backward, so validation refuses
    # train.compile for these; a subclass whose options decide it overrides this
    # with a property
    double_backward: ClassVar[bool] = False

    def __init__(self, *, n_samples: int = 1):
        super().__init__()
        if not isinstance(n_samples, int) or n_samples < self.min_samples:
            raise ValueError(f"{self.name}: n_samples={n_samples!r} is not valid; "
                             f"it must be an integer >= {self.min_samples}")
        self.n_samples = n_samples
        self._gated: dict[int, Tensor] = {}     # id(parameter) -> its alias (gate)

    def forward(self, logits: Tensor, f: Fn, context: Optional[Tensor] = None) -> Estimate:
        self._check_params(logits)
        if context is not None and (context.dim() != 2 or context.shape[0] != logits.shape[0]):
            raise ValueError(f"{self.name}: context must have shape (B, C) with "
                             f"B={logits.shape[0]}, got {tuple(context.shape)}")
        return self.estimate(logits, _checked(f, logits.shape[0], self.name), context)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        raise NotImplementedError

    def f_evaluations(self, D: int, K: int) -> int:
        """Evaluations of f per example per estimate, for D variables of K
        categories (equal-compute comparisons). Default: one per sample."""
        return self.n_samples

    def check_latent(self, D: int, K: int) -> None:
        """Refuse latent sizes this estimator cannot handle (ValueError naming
        latent.D / latent.K and what would work); called before training."""

    # -- input checks ---------------------------------------------------
    def _check_params(self, logits: Tensor) -> None:
        what = "params" if self.latent == "gaussian" else "logits"
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise ValueError(f"{self.name}: {what} must be a floating-point tensor")
        if logits.dim() != 3:
            want = "(B, D, 2) [mean, log_std]" if self.latent == "gaussian" else "(B, D, K)"
            raise ValueError(f"{self.name}: {what} must have shape {want}, "
                             f"got {tuple(logits.shape)}")
        if self.latent == "gaussian" and logits.shape[-1] != 2:
            raise ValueError(f"{self.name}: params must have shape (B, D, 2) "
                             f"[mean, log_std], got {tuple(logits.shape)}")
        if self.latent == "categorical" and logits.shape[-1] < 2:
            raise ValueError(f"{self.name}: logits need K >= 2 categories, "
                             f"got shape {tuple(logits.shape)}")
        if _is_host(logits):
            # a NaN or inf anywhere makes the sum non-finite: one reduction
            # read back (~3 us at B = 128) instead of isfinite, all and a bool
            # (~14 us, 30x the sum on large inputs); only a non-finite sum,
            # or a finite input whose sum overflowed, pays for the exact test
            if (not math.isfinite(logits.detach().sum().item())
                    and not torch.isfinite(logits).all()):
                raise ValueError(f"{self.name}: {what} contain NaN or inf")
        # accelerators: none here, never torch._assert_async (module docstring:
        # a device-side assert leaves a dead CUDA context that cannot even log)

    # -- estimator-parameter isolation -----------------------------------
    def gate(self, t: Tensor) -> Tensor:
        """An alias of an estimator parameter that `loss` cannot train: a
        detached leaf, so the loss's gradient lands on the alias and is
        dropped, while `aux_from_objective` differentiates through the alias
        and hands its gradient to `t`. Use a gated parameter only through its
        alias within one estimate. (A leaf rather than a hooked view: no
        Python hook and no zeros per backward pass, the same gradients.)"""
        if not (t.requires_grad and torch.is_grad_enabled()):
            return t
        alias = t.detach().requires_grad_()
        self._gated[id(t)] = alias
        return alias

    def aux_from_objective(self, objective: Tensor, params: list[Tensor]) -> Tensor:
        """Turn a scalar objective into an aux_loss whose value is the objective
        and whose gradient reaches `params` only (none of the model)."""
        wrt = [self._gated.get(id(p), p) for p in params]
        self._gated.clear()
        grads = torch.autograd.grad(objective, wrt, retain_graph=True, allow_unused=True)
        used = [(p, g) for p, g in zip(params, grads) if g is not None]
        if not used:
            return objective.detach()
        return _CarryGrads.apply(objective.detach(), [g for _, g in used], *[p for p, _ in used])

    def extra_repr(self) -> str:
        return f"n_samples={self.n_samples}"


def _is_host(t: Tensor) -> bool:
    """Can `t`'s values be read without waiting on an accelerator? (One place,
    so tests can take the accelerator path on a CPU.)"""
    return t.is_cpu


def _checked(f: Fn, batch: int, name: str) -> Fn:
    def wrapped(z: Tensor) -> Tensor:
        out = f(z)
        want = (z.shape[0], batch)
        if not isinstance(out, Tensor) or out.shape != want:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{name}: f must map z {tuple(z.shape)} to shape (S, B) = {want}, got {got}")
        return out
    return wrapped


class _CarryGrads(torch.autograd.Function):
    """Value: `value`; backward: grad_out * g_i into each p_i. The gradient
    sum_i ((p_i - p_i.detach()) * g_i).sum() would give, bit for bit (the
    output's gradient cast to g_i's dtype, then times g_i), without a graph of
    five ops per parameter; its value is the objective's, as documented."""

    @staticmethod
    def forward(ctx, value: Tensor, grads: list[Tensor], *params: Tensor) -> Tensor:
        ctx.grads = [g.detach() if g.requires_grad else g for g in grads]
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return (None, None, *[(grad_out if grad_out.dtype == g.dtype else grad_out.to(g.dtype)) * g
                              for g in ctx.grads])
