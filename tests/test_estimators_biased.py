"""The biased straight-through family (st, reinmax, gumbel_rao) and the Gumbel
relaxations: their bias is measured against the exact gradient (float64, fixed
seeds), the backward formulas are pinned down, Gumbel-Rao's variance is
compared with straight-through Gumbel-softmax, ReinMax's bias with ST's."""
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

import estimators
from estimators.base import Estimate
from estimators.gumbel_rao import GumbelRao
from estimators.exact import all_configs
from estimators.sampling import conditional_perturbed, log_prob, relaxed, sample_one_hot
from tests.problems import DTYPE, Z_MAX, Problem, points_seen, z_scores

R = 20_000
NEW = ["st", "reinmax", "gumbel_rao"]


class Quartic(Problem):
    """f4 = -f^2 / 4 for the quadratic f of `Problem`: quartic in z, so Heun's rule
    (ReinMax at tau = 1) is no longer exact on it."""

    def replicate(self, R: int):
        logits, w, f = super().replicate(R)
        return logits, w, lambda z: -f(z) ** 2 / 4                # (S, R*B)


def quadratic():
    return Problem.make(B=3, D=2, K=3)


def quartic():
    return Quartic(*vars(quadratic()).values())


def draws(name, problem, seed=0, n=R, **opts):
    torch.manual_seed(seed)
    return problem.estimates(estimators.build(name, **opts).to(DTYPE), n)


def bias(d, exact):
    """Squared bias with the noise floor removed, its standard error, and the
    relative bias sqrt(b2) / |exact| (0 where b2 <= 0).

    E|mean - exact|^2 = |bias|^2 + tr(Cov)/n, so b2 = |mean - exact|^2 - tr(Cov)/n
    is unbiased for |bias|^2, with Var(b2) ~ 4 bias' Cov bias / n + 2 tr(Cov^2) / n^2
    (Gaussian mean): b2 > 5 se(b2) is a bias that Monte Carlo error does not explain
    (false alarm ~3e-7 for an unbiased estimator)."""
    n = d.shape[0]
    diff = d.mean(0) - exact
    cov = torch.cov(d.T)
    b2 = diff @ diff - cov.trace() / n
    se = (4 * diff @ cov @ diff / n + 2 * (cov @ cov).trace() / n ** 2).sqrt()
    rel = b2.clamp_min(0).sqrt() / exact.norm()
    cos = torch.nn.functional.cosine_similarity(d.mean(0), exact, 0)
    return float(b2), float(se), float(rel), float(cos)


def rel_se(b2, se, exact):
    """Delta-method standard error of sqrt(b2) / |exact|."""
    return se / (2 * max(b2, 1e-300) ** 0.5 * float(exact.norm()))


# -- every biased estimator's bias is real ------------------------------------

BIASED = [
    ("st", dict()),
    ("reinmax", dict(tau=1.5)),        # the authors' MNIST-VAE temperature; tau=1 is exact here
    ("gumbel_rao", dict(tau=1.0, n_mc=10)),
    ("gumbel", dict(tau=1.0, hard=False)),
    ("gumbel", dict(tau=1.0, hard=True)),
    ("gumbel", dict(tau=0.5, hard=True)),
    ("gst", dict()),
    ("gst", dict(gap="p")),
    ("decoupled_st", dict(tau_forward=1.0, tau_backward=2.0)),
    ("decoupled_st", dict(tau_forward=2.0, tau_backward=1.0)),
]


@pytest.mark.parametrize("name,opts", BIASED, ids=[f"{n}-{o}" for n, o in BIASED])
def test_bias_is_measurably_non_zero(name, opts):
    problem = quadratic()
    exact = problem.exact()
    b2, se, rel, cos = bias(draws(name, problem, **opts), exact)
    print(f"\n{name} {opts}: relative bias {rel:.4f} +- {rel_se(b2, se, exact):.4f}, "
          f"cosine {cos:.4f}")
    assert b2 > 5 * se
    # biased, yet pointing the right way: measured cosines are >= 0.93 on this problem
    assert cos > 0.9


