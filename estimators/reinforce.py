"""`reinforce`: the score-function estimator with a choice of baseline.

    grad E_q[f] = E_q[grad f(z) + (f(z) - b) grad log q(z)]

unbiased for any baseline b that does not depend on z.  Baselines:

- `none`    b = 0 (Williams 1992).
- `ema`     b = exponential moving average of the batch mean of f, updated
            after use so this step's estimate stays unbiased (Williams 1992).
- `learned` b = c_psi(context) fitted by regression to f, an input-dependent
            baseline as in NVIL (Mnih & Gregor 2014). Trained by `aux_loss`.
- `loo`     b_s = mean of the other S - 1 samples' f (RLOO, Kool et al. 2019);
            needs n_samples >= 2.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .base import Estimate, Estimator, Fn, check_choice, register
from .sampling import log_prob_from, sample_scored

BASELINES = ("none", "ema", "learned", "loo")


def score_surrogate(f_z: Tensor, logq: Tensor, baseline: Tensor | float) -> Tensor:
    """(S, B): value f, gradient grad f + (f - b) grad log q."""
    return f_z + (f_z - baseline).detach() * (logq - logq.detach())


def leave_one_out_mean(f_z: Tensor) -> Tensor:
    """(S, B) -> (S, B): for each sample, the mean of the other S - 1 values."""
    return (f_z.sum(0, keepdim=True) - f_z) / (f_z.shape[0] - 1)


def features(logits: Tensor, context: Optional[Tensor]) -> Tensor:
    """Detached inputs for an input-dependent baseline: (B, C) or (B, D*K)."""
    x = context if context is not None else logits.flatten(1)
    return x.detach()


@register
class Reinforce(Estimator):
    """Score-function (REINFORCE) estimator (Williams 1992) with baselines from
    NVIL (Mnih & Gregor 2014) and RLOO (Kool et al. 2019)."""

    name = "reinforce"
    unbiased = True
    min_samples = 1

    def __init__(self, *, baseline: str = "loo", n_samples: int = 4,
                 ema_decay: float = 0.99, hidden: int = 64):
        check_choice("baseline", baseline, BASELINES)
        if baseline == "loo" and n_samples < 2:
            raise ValueError(f"reinforce: baseline='loo' needs n_samples >= 2, got n_samples={n_samples}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"reinforce: ema_decay={ema_decay!r} is not valid; it must be in [0, 1)")
        super().__init__(n_samples=n_samples)
        self.baseline, self.ema_decay = baseline, ema_decay
        self.uses_context = baseline == "learned"       # only the learned baseline reads it
        self.register_buffer("ema", torch.zeros(()))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        # input size is the model's business, known at the first call
        self.net = (nn.Sequential(nn.LazyLinear(hidden), nn.Tanh(), nn.Linear(hidden, 1))
                    if baseline == "learned" else None)

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        S = self.n_samples
        logp, z = sample_scored(logits, S)                  # (B, D, K), (S, B, D, K)
        f_z = f(z)                                          # (S, B)
        logq = log_prob_from(logp, z)                       # (S, B)
        aux, metrics = None, {}
        if self.baseline == "none":
            b = 0.0
        elif self.baseline == "ema":
            b = self._ema_baseline(f_z)
            metrics["baseline"] = b.detach()
        elif self.baseline == "learned":
            b = self.net(features(logits, context).to(logits.dtype)).squeeze(-1)  # (B,)
            aux = ((f_z.detach() - b) ** 2).mean()
        else:  # loo
            b = leave_one_out_mean(f_z.detach())            # (S, B)
        surr = score_surrogate(f_z, logq, b)
        return Estimate(loss=-surr.mean(), value=f_z.detach().mean(0), aux_loss=aux,
                        metrics=metrics)

    def _ema_baseline(self, f_z: Tensor) -> Tensor:
        # bias-corrected like Adam, so early steps are not pulled towards 0;
        # before the first update ema = 0 and so is b (no branch: no host sync).
        # The ops of ema / (1 - decay ** steps.clamp(min=1)) called directly:
        # `**` and `1 -` on tensors go through Python-level wrappers, and
        # `steps += 1` through Module.__setattr__ (same kernels, same numbers)
        ema, steps, decay = self.ema, self.ema_steps, self.ema_decay
        b = torch.div(ema, torch.rsub(torch.pow(decay, steps.clamp(min=1)), 1))
        if self.training:
            ema.mul_(decay).add_((1 - decay) * f_z.detach().mean().to(ema.dtype))
            steps.add_(1)
        return b.to(f_z.dtype)

    def extra_repr(self) -> str:
        return f"baseline={self.baseline!r}, n_samples={self.n_samples}"
