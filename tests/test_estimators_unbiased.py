"""Each unbiased estimator's mean gradient agrees with the exact gradient
(z-test, float64, fixed seed); broken variants fail the same test; the
relaxations' bias is measured."""
import itertools
import math

import pytest
import torch

import estimators
from estimators.base import Estimate, Estimator
from estimators.sampling import log_prob, sample_one_hot
from tests.problems import DTYPE, Z_MAX, Problem, z_scores

R = 20_000

UNBIASED = [
    ("reinforce", dict(baseline="none", n_samples=1)),
    ("reinforce", dict(baseline="ema", n_samples=2)),
    ("reinforce", dict(baseline="learned", n_samples=1)),
    ("reinforce", dict(baseline="loo", n_samples=3)),
    ("rebar", dict()),
    ("rebar", dict(n_samples=2, tau=0.2, eta=0.7)),
    ("relax", dict()),
    ("relax", dict(use_f=True)),
    # the papers' binary-VAE variant: eta (f(s(z)) + r), r on the perturbed logits
    ("relax", dict(use_f=True, eta_scales_net=True, net_input="perturbed", layers=2,
                   activation="leaky_relu", hidden=16, tau=0.1)),
]


def test_relax_on_the_logistic_sample_is_unbiased_for_bernoullis():
    """K = 2: the network sees z_1 - z_0 = a + logit(u), one number per variable
    (DisARM's RELAX baseline); a broken variant that shows it z in place of z~
    (the same network input for both, so c(z~) is not c at z~) is caught."""
    problem = Problem.make(B=3, D=2, K=2, seed=5)
    opts = dict(use_f=True, eta_scales_net=True, net_input="perturbed", hidden=16,
                activation="leaky_relu", tau=0.1)
    est = estimators.build("relax", **opts).to(DTYPE)
    assert check_unbiased(est, problem) < Z_MAX
    broken = estimators.build("relax", **opts).to(DTYPE)
    broken.net_inputs = lambda z, zt, y: torch.cat([z[..., 1] - z[..., 0]] * 2)
    assert check_unbiased(broken, problem) > 2 * Z_MAX


def check_unbiased(est, problem, seed=0):
    torch.manual_seed(seed)
    return z_scores(problem.estimates(est, R), problem.exact()).abs().max().item()


@pytest.mark.parametrize("name,opts", UNBIASED, ids=[f"{n}-{o}" for n, o in UNBIASED])
def test_unbiased_against_exact(name, opts):
    est = estimators.build(name, **opts).to(DTYPE)
    problem = Problem.make(B=3, D=2, K=3)
    if opts.get("baseline") == "ema":
        est(problem.logits, problem.replicate(1)[2])   # a non-zero moving average first
    assert check_unbiased(est, problem) < Z_MAX


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_unbiased_after_training_the_control_variate(name):
    """Learned tau, eta, phi change the variance, never the mean."""
    torch.manual_seed(1)
    problem = Problem.make(B=3, D=2, K=2, seed=1)
    est = estimators.build(name).to(DTYPE)
    opt = torch.optim.Adam(est.parameters(), lr=0.05)
    logits, w, f = problem.replicate(64)
    flat = logits.reshape(-1, *problem.logits.shape[1:])
    for _ in range(100):
        opt.zero_grad()
        est(flat, f).aux_loss.backward()
        opt.step()
    assert check_unbiased(est, problem) < Z_MAX


@pytest.mark.slow
def test_training_the_control_variate_lowers_variance():
    torch.manual_seed(2)
    problem = Problem.make(B=3, D=2, K=2, seed=2)
    est = estimators.build("relax").to(DTYPE)
    before = problem.estimates(est, 4000).var(0).sum()
    opt = torch.optim.Adam(est.parameters(), lr=0.03)
    logits, _, f = problem.replicate(64)
    for _ in range(200):
        opt.zero_grad()
        est(logits.reshape(-1, 2, 2), f).aux_loss.backward()
        opt.step()
    after = problem.estimates(est, 4000).var(0).sum()
    assert after < 0.7 * before


