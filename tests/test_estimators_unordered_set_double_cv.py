"""The unordered set estimator and double control variates: unbiased against
the enumerated gradient (z-test, float64, fixed seed, f depending on the
logits pathwise and on w), broken variants caught by the same test; the
unordered set estimator's expectation also summed exactly over every set,
its sampler's set frequencies against the set probabilities.

Axis legend: S points, R replicas, B batch, D latent variables, K categories.
"""
import itertools
from unittest import mock

import pytest
import torch

import estimators
import estimators.double_cv as dcv_mod
import estimators.unordered_set as us_mod
from tests.problems import DTYPE, Z_MAX, Problem, check_unbiased, max_abs_z, points_seen

R = 20_000

CORRECT = [
    ("unordered_set", dict(n_samples=2), dict(B=3, D=2, K=3)),
    ("unordered_set", dict(n_samples=4), dict(B=3, D=2, K=3)),
    ("unordered_set", dict(n_samples=3), dict(B=3, D=3, K=2)),
    ("double_cv", dict(n_samples=2), dict(B=3, D=2, K=3)),
    ("double_cv", dict(n_samples=4), dict(B=3, D=2, K=3)),
    ("double_cv", dict(n_samples=3), dict(B=3, D=3, K=2)),
    ("double_cv", dict(n_samples=3, slope="mean"), dict(B=3, D=2, K=3)),
    ("double_cv", dict(n_samples=3, slope="mean"), dict(B=3, D=3, K=2)),
    ("double_cv", dict(n_samples=3, alpha=-2.5), dict(B=3, D=2, K=3)),
]


@pytest.mark.parametrize("name,opts,shape", CORRECT,
                         ids=[f"{n}-{o}-K{s['K']}" for n, o, s in CORRECT])
def test_unbiased_against_exact(name, opts, shape):
    check_unbiased(name, opts, shape)


# -- the unordered set estimator, exactly --------------------------------------

def set_probability(p, members):
    """P(S) by brute force: every order of S drawn without replacement."""
    total = 0.0
    for order in itertools.permutations(members):
        prob, left = 1.0, 1.0
        for s in order:
            prob, left = prob * p[s] / left, left - p[s]
        total += prob
    return total


def test_expectation_over_every_set_is_the_exact_gradient():
    """Sum over all C(9, 3) sets of 3 joint outcomes of P(S) x the estimate
    given S (P by brute-force orderings, independent of the estimator's own
    ratios): equal to the enumerated gradient to rounding."""
    problem = Problem.make(B=1, D=2, K=3, seed=7)
    outcomes = list(itertools.product(range(3), repeat=2))             # 9 joint outcomes
    p = problem.logits.log_softmax(-1)[0]                              # (D, K)
    prob = [float(sum(p[d, c] for d, c in enumerate(o)).exp()) for o in outcomes]
    est = estimators.build("unordered_set", n_samples=3).to(DTYPE)
    total = 0.0
    for members in itertools.combinations(range(9), 3):
        cats = torch.tensor([outcomes[m] for m in members]).unsqueeze(1)   # (k, B, D)
        with mock.patch.object(us_mod, "sample_without_replacement", lambda lp, k: cats):
            total = total + set_probability(prob, members) * problem.estimates(est, 1)[0]
    assert torch.allclose(total, problem.exact(), rtol=1e-9, atol=1e-10)


def test_ratios_match_brute_force():
    """R(S, s) and R^{D\\s}(S, s') against sums over orderings, k = 4."""
    torch.manual_seed(0)
    p = torch.rand(12, dtype=DTYPE).softmax(0)
    members = [0, 3, 5, 9]
    log_R1, log_R2 = us_mod.leave_out_ratios(p[members].log().unsqueeze(0))

    def P(excluded, subset):                    # P^{D\excluded}(subset)
        q = p.clone()
        q[list(excluded)] = 0
        return set_probability((q / q.sum()).tolist(), subset)
    for a, s in enumerate(members):
        rest = [m for m in members if m != s]
        assert torch.isclose(log_R1[0, a].exp(), torch.tensor(P([s], rest) / P([], members), dtype=DTYPE))
        for b, t in enumerate(members):
            want = 1.0 if s == t else P([s, t], [m for m in rest if m != t]) / P([s], rest)
            assert torch.isclose(log_R2[0, a, b].exp(), torch.tensor(want, dtype=DTYPE))


