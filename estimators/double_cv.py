"""`double_cv`: REINFORCE leave-one-out with a second, Taylor-expansion
control variate (Titsias & Shi, AISTATS 2022, "Double control variates for
gradient estimation in discrete latent variable models").

n = n_samples draws z_i ~ q (one-hot, (D, K) each), p = softmax(logits) =
E_q[z]. The second control variate of draw i is the linear term of a
first-order Taylor expansion of f, h_i = s_i . (z_i - p), with a slope s_i
that does not depend on z_i:

- `slope="loo"` (the authors' code, `grad_type="double_cv"`): s_i = the mean
  of grad_z f over the OTHER n - 1 draws. f is evaluated on the n draws only;
  the slopes cost one backward pass through f at the draws.
- `slope="mean"`: s_i = grad_z f at the mean point p, one extra point for f
  (n + 1) and a backward pass there (the expansion around E_q[z]).

The estimate is

    1/n sum_i [grad f(z_i) + (f_i - f_-i - alpha (h_i - h_-i)) grad log q(z_i)]
        + alpha/n sum_i J_p s_i,        J_p = diag p - p p^T per variable,

f_-i, h_-i the means over the other draws (the leave-one-out baseline, the
first control variate). Unbiased for every alpha: E[h_i grad log q(z_i) | s_i]
= grad_logits E_q[s_i . z] = J_p s_i, and every h_j (j != i) has mean 0 given
z_i because z_j - p is independent of z_i and of s_j. alpha is a learned
scalar (`learn_alpha`), trained by `aux_loss` to minimise the squared norm of
the logits' gradient estimate, which is linear in alpha and written out in
closed form (grad_logits log q(z) = z - p), so no double backward; as in the
authors' code it scales the whole second control variate. It starts at
`alpha` (the authors start at 0, i.e. at plain leave-one-out; 1 is the
unscaled Taylor term). Without grad mode (evaluation) the second control
variate is skipped: it changes gradients, never the value.

Axis legend: S = n draws, B batch, D latent variables, K categories.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .base import Estimate, Estimator, Fn, check_choice, register
from .reinforce import leave_one_out_mean
from .sampling import log_prob_from, sample_scored, softmax

SLOPES = ("loo", "mean")


def jacobian_product(p: Tensor, s: Tensor) -> Tensor:
    """(diag p - p p^T) s along the last axis: grad_logits E_q[s . z]."""
    return p * (s - (p * s).sum(-1, keepdim=True))


@register
class DoubleCV(Estimator):
    """Double control variates (Titsias & Shi 2022): leave-one-out baseline
    plus a linear Taylor control variate of f with a learned scale."""

    name = "double_cv"
    uses_context = False
    unbiased = True
    min_samples = 2                  # the leave-one-out baseline
    bf16_safe = False                # f minus its linearisation: a difference of nearby values

    def __init__(self, *, n_samples: int = 4, slope: str = "loo", alpha: float = 1.0,
                 learn_alpha: bool = True):
        check_choice("slope", slope, SLOPES)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not float("-inf") < float(alpha) < float("inf"):
            raise ValueError(f"double_cv: alpha={alpha!r} is not valid; it must be a finite number")
        if not isinstance(learn_alpha, bool):
            raise ValueError(f"double_cv: learn_alpha={learn_alpha!r} is not valid; "
                             f"it must be true or false")
        super().__init__(n_samples=n_samples)
        self.slope, self.learn_alpha = slope, learn_alpha
        self.alpha = nn.Parameter(torch.tensor(float(alpha)), requires_grad=learn_alpha)

    def f_evaluations(self, D: int, K: int) -> int:
        return self.n_samples + (self.slope == "mean")

    def estimate(self, logits: Tensor, f: Fn, context: Optional[Tensor]) -> Estimate:
        n = self.n_samples
        logp, z = sample_scored(logits, n)                      # (B, D, K), (n, B, D, K)
        p = softmax(logits)                                     # (B, D, K) = E_q[z]
        taylor = torch.is_grad_enabled()
        points = z if self.slope == "loo" else torch.cat([z, p.detach().unsqueeze(0)])
        points = points.requires_grad_(taylor)
        f_all = f(points)                                       # (n [+ 1], B)
        f_z = f_all[:n]                                         # (n, B)
        logq = log_prob_from(logp, z)                           # (n, B)
        if taylor and f_all.requires_grad:
            (g,) = torch.autograd.grad(f_all.sum(), points, retain_graph=True)  # (n [+ 1], B, D, K)
            s = leave_one_out_mean(g) if self.slope == "loo" else g[n:].expand_as(z)
        else:
            s = torch.zeros_like(z)
        with torch.no_grad():
            fd = f_z.detach()
            h = (s * (z - p.detach())).sum((-1, -2))            # (n, B)
            adv_f, adv_h = fd - leave_one_out_mean(fd), h - leave_one_out_mean(h)   # (n, B)
            jac = jacobian_product(p.detach(), s).mean(0)       # (B, D, K)
        alpha = self.alpha.to(logits.dtype)
        a = alpha.detach()
        score = ((adv_f - a * adv_h) * (logq - logq.detach())).mean(0)          # (B,)
        # value 0, gradient alpha J_p mean_i s_i (autograd applies J_p: s, not jac)
        correction = (a * s.mean(0) * (p - p.detach())).sum((-1, -2))           # (B,)
        surr = f_z.mean(0) + score + correction
        aux = None
        if self.learn_alpha and taylor:
            # the logits' gradient estimate, linear in alpha, from detached parts
            dz = z - p.detach()                                                  # (n, B, D, K)
            g0 = (adv_f[..., None, None] * dz).mean(0)
            g1 = jac - (adv_h[..., None, None] * dz).mean(0)
            aux = ((g0 + alpha * g1) ** 2).sum((-1, -2)).mean()
        return Estimate(loss=-surr.mean(), value=fd.mean(0), aux_loss=aux,
                        metrics={"alpha": a.detach()})

    def extra_repr(self) -> str:
        return (f"n_samples={self.n_samples}, slope={self.slope!r}, "
                f"learn_alpha={self.learn_alpha}")
