"""ARMS and CARMS: unbiased against the enumerated gradient (z-test, float64,
fixed seed, f depending on the logits pathwise and on w; tolerance and
family-wise argument in tests/problems.py), broken variants caught by the
same test, the copulas' pair CDFs against scipy and Monte Carlo, agreement
with the authors' formulas on the same samples (and categorical DisARM's
importance-weighted form against its authors'), one call of f, dtypes, errors.

Axis legend: n samples, B batch, D latent variables, K categories.
"""
import pytest
import torch
from scipy.stats import multivariate_normal, norm

import estimators
import estimators.arms as arms_mod
import estimators.carms as carms_mod
from estimators import copulas
from tests.problems import DTYPE, Z_MAX, Problem
from tests.test_estimators_disarm_indecater import _Patched, case_ids, check_unbiased, max_abs_z

BERN = dict(B=3, D=3, K=2)
CORRECT = [
    ("arms", dict(), BERN),
    ("arms", dict(n_samples=2), BERN),
    ("arms", dict(copula="gaussian"), BERN),
    ("arms", dict(n_samples=3, copula="gaussian"), BERN),
    ("carms", dict(), dict(B=3, D=2, K=3)),
    ("carms", dict(n_samples=3, copula="gaussian"), dict(B=3, D=2, K=4)),
    ("carms", dict(), BERN),
    ("carms", dict(n_samples=2), BERN),
]


@pytest.mark.parametrize("name,opts,shape", CORRECT, ids=case_ids(CORRECT))
def test_unbiased_against_exact(name, opts, shape):
    check_unbiased(name, opts, shape)


# -- broken variants: the same test catches them ----------------------------

class ArmsWithoutDebias(_Patched, arms_mod.Arms):
    """Plain RLOO on the antithetic samples: the correlation's shrinkage stays."""
    module, helper = arms_mod, "debias"

    def replacement(self, logits, original):
        return lambda a, n, copula: torch.ones_like(a)


class ArmsIndependentSamples(_Patched, arms_mod.Arms):
    """Independent samples, but the antithetic debiasing factor kept."""
    module, helper = arms_mod, "antithetic_bernoulli"

    def replacement(self, logits, original):
        return lambda a, n, copula: (torch.rand(n, *a.shape, dtype=a.dtype)
                                     < torch.sigmoid(a)).to(a.dtype)


class CarmsWithoutRatio(_Patched, carms_mod.Carms):
    """Antithetic samples treated as independent (ratio 1): plain RLOO."""
    module, helper = carms_mod, "pair_joint"

    def replacement(self, logits, original):
        return lambda q, n, copula: q.unsqueeze(-1) * q.unsqueeze(-2)


class CarmsIndependentSamples(_Patched, carms_mod.Carms):
    """Independent samples, reweighted as if they were antithetic."""
    module, helper = carms_mod, "antithetic_categorical"

    def replacement(self, logits, original):
        return lambda q, n, copula: torch.distributions.Categorical(probs=q).sample((n,))


BROKEN = [
    (ArmsWithoutDebias, BERN),
    (ArmsIndependentSamples, BERN),
    (CarmsWithoutRatio, dict(B=3, D=2, K=3)),
    (CarmsIndependentSamples, dict(B=3, D=2, K=3)),
]


@pytest.mark.parametrize("broken,shape", BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_broken_variants_fail_the_same_test(broken, shape):
    z = max_abs_z(broken(), shape)
    print(f"\n{broken.__name__}: max |z| = {z:.2f}")
    assert z > Z_MAX


# -- the copulas ---------------------------------------------------------------

POINTS = [(0.3, 0.3), (0.1, 0.8), (0.6, 0.6), (0.05, 0.95), (0.0, 0.4), (1.0, 0.7)]


@pytest.mark.parametrize("n", [3, 5])
def test_gaussian_pair_cdf_matches_scipy(n):
    rho = -1 / (n - 1)
    mvn = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])
    for x, y in POINTS:
        want = mvn.cdf([norm.ppf(x), norm.ppf(y)]) if 0 < x < 1 and 0 < y < 1 else min(x, y) * (x * y > 0)
        got = copulas.cdf2("gaussian", n, torch.tensor(x, dtype=DTYPE), torch.tensor(y, dtype=DTYPE))
        assert abs(got.item() - want) < 1e-7, (x, y)