def test_the_bias_test_passes_an_unbiased_estimator():
    """The same statistic on REINFORCE stays within 5 standard errors of 0."""
    b2, se, _, _ = bias(draws("reinforce", quadratic(), baseline="loo", n_samples=3),
                        quadratic().exact())
    assert abs(b2) < 5 * se


# -- backward formulas, against the closed forms -------------------------------

def linear_grad(est, logits, a):
    """d/dlogits of f(z) = <z, a> for one draw, and the one-hot sample f saw."""
    seen = []

    def f(z):
        seen.append(z.detach())
        return (z * a).sum((-1, -2))
    (g,) = torch.autograd.grad(est(logits, f).loss, logits)
    # the loss is minus the batch mean: scale by -B for per-example gradients
    return -logits.shape[0] * g, seen[0][0]                  # (B, D, K), (B, D, K)


def jac(p, v):
    """(diag p - p p^T) v along the last axis."""
    return p * v - p * (p * v).sum(-1, keepdim=True)


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.7])
def test_st_and_reinmax_backward_formulas(tau):
    torch.manual_seed(5)
    logits = torch.randn(4, 3, 5, dtype=DTYPE, requires_grad=True)
    a = torch.randn(4, 3, 5, dtype=DTYPE)
    p0, pt = logits.detach().softmax(-1), (logits.detach() / tau).softmax(-1)
    g, b = linear_grad(estimators.build("st", tau=tau), logits, a)
    assert torch.allclose(g, jac(pt, a) / tau)               # ST: Jacobian of softmax(logits/tau)
    g, b = linear_grad(estimators.build("reinmax", tau=tau), logits, a)
    pi1 = (b + pt) / 2                                       # no 1/tau: Jacobian taken *at* pi1
    assert torch.allclose(g, 2 * jac(pi1, a) - jac(p0, a) / 2)


def enumerated_mean(name, problem, **opts):
    """E_b[estimate] by weighting every configuration b with q(b) (st, reinmax:
    the estimate is a function of b alone)."""
    logits, w, f = problem.replicate(1)
    B, D, K = problem.logits.shape
    configs = all_configs(D, K, logits).unsqueeze(1).expand(-1, B, D, K)   # (N, B, D, K)
    N = K ** D
    q = log_prob(logits.reshape(B, D, K), configs).exp().detach()          # (N, B)
    with mock.patch(f"estimators.{name}.sample_one_hot", lambda lg, S: configs):
        est = estimators.build(name, n_samples=N, **opts).to(logits.dtype)
        out = est(logits.reshape(B, D, K), lambda z: N * q * f(z))
    g = torch.autograd.grad(out.loss, [logits, w])
    return -torch.cat([g[0].reshape(-1), g[1].reshape(-1)])


@pytest.mark.parametrize("name,tau", [("st", 1.0), ("st", 1.5), ("reinmax", 1.0), ("reinmax", 1.5)])
def test_samples_come_from_q_at_every_temperature(name, tau):
    """The Monte Carlo mean matches the enumerated expectation of the estimator:
    b is drawn from softmax(logits), not softmax(logits / tau)."""
    problem = quadratic()
    assert z_scores(draws(name, problem, tau=tau), enumerated_mean(name, problem, tau=tau)
                    ).abs().max() < Z_MAX


# -- ReinMax against ST ---------------------------------------------------------

def test_reinmax_is_exact_for_quadratic_f_at_tau_1():
    """Heun's (trapezoidal) rule integrates a linear gradient exactly, and this
    problem's f is quadratic in z: ReinMax at tau = 1 is unbiased here, ST is not."""
    problem = quadratic()
    exact = problem.exact()
    assert z_scores(draws("reinmax", problem, tau=1.0), exact).abs().max() < Z_MAX
    assert z_scores(draws("st", problem, tau=1.0), exact).abs().max() > 2 * Z_MAX


