"""Gapped straight-through and decoupled straight-through Gumbel-softmax:
the backward pass against an independent reading of the GST authors'
algorithm on the same samples, the reduction of decoupled ST to
straight-through Gumbel-softmax, the forward sample's distribution, cost,
dtypes, options and configs. (Their bias is measured in
test_estimators_biased.py and results/estimator_bias.py.)"""
from pathlib import Path

import pytest
import torch
import yaml

import estimators
import estimators.gst as gst_mod
from tests.problems import DTYPE, Z_MAX

NAMES = ["gst", "decoupled_st"]


def authors_gst_grad(logits, action, a, tau, gap):
    """d/dlogits <z, a> the way the GST authors' code builds z: raise the
    sampled logit to the maximum, push the others down to max - gap where
    they are closer, centre, softmax at tau. logits (B, D, K), action one-hot."""
    logits = logits.detach().requires_grad_()
    base = logits.detach()
    top = base.max(-1, keepdim=True).values
    if gap == "p":
        pi = (base.softmax(-1) * action).sum(-1, keepdim=True) * (1 - 1e-5)
        gap = -torch.log(1 - pi) / pi
    raise_ = (top - base) * action
    lower = (base - top + gap).clamp(min=0.0) * (1 - action)
    moved = logits + (raise_ - lower)
    moved = moved - moved.mean(-1, keepdim=True)
    prob = (moved / tau).softmax(-1)
    z = action - prob.detach() + prob
    (g,) = torch.autograd.grad((z * a).sum(), logits)
    return g


@pytest.mark.parametrize("gap", [1.0, 0.3, "p"])
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_gst_matches_the_authors_algorithm_on_the_same_samples(gap, tau):
    torch.manual_seed(0)
    logits = (2 * torch.randn(5, 3, 4, dtype=DTYPE)).requires_grad_()
    a = torch.randn(5, 3, 4, dtype=DTYPE)
    seen = []

    def f(z):
        seen.append(z.detach())
        return (z * a).sum((-1, -2))
    est = estimators.build("gst", tau=tau, gap=gap).to(DTYPE)
    (g,) = torch.autograd.grad(est(logits, f).loss, logits)
    want = authors_gst_grad(logits, seen[0][0], a, tau, gap)
    assert torch.allclose(-5 * g, want, rtol=1e-10, atol=1e-12)


def test_gapped_logits_put_the_sample_on_top_with_the_gap():
    torch.manual_seed(1)
    logits = torch.randn(4, 3, 5, dtype=DTYPE)
    b = estimators.sampling.sample_one_hot(logits, 6)
    moved = gst_mod.gapped_logits(logits, b, 0.7)                        # (S, B, D, K)
    top = (moved * b).sum(-1)
    others = moved.masked_fill(b.bool(), -float("inf")).max(-1).values
    assert torch.allclose(top, logits.max(-1).values.expand_as(top), rtol=0, atol=1e-12)
    assert (top - others >= 0.7 - 1e-12).all()


def test_decoupled_at_forward_temperature_one_is_straight_through_gumbel():
    logits = torch.randn(4, 3, 5, dtype=DTYPE, requires_grad=True)
    f = lambda z: (z * torch.arange(5.0, dtype=DTYPE)).sum((-1, -2)) ** 2   # noqa: E731
    grads = []
    for name, opts in [("decoupled_st", dict(tau_backward=0.7)), ("gumbel", dict(tau=0.7, hard=True))]:
        torch.manual_seed(2)
        out = estimators.build(name, n_samples=3, **opts)(logits, f)
        grads.append(torch.autograd.grad(out.loss, logits)[0])
    assert torch.equal(grads[0], grads[1])


def test_decoupled_forward_samples_from_the_tempered_distribution():
    torch.manual_seed(3)
    logits = torch.randn(1, 1, 4, dtype=DTYPE)
    seen = []
    est = estimators.build("decoupled_st", tau_forward=2.5, n_samples=20_000)
    est(logits, lambda z: seen.append(z) or z.sum((-1, -2)))
    freq = seen[0][:, 0, 0].mean(0)
    want = (logits[0, 0] / 2.5).softmax(-1)
    assert ((freq - want).abs() / (want * (1 - want) / 20_000).sqrt()).max() < Z_MAX


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,opts", [("gst", dict(gap="p")), ("gst", dict()),
                                       ("decoupled_st", dict(tau_forward=0.5, tau_backward=0.3))])
def test_dtypes_and_extreme_logits(name, opts, dtype):
    torch.manual_seed(4)
    est = estimators.build(name, n_samples=2, **opts)
    for scale in (1.0, 40.0):
        logits = (scale * torch.randn(3, 2, 4, dtype=dtype)).requires_grad_()
        out = est(logits, lambda z: -(z * z.flip(-1)).sum((-1, -2)))
        (g,) = torch.autograd.grad(out.loss, logits)
        assert g.dtype == dtype and torch.isfinite(g).all() and torch.isfinite(out.value).all()


BAD = [("gst", dict(tau=0), "tau=0"), ("gst", dict(gap=0), "gap=0"), ("gst", dict(gap="q"), "gap='q'"),
       ("gst", dict(gap=True), "gap=True"), ("decoupled_st", dict(tau_forward=0), "tau_forward=0"),
       ("decoupled_st", dict(tau_backward=-1.0), "tau_backward=-1.0"),
       ("decoupled_st", dict(n_samples=0), "n_samples=0")]


@pytest.mark.parametrize("name,opts,match", BAD, ids=[f"{n}-{o}" for n, o, _ in BAD])
def test_bad_options_name_the_key(name, opts, match):
    with pytest.raises(ValueError, match=match):
        estimators.build(name, **opts)


@pytest.mark.parametrize("name", NAMES + ["unordered_set", "double_cv"])
def test_traits_and_config(name):
    cls = estimators.get(name)
    assert cls.unbiased == (name in ("unordered_set", "double_cv"))
    assert cls.latent == "categorical" and not cls.uses_context
    with open(Path(__file__).resolve().parents[1] / "conf" / "estimator" / f"{name}.yaml") as fh:
        conf = yaml.safe_load(fh)
    assert conf.pop("name") == name
    assert conf == estimators.options(name)