def test_sampler_draws_sets_with_their_probabilities():
    """Frequencies of the 6 sets of 2 among 4 joint outcomes (D = 2, K = 2)
    over 20,000 draws: binomial z-scores below Z_MAX; the k outcomes of a
    draw are always distinct."""
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 2, dtype=DTYPE)
    logp = logits.log_softmax(-1)
    cats = us_mod.sample_without_replacement(logp.expand(R, 2, 2), 2)     # (2, R, D)
    code = cats[..., 0] * 2 + cats[..., 1]                                # (2, R) outcome index
    assert (code[0] != code[1]).all()
    prob = [float(logp[0, 0, o // 2] + logp[0, 1, o % 2]) for o in range(4)]
    prob = [torch.tensor(x).exp().item() for x in prob]
    for pair in itertools.combinations(range(4), 2):
        hits = ((code.min(0).values == pair[0]) & (code.max(0).values == pair[1])).double().mean()
        want = set_probability(prob, pair)
        assert abs(hits - want) / (want * (1 - want) / R) ** 0.5 < Z_MAX


# -- broken variants: the same test catches them ----------------------------

def per_variable_without_replacement(logp, k):
    """k categories without replacement in each variable separately, paired
    up: distinct joint points, but not a without-replacement draw of the joint."""
    g = logp + us_mod.gumbel((*logp.shape,), logp)                        # (B, D, K)
    return g.topk(k, -1).indices.permute(2, 0, 1)                         # (k, B, D)


class UnorderedSetPerVariable(us_mod.UnorderedSet):
    def estimate(self, logits, f, context):
        with mock.patch.object(us_mod, "sample_without_replacement", per_variable_without_replacement):
            return super().estimate(logits, f, context)


class UnorderedSetWithoutRatios(us_mod.UnorderedSet):
    """Weights p(s) without R(S, s): the set probability ignored."""
    def estimate(self, logits, f, context):
        zero = lambda lp: (torch.zeros_like(lp), torch.zeros(*lp.shape, lp.shape[-1], dtype=lp.dtype))  # noqa: E731
        with mock.patch.object(us_mod, "leave_out_ratios", zero):
            return super().estimate(logits, f, context)


class DoubleCVWithoutCorrection(dcv_mod.DoubleCV):
    """Subtracts the Taylor control variate but not its expectation."""
    def estimate(self, logits, f, context):
        with mock.patch.object(dcv_mod, "softmax", lambda x: x.softmax(-1).detach()):
            return super().estimate(logits, f, context)


class DoubleCVOwnSampleInBaseline(dcv_mod.DoubleCV):
    """A baseline that averages all n draws, the draw's own included."""
    def estimate(self, logits, f, context):
        own = lambda v: v.mean(0, keepdim=True).expand_as(v)          # noqa: E731
        with mock.patch.object(dcv_mod, "leave_one_out_mean", own):
            return super().estimate(logits, f, context)


BROKEN = [(UnorderedSetPerVariable, dict(B=3, D=2, K=3)),
          (UnorderedSetWithoutRatios, dict(B=3, D=2, K=3)),
          (DoubleCVWithoutCorrection, dict(B=3, D=2, K=3)),
          (DoubleCVOwnSampleInBaseline, dict(B=3, D=3, K=2))]


@pytest.mark.parametrize("broken,shape", BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_broken_variants_fail_the_same_test(broken, shape):
    z = max_abs_z(broken(n_samples=3), shape)
    print(f"\n{broken.__name__}: max |z| = {z:.2f}")
    assert z > 2 * Z_MAX


# -- cost, dtypes, options, configs ---------------------------------------------

@pytest.mark.parametrize("name,opts,points", [("unordered_set", {}, 3), ("double_cv", {}, 3),
                                              ("double_cv", dict(slope="mean"), 4)])
def test_f_called_once(name, opts, points):
    est = estimators.build(name, n_samples=3, **opts)
    calls, _ = points_seen(est)
    assert len(calls) == 1 and calls[0].shape == (points, 2, 4, 3)
    assert est.f_evaluations(4, 3) == points
    if name == "unordered_set":                  # distinct joint outcomes
        flat = calls[0].argmax(-1).permute(1, 0, 2)                      # (B, k, D)
        assert all(len({tuple(r.tolist()) for r in b}) == 3 for b in flat)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["unordered_set", "double_cv"])
def test_dtypes_and_extreme_logits(name, dtype):
    torch.manual_seed(3)
    est = estimators.build(name, n_samples=3)
    for scale, D in ((1.0, 2), (30.0, 2), (1.0, 60)):   # 60 variables: joint log q ~ -60
        logits = (scale * torch.randn(3, D, 4, dtype=dtype)).requires_grad_()
        out = est(logits, lambda z: -(z * z.flip(-1)).sum((-1, -2)))
        (g,) = torch.autograd.grad(out.loss, logits)
        assert g.dtype == dtype and out.value.dtype == dtype
        assert torch.isfinite(g).all() and torch.isfinite(out.value).all()


def test_learned_alpha_lowers_variance_and_keeps_the_mean():
    """alpha trained by aux_loss alone (100 Adam steps on fresh draws) moves
    from its start, lowers the variance of the logits' gradient below plain
    leave-one-out's, and the trained estimator still passes the z-test."""
    torch.manual_seed(5)
    problem = Problem.make(B=3, D=2, K=3, seed=5)
    est = estimators.build("double_cv", n_samples=3, alpha=0.0).to(DTYPE)
    logits, _, f = problem.replicate(64)
    opt = torch.optim.Adam(est.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        est(logits.reshape(-1, 2, 3), f).aux_loss.backward()
        opt.step()
    assert abs(float(est.alpha.detach())) > 0.1
    n_logits = problem.logits.numel()
    var = lambda e: problem.estimates(e, 4000)[:, :n_logits].var(0).sum()   # noqa: E731
    torch.manual_seed(6)
    trained = var(est)
    torch.manual_seed(6)
    loo = var(estimators.build("reinforce", baseline="loo", n_samples=3).to(DTYPE))
    print(f"\nalpha {float(est.alpha.detach()):.3f}: logits variance {float(trained):.3f}, "
          f"leave-one-out {float(loo):.3f}")
    assert trained < loo
    assert max_abs_z(est, dict(B=3, D=2, K=3), seed=5) < Z_MAX


BAD = [("unordered_set", dict(n_samples=1), "n_samples=1"),
       ("unordered_set", dict(n_samples=9), "n_samples=9"),
       ("double_cv", dict(n_samples=1), "n_samples=1"),
       ("double_cv", dict(slope="mode"), "slope='mode'"),
       ("double_cv", dict(alpha=float("nan")), "alpha=nan"),
       ("double_cv", dict(learn_alpha="yes"), "learn_alpha='yes'")]


@pytest.mark.parametrize("name,opts,match", BAD, ids=[f"{n}-{o}" for n, o, _ in BAD])
def test_bad_options_name_the_key(name, opts, match):
    with pytest.raises(ValueError, match=match):
        estimators.build(name, **opts)


def test_unordered_set_refuses_more_samples_than_outcomes():
    est = estimators.build("unordered_set", n_samples=5)
    with pytest.raises(ValueError, match="latent.D=2, latent.K=2"):
        est.check_latent(2, 2)
    est.check_latent(3, 2)


def authors_double_cv_bernoulli(b, f_b, grad_b, theta, alpha):
    """The authors' Bernoulli double_cv gradient in the logit eta (Titsias &
    Shi's grad_type='double_cv', general-n branch), re-read: f_b (n, B),
    b and grad_b = d f / d b (n, B, D), theta = sigmoid(eta) (B, D)."""
    n = b.shape[0]
    loo = lambda v: (v.sum(0) - v) / (n - 1)                       # noqa: E731
    cv = alpha * ((b - theta) * loo(grad_b)).sum(-1)                # (n, B)
    loo_vr = loo(f_b + cv)
    return (((f_b - loo_vr + cv)[..., None] * (b - theta)).mean(0)
            - alpha * grad_b.mean(0) * theta * (1 - theta))


def test_double_cv_matches_the_authors_bernoulli_formula_on_the_same_samples():
    """K = 2, f without a pathwise path to the logits: the gradient in
    a = l_1 - l_0 equals the authors' formula at the same draws (their alpha
    scales the control variate with the opposite sign)."""
    torch.manual_seed(0)
    B, D, n, alpha = 5, 4, 3, 0.75      # exact in float32, where the parameter is made
    logits = torch.randn(B, D, 2, dtype=DTYPE, requires_grad=True)
    w, t = torch.randn(D, dtype=DTYPE), torch.randn(B, dtype=DTYPE)
    seen = []

    def f(z):                                                       # (n, B, D, 2) -> (n, B)
        seen.append(z)
        return -((z[..., 1] * w).sum(-1) - t) ** 2
    est = estimators.build("double_cv", n_samples=n, alpha=-alpha, learn_alpha=False).to(DTYPE)
    (g,) = torch.autograd.grad(est(logits, f).loss, logits)
    b = seen[0][..., 1].detach().requires_grad_()
    f_b = f(b.unsqueeze(-1) * torch.tensor([-1.0, 1.0], dtype=DTYPE) + torch.tensor([1.0, 0.0], dtype=DTYPE))
    (grad_b,) = torch.autograd.grad(f_b.sum(), b)
    theta = torch.sigmoid(logits[..., 1] - logits[..., 0]).detach()
    want = authors_double_cv_bernoulli(b.detach(), f_b.detach(), grad_b, theta, alpha)
    assert torch.allclose(-B * g[..., 1], want, rtol=1e-10, atol=1e-12)
    assert torch.allclose(-B * g[..., 0], -want, rtol=1e-10, atol=1e-12)