@pytest.mark.parametrize("problem_fn,taus", [
    (quadratic, [(1.0, 1.0), (1.3, 1.3), (1.5, 1.5), (2.0, 2.0), (1.5, 1.3)]),
    (quartic, [(1.0, 1.0)]),
], ids=["quadratic", "quartic"])
def test_reinmax_bias_below_st(problem_fn, taus):
    """The paper's claim (second- vs first-order accuracy) is about tau = 1. On the
    quadratic problem ReinMax is also less biased at every tau >= 1 tried,
    including the tuned pair (ReinMax 1.5, ST 1.3). On a quartic f only tau = 1 is
    asserted: above it the gap shrinks, and at the tuned pair the two are level
    (0.135 vs 0.133 here; with f = -(<z, w> - t)^4 / 4 instead, ReinMax is the more
    biased from tau = 1.5 on). Printed, not asserted."""
    problem = problem_fn()
    exact = problem.exact()
    for tau_rm, tau_st in taus:
        b2_rm, se_rm, rel_rm, _ = bias(draws("reinmax", problem, tau=tau_rm), exact)
        b2_st, se_st, rel_st, _ = bias(draws("st", problem, seed=1, tau=tau_st), exact)
        print(f"\n{problem_fn.__name__}: reinmax(tau={tau_rm}) {rel_rm:.4f}, "
              f"st(tau={tau_st}) {rel_st:.4f}")
        # independent draws: the difference of squared biases, 4 standard errors
        assert b2_rm + 4 * (se_rm ** 2 + se_st ** 2) ** 0.5 < b2_st
    if problem_fn is quartic:
        for tau_rm, tau_st in [(1.3, 1.3), (1.5, 1.5), (1.5, 1.3)]:
            rm = bias(draws("reinmax", problem, tau=tau_rm), exact)
            st = bias(draws("st", problem, seed=1, tau=tau_st), exact)
            print(f"quartic: reinmax(tau={tau_rm}) {rm[2]:.4f} +- {rel_se(*rm[:2], exact):.4f}, "
                  f"st(tau={tau_st}) {st[2]:.4f} +- {rel_se(*st[:2], exact):.4f}")


# -- Gumbel-Rao against straight-through Gumbel-softmax -------------------------

def logit_trace_variance(d, P_logits):
    """Trace of the covariance of the logits' gradient and its standard error
    (the per-draw squared deviations are iid, so their mean's se applies)."""
    x = d[:, :P_logits]
    dev2 = ((x - x.mean(0)) ** 2).sum(1)                      # (R,)
    return float(dev2.mean()), float(dev2.std() / len(dev2) ** 0.5)


class GumbelRaoThroughSampler(GumbelRao):
    """Gumbel-Rao that differentiates through the conditional sampler (REBAR-style)
    instead of holding the noise fixed: a different, wrong, estimator."""
    name = "broken_gumbel_rao"

    def estimate(self, logits, f, context):
        b = sample_one_hot(logits, self.n_samples)
        zt = conditional_perturbed(logits, b.expand(self.n_mc, *b.shape))
        s = relaxed(zt, self.tau).mean(0)
        f_z = f(b + (s - s.detach()))
        return Estimate(loss=-f_z.mean(), value=f_z.detach().mean(0))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_gumbel_rao_same_mean_lower_variance(tau):
    problem = quadratic()
    P_logits = problem.logits.numel()
    gr = draws("gumbel_rao", problem, tau=tau, n_mc=10)
    st = draws("gumbel", problem, seed=1, tau=tau, hard=True)
    # Rao-Blackwellisation keeps the mean: two-sample z-test on every coordinate
    diff = (gr.mean(0) - st.mean(0)) / (gr.var(0) / R + st.var(0) / R).sqrt().clamp_min(1e-12)
    assert diff.abs().max() < Z_MAX
    v_gr, se_gr = logit_trace_variance(gr, P_logits)
    v_st, se_st = logit_trace_variance(st, P_logits)
    print(f"\ntau={tau}: var gumbel_rao {v_gr:.4f} / gumbel hard {v_st:.4f} = {v_gr / v_st:.3f}")
    assert v_gr + 4 * (se_gr ** 2 + se_st ** 2) ** 0.5 < v_st
    # ... and the same-mean test catches a Gumbel-Rao that differentiates the sampler
    torch.manual_seed(2)
    broken = problem.estimates(GumbelRaoThroughSampler(tau=tau).to(DTYPE), R)
    diff = (broken.mean(0) - st.mean(0)) / (broken.var(0) / R + st.var(0) / R).sqrt()
    assert diff.abs().max() > 2 * Z_MAX