@pytest.mark.parametrize("copula", copulas.COPULAS)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_copula_margins_uniform_and_pair_cdf_matches_draws(copula, n):
    torch.manual_seed(0)
    N = 200_000
    u = copulas.sample(copula, n, (N,), torch.zeros((), dtype=DTYPE))       # (n, N)
    # each margin U(0, 1): mean 1/2, P(u <= 0.3) = 0.3 within 5 standard errors
    assert (u.mean(1) - 0.5).abs().max() < 5 * (1 / 12 / N) ** 0.5
    for x, y in POINTS:
        hit = ((u[0] <= x) & (u[1] <= y)).to(DTYPE).mean().item()
        c = copulas.cdf2(copula, n, torch.tensor(x, dtype=DTYPE), torch.tensor(y, dtype=DTYPE)).item()
        assert abs(hit - c) < 5 * (max(c * (1 - c), 1e-6) / N) ** 0.5 + 1e-9, (x, y, hit, c)
    # antithetic: below independence
    assert copulas.cdf2(copula, n, torch.tensor(0.5, dtype=DTYPE), torch.tensor(0.5, dtype=DTYPE)) < 0.25


def test_carms_pair_joint_matches_draws():
    torch.manual_seed(0)
    q = torch.tensor([[[0.5, 0.3, 0.15, 0.05]]], dtype=DTYPE)              # (1, 1, 4)
    J = carms_mod.pair_joint(q, 3, "dirichlet")[0, 0]                        # (4, 4)
    assert torch.allclose(J.sum(0), q[0, 0]) and torch.allclose(J.sum(1), q[0, 0])
    assert (J - torch.diag(torch.diag(J)) > 0).sum() == 12      # every distinct pair possible
    N = 200_000
    idx = carms_mod.antithetic_categorical(q.expand(N, 1, 4).contiguous(), 3, "dirichlet")
    counts = torch.zeros(4, 4, dtype=DTYPE)
    counts.index_put_((idx[0, :, 0], idx[1, :, 0]), torch.ones(N, dtype=DTYPE), accumulate=True)
    freq = counts / N
    assert ((freq - J).abs() < 5 * (J * (1 - J) / N).sqrt() + 1e-9).all()
    assert torch.allclose(freq.sum(1), q[0, 0], atol=5 * (0.25 / N) ** 0.5)


# -- the authors' formulas on the same samples --------------------------------

def _recorded(name, opts, logits):
    seen = []
    w = torch.randn(logits.shape[1:], dtype=DTYPE)

    def f(z):
        seen.append(z)
        return ((z * w).sum((-1, -2)) - 0.3) ** 2

    est = estimators.build(name, **opts)
    out = est(logits, f)
    (g,) = torch.autograd.grad(-out.loss * logits.shape[0], logits)
    z = seen[0]
    return z, f(z), g


def test_arms_matches_the_authors_formula():
    """alekdimi/arms networks.py, grad_type 'arms': layer_grad = mean_s (f_s -
    mean f) (b_s - p) n / (n - 1) * p (1 - p) / (p - joint), joint the
    Dirichlet pair's P(b = b' = 1), by their piecewise form for p < 1/2 and
    p >= 1/2 (written out again here, not shared with ours)."""
    torch.manual_seed(1)
    n = 4
    a = 2.5 * torch.randn(5, 6, dtype=DTYPE)
    logits = torch.stack([torch.zeros_like(a), a], -1).requires_grad_()
    z, fz, g = _recorded("arms", dict(n_samples=n), logits)
    b, p = z[..., 1], torch.sigmoid(a)
    bivariate = lambda x: (2 * x ** (1 / (n - 1)) - 1).clamp_min(0) ** (n - 1)
    joint = torch.where(p < 0.5, bivariate(p), 2 * p - 1 + bivariate(1 - p))
    theirs = ((fz - fz.mean(0)).unsqueeze(-1) * (b - p) * n / (n - 1)
              * (p * (1 - p) / (p - joint))).mean(0)                         # (B, D) for a
    ours = g[..., 1] - g[..., 0]                     # d/da, as l_1 = a, l_0 = 0 minus pathwise 0
    assert torch.allclose(g[..., 0], -g[..., 1])
    assert torch.allclose(ours / 2, theirs, rtol=1e-10, atol=1e-12)


def test_carms_matches_the_authors_matrix_form():
    """alekdimi/carms vae.py matrix_grad: R = (diag(rowsum) - offdiag) / n over
    the pairs' ratios, grads = (z - p) (R f) n / (n - 1), mean over samples
    (their ratio clipped to [0.01, 10]; here unclipped, our pair joint)."""
    torch.manual_seed(2)
    n, K = 4, 3
    logits = torch.randn(5, 2, K, dtype=DTYPE, requires_grad=True)
    z, fz, g = _recorded("carms", dict(n_samples=n), logits)
    p = logits.detach().softmax(-1)
    ratio = p.unsqueeze(-1) * p.unsqueeze(-2) / carms_mod.pair_joint(p, n, "dirichlet")
    zz = z.permute(1, 2, 0, 3)                                               # (B, D, n, K)
    pair = zz @ ratio @ zz.transpose(-1, -2)                                 # (B, D, n, n)
    off = pair * (1 - torch.eye(n, dtype=DTYPE))
    R = (torch.diag_embed(off.sum(-1)) - off) / n
    final = (R @ fz.T[:, None, :, None]).squeeze(-1).permute(2, 0, 1)        # (n, B, D)
    theirs = ((z - p) * final.unsqueeze(-1) * n / (n - 1)).mean(0)          # (B, D, K)
    assert torch.allclose(g, theirs, rtol=1e-10, atol=1e-12)


