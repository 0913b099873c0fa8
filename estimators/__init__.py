"""Gradient estimators for discrete (and Gaussian) latent variables behind one
interface. The contract is in `estimators.base`; each estimator is one file.

    import estimators
    estimators.names()                      # ['exact', 'gumbel', ...]
    est = estimators.build("rebar")         # a torch.nn.Module
    out = est(logits, f, context=None)      # -> Estimate(loss, value, aux_loss, metrics)
"""
from .base import Estimate, Estimator, build, names, options, register
from . import exact, reinforce, gumbel, rebar, relax, vimco, gaussian  # noqa: F401  (registration)
from .stats import GradStats, gradient_stats, logit_gradient_stats

__all__ = ["Estimate", "Estimator", "build", "names", "options", "register",
           "GradStats", "gradient_stats", "logit_gradient_stats"]