# -- cost, dtypes, options, configs ---------------------------------------------

@pytest.mark.parametrize("name", NEW + ["gst", "decoupled_st"])
def test_f_called_once_on_the_hard_samples(name):
    est = estimators.build(name, n_samples=3)
    calls, logits = points_seen(est)
    assert torch.isfinite(logits.grad).all()
    assert len(calls) == 1 and calls[0].shape == (3, 2, 4, 3) and est.f_evaluations(4, 3) == 3
    z = calls[0]
    assert torch.equal(z.sum(-1), torch.ones(3, 2, 4)) and torch.equal(z, z.round())  # one-hot


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NEW)
def test_dtypes_and_extreme_logits(name, dtype):
    torch.manual_seed(3)
    est = estimators.build(name, tau=0.5, n_samples=2)
    for scale in (1.0, 40.0):      # 40: softmax(logits / tau) underflows to 0 in float32
        logits = (scale * torch.randn(3, 2, 4, dtype=dtype)).requires_grad_()
        out = est(logits, lambda z: -(z * z.flip(-1)).sum((-1, -2)))
        (g,) = torch.autograd.grad(out.loss, logits)
        assert g.dtype == dtype and out.value.dtype == dtype
        assert torch.isfinite(g).all() and torch.isfinite(out.value).all()


@pytest.mark.parametrize("name", ["st", "reinmax"])
def test_float32_matches_float64(name):
    """The enumerated expectation (no sampling noise) agrees across dtypes."""
    p64 = Problem.make(B=2, D=2, K=3, seed=4)
    p32 = Problem(p64.logits.float(), p64.w.float(), p64.t.float(), p64.c)
    g64, g32 = enumerated_mean(name, p64, tau=1.3), enumerated_mean(name, p32, tau=1.3)
    assert g32.dtype == torch.float32
    assert torch.allclose(g32.double(), g64, rtol=1e-5, atol=1e-6)


BAD = [(n, {k: v}) for n in NEW for k, v in [("tau", 0), ("tau", -1), ("n_samples", 0)]] + \
      [("gumbel_rao", dict(n_mc=0)), ("gumbel_rao", dict(n_mc=2.5)), ("st", dict(tau="1"))]


@pytest.mark.parametrize("name,opts", BAD, ids=[f"{n}-{o}" for n, o in BAD])
def test_bad_options_name_the_key_and_the_valid_values(name, opts):
    (key, value), = opts.items()
    with pytest.raises(ValueError) as err:
        estimators.build(name, **opts)
    msg = str(err.value)
    assert f"{key}={value!r}" in msg
    assert ("> 0" if key == "tau" else ">= 1") in msg


@pytest.mark.parametrize("name", NEW)
def test_traits_and_config(name):
    cls = estimators.get(name)
    assert not cls.unbiased and cls.temperature and cls.latent == "categorical"
    assert isinstance(estimators.build(name).tau, float)
    with open(Path(__file__).resolve().parents[1] / "conf" / "estimator" / f"{name}.yaml") as fh:
        conf = yaml.safe_load(fh)
    assert conf.pop("name") == name
    assert conf == estimators.options(name)
