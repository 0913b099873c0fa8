"""A throw-away estimator, written as a user would: REINFORCE with the
leave-one-out baseline, under a new name. Copied into a temporary tree (as
estimators/score_loo.py) or into an installed package by the extension tests."""
from __future__ import annotations

from estimators.base import Estimate, Estimator, register
from estimators.reinforce import leave_one_out_mean, score_surrogate
from estimators.sampling import log_prob, sample_one_hot


@register
class ScoreLoo(Estimator):
    name = "score_loo"
    min_samples = 2

    def __init__(self, *, n_samples: int = 3):
        super().__init__(n_samples=n_samples)

    def estimate(self, logits, f, context):
        z = sample_one_hot(logits, self.n_samples)           # (S, B, D, K)
        f_z = f(z)                                           # (S, B)
        surr = score_surrogate(f_z, log_prob(logits, z), leave_one_out_mean(f_z.detach()))
        return Estimate(loss=-surr.mean(), value=f_z.detach().mean(0))
