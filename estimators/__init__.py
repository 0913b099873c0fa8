"""Gradient estimators for discrete (and Gaussian) latent variables behind one
interface. The contract is in `estimators.base`; each estimator is one file of
this package, found without an import list (`estimators.registry`).

    import estimators
    estimators.names()                      # ['exact', 'gumbel', ...]
    est = estimators.build("rebar")         # a torch.nn.Module
    out = est(logits, f, context=None)      # -> Estimate(loss, value, aux_loss, metrics)
    kl = estimators.kl_categorical(logits)  # (B, D) analytic KL against the uniform prior
"""
from .base import Estimate, Estimator, build, get, names, options, register
from .kl import kl_bernoulli, kl_categorical
from .stats import GradStats, gradient_stats, logit_gradient_stats

__all__ = ["Estimate", "Estimator", "build", "get", "names", "options", "register",
           "GradStats", "gradient_stats", "logit_gradient_stats", "kl_bernoulli", "kl_categorical"]
