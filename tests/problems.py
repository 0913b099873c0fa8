"""Small test problems with gradients known by enumeration, replicated R times
along the batch so that one backward pass yields R independent estimates.

Axis legend: S samples, R replicas, B examples, D variables, K categories.

Replica r owns its copy of every parameter (logits_r, w_r), so the gradient
of the batch-mean loss on replica r's slice is (1/R) times that replica's own
estimate: scaling by -R recovers R iid estimates of the target's gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import estimators

DTYPE = torch.float64


@dataclass
class Problem:
    """f(z)_b = -(<z, w> - t_b)^2 + c * log q(z): depends on the logits both
    through q and pathwise, and on a separate parameter w."""

    logits: Tensor    # (B, D, K)
    w: Tensor         # (D, K)
    t: Tensor         # (B,)
    c: float = 0.5

    @classmethod
    def make(cls, B=3, D=2, K=3, seed=0) -> "Problem":
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn(B, D, K, generator=g, dtype=DTYPE),
                   torch.randn(D, K, generator=g, dtype=DTYPE),
                   torch.randn(B, generator=g, dtype=DTYPE))

    def replicate(self, R: int):
        """Leaves (R, B, D, K) and (R, D, K), and f over the flattened batch R*B."""
        B, D, K = self.logits.shape
        logits = self.logits.expand(R, B, D, K).clone().requires_grad_()
        w = self.w.expand(R, D, K).clone().requires_grad_()

        def f(z: Tensor) -> Tensor:                               # (S, R*B, D, K) -> (S, R*B)
            S = z.shape[0]
            zr = z.reshape(S, R, B, D, K)
            lq = logits.log_softmax(-1).unsqueeze(0)              # (1, R, B, D, K)
            inner = (zr * w[None, :, None]).sum((-1, -2))         # (S, R, B)
            val = -(inner - self.t) ** 2 + self.c * (zr * lq).sum((-1, -2))
            return val.reshape(S, R * B)

        return logits, w, f

    def estimates(self, est, R: int) -> Tensor:
        """(R, P) iid gradient estimates of the target for logits and w."""
        logits, w, f = self.replicate(R)
        B, D, K = self.logits.shape
        out = est(logits.reshape(R * B, D, K), f)
        g_logits, g_w = torch.autograd.grad(out.loss, [logits, w], allow_unused=True,
                                            materialize_grads=True)
        return -R * torch.cat([g_logits.reshape(R, -1), g_w.reshape(R, -1)], 1)

    def exact(self) -> Tensor:
        return self.estimates(estimators.build("exact"), 1)[0]


def z_scores(draws: Tensor, exact: Tensor) -> Tensor:
    """Per-coordinate z statistic of the mean of iid draws (R, P) against exact (P,)."""
    mean, se = draws.mean(0), draws.std(0) / draws.shape[0] ** 0.5
    return (mean - exact) / se.clamp_min(1e-12)


# With P coordinates tested at once, |z| < 4.5 everywhere has a family-wise
# false-alarm rate below P * 6.8e-6 (about 2e-4 for P = 24) for a correct
# estimator, while a biased one at R = 20,000 draws shows |z| in the tens.
Z_MAX = 4.5


def max_abs_z(est, shape: dict, R: int = 20_000, seed: int = 0) -> float:
    """Largest |z| of R estimates by `est` (float64) against the exact
    gradient of Problem.make(**shape), noise seeded with `seed`."""
    torch.manual_seed(seed)
    problem = Problem.make(**shape)
    return z_scores(problem.estimates(est.to(DTYPE), R), problem.exact()).abs().max().item()


def points_seen(est, shape=(2, 4, 3)) -> tuple[list, Tensor]:
    """The z of every call of f during one estimate and its backward pass, on
    random logits of `shape` with f(z) = -|z|^2; and the logits."""
    logits = torch.randn(*shape, requires_grad=True)
    calls = []

    def f(z):
        calls.append(z.detach())
        return -(z ** 2).sum((-1, -2))
    est(logits, f).loss.backward()
    return calls, logits


def check_unbiased(name: str, opts: dict, shape: dict) -> None:
    """estimators.build(name, **opts) passes the z-test against the exact
    gradient on Problem.make(**shape) (max |z| printed, asserted < Z_MAX)."""
    z = max_abs_z(estimators.build(name, **opts), shape)
    print(f"\n{name} {opts} K={shape['K']}: max |z| = {z:.2f}")
    assert z < Z_MAX