# -- the test can fail: broken estimators are caught -------------------------

class ScoreOnly(Estimator):
    """REINFORCE that forgets the pathwise gradient of f."""
    name = "broken_score_only"

    def estimate(self, logits, f, context):
        z = sample_one_hot(logits, 1)
        f_z = f(z)
        logq = log_prob(logits, z)
        return Estimate(loss=-(f_z.detach() * logq).mean(), value=f_z.detach().mean(0))


class RebarWithoutConditionalPath(estimators.build("rebar").__class__):
    """REBAR that does not differentiate through z~(theta, b, v)."""
    name = "broken_rebar"

    def estimate(self, logits, f, context):
        import estimators.rebar as rb
        original = rb.conditional_perturbed
        rb.conditional_perturbed = lambda lg, b, *rest: original(lg, b, *rest).detach()
        try:
            return super().estimate(logits, f, context)
        finally:
            rb.conditional_perturbed = original


@pytest.mark.parametrize("broken", [ScoreOnly, RebarWithoutConditionalPath])
def test_broken_estimators_fail_the_same_test(broken):
    assert check_unbiased(broken().to(DTYPE), Problem.make(B=3, D=2, K=3)) > 2 * Z_MAX


# -- vimco against the exact gradient of its bound ----------------------------

def vimco_exact(problem, S):
    """d/d(logits, w) of mean_b E[log 1/S sum_s exp f(z_s)] by enumerating all S-tuples."""
    logits, w, f = problem.replicate(1)
    B, D, K = problem.logits.shape
    configs = torch.nn.functional.one_hot(
        torch.tensor(list(itertools.product(range(K), repeat=D))), K).to(DTYPE)  # (N, D, K)
    N = configs.shape[0]
    z = configs.unsqueeze(1).expand(N, B, D, K)
    f_all = f(z)                                                   # (N, B)
    logq = log_prob(logits.reshape(B, D, K), z)                    # (N, B)
    total = 0.0
    for tup in itertools.product(range(N), repeat=S):
        idx = torch.tensor(tup)
        bound = torch.logsumexp(f_all[idx], 0) - math.log(S)      # (B,)
        total = total + (logq[idx].sum(0).exp() * bound)
    g = torch.autograd.grad(total.mean(), [logits, w])
    return torch.cat([g[0].reshape(-1), g[1].reshape(-1)])


def test_vimco_against_enumerated_bound():
    problem = Problem.make(B=2, D=2, K=2, seed=3)
    torch.manual_seed(3)
    est = estimators.build("vimco", n_samples=3)
    draws = problem.estimates(est, R)
    assert z_scores(draws, vimco_exact(problem, 3)).abs().max() < Z_MAX
    # and it is the gradient of the bound, not of E f
    assert z_scores(draws, problem.exact()).abs().max() > 2 * Z_MAX


# -- relaxations: biased, bias measured ---------------------------------------

def relaxation_bias(tau, hard=False):
    torch.manual_seed(4)
    problem = Problem.make(B=3, D=2, K=3)
    draws = problem.estimates(estimators.build("gumbel", tau=tau, hard=hard).to(DTYPE), R)
    exact = problem.exact()
    return float((draws.mean(0) - exact).norm() / exact.norm()), z_scores(draws, exact).abs().max()


def test_gumbel_bias_is_real_and_shrinks_with_temperature():
    biases = {tau: relaxation_bias(tau) for tau in (2.0, 1.0, 0.3)}
    print("\nrelative bias of gumbel by tau:", {t: round(b, 4) for t, (b, _) in biases.items()})
    assert biases[2.0][1] > 2 * Z_MAX            # measurably biased
    assert biases[2.0][0] > biases[1.0][0] > biases[0.3][0]
    st_bias, st_z = relaxation_bias(0.5, hard=True)
    print("relative bias of straight-through gumbel (tau=0.5):", round(st_bias, 4))
    assert st_z > 2 * Z_MAX