def test_categorical_disarm_matches_the_authors_iw_formula():
    """google-research disarm/categorical networks.py, DisARM with
    importance_weighting: stick-breaking logits of the ascending-sorted logits,
    weight vector [sigma(|a_0|), cumprod(f)[:-1] sigma(|a_1:|), cumprod(f)[-1]]
    with f_r = (1 - sigma_r)^2 / (1 - 2 sigma_r) (0 where a_r >= -1e-5),
    signal 1/2 w[min(z, z~)] (f(z) - f(z~)), 0 where z = z~, times the
    gradient of log q(z) - log q(z~) (written out again here)."""
    torch.manual_seed(3)
    P, K = 3, 5
    logits = (2 * torch.randn(4, 3, K, dtype=DTYPE)).requires_grad_()
    z, fz, g = _recorded("disarm", dict(n_pairs=P), logits)
    l = logits.detach()
    order = l.argsort(-1)
    ls = l.gather(-1, order)
    a = torch.stack([ls[..., r] - ls[..., r + 1:].logsumexp(-1) for r in range(K - 1)], -1)
    s = torch.sigmoid(a)
    f = torch.where(a >= -1e-5, torch.zeros_like(a), (1 - s) ** 2 / (1 - 2 * s)).cumprod(-1)
    w = torch.cat([torch.sigmoid(a.abs())[..., :1], f[..., :-1] * torch.sigmoid(a.abs())[..., 1:],
                   f[..., -1:]], -1)                                         # (B, D, K) by rank
    cat = z.argmax(-1)                                                       # (2P, B, D)
    rank = order.argsort(-1).expand(2 * P, *order.shape).gather(-1, cat.unsqueeze(-1)).squeeze(-1)
    r1, r2 = rank.split(P)
    f1, f2 = fz.split(P)
    wm = w.expand(P, *w.shape).gather(-1, torch.minimum(r1, r2).unsqueeze(-1)).squeeze(-1)
    signal = torch.where(r1 == r2, torch.zeros_like(wm), 0.5 * wm * (f1 - f2).unsqueeze(-1))
    e1, e2 = z.split(P)
    theirs = (signal.unsqueeze(-1) * (e1 - e2)).mean(0)                      # d(log q1 - log q2)/dl
    assert torch.allclose(g, theirs, rtol=1e-10, atol=1e-12)


# -- one call of f, dtypes, devices, errors --------------------------------------

@pytest.mark.parametrize("name,opts,K", [("arms", dict(n_samples=3), 2),
                                         ("carms", dict(n_samples=5), 4),
                                         ("carms", dict(copula="gaussian"), 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_call_of_f_and_dtype_follow_logits(name, opts, K, dtype):
    torch.manual_seed(0)
    logits = torch.randn(4, 3, K, dtype=dtype, requires_grad=True)
    w = torch.randn(3, K, dtype=dtype, requires_grad=True)
    seen = []

    def f(z):
        seen.append(z)
        return ((z * w).sum((-1, -2)) - 1) ** 2 + (z * logits.log_softmax(-1)).sum((-1, -2))

    est = estimators.build(name, **opts)
    out = est(logits, f)
    assert len(seen) == 1 and seen[0].shape == (est.f_evaluations(3, K), 4, 3, K)
    assert seen[0].dtype == dtype and set(seen[0].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(seen[0].sum(-1), torch.ones_like(seen[0].sum(-1)))
    assert out.loss.dtype == dtype and torch.allclose(out.loss, -out.value.mean())
    out.loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(w.grad).all()


def _f(z):
    return z.sum((-1, -2))


@pytest.mark.parametrize("call,match", [
    (lambda: estimators.build("arms", n_samples=1), r"n_samples=1 .*integer >= 2"),
    (lambda: estimators.build("carms", n_samples=1), r"n_samples=1 .*integer >= 2"),
    (lambda: estimators.build("arms", copula="clayton"), r"copula='clayton'.*dirichlet.*gaussian"),
    (lambda: estimators.build("carms", copula="t"), r"copula='t'.*dirichlet.*gaussian"),
    (lambda: estimators.build("arms")(torch.zeros(2, 3, 3), _f),
     r"latent.K=3 .*Bernoulli.*latent.K=2.*carms"),
    (lambda: estimators.build("arms").check_latent(4, 5), r"latent.K=5 .*carms"),
])
def test_bad_inputs_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()
