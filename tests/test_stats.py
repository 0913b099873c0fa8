"""Gradient statistics: the vectorised path agrees with N separate backward
passes, and bias/cosine against the exact gradient behave."""
import pytest
import torch
from torch import nn

import estimators
from estimators.stats import _summarise, gradient_stats


class Tiny(nn.Module):
    """Encoder x -> logits (B, D, K), decoder z -> Bernoulli log-likelihood."""

    def __init__(self, P=6, D=2, K=3):
        super().__init__()
        self.D, self.K = D, K
        self.encoder = nn.Linear(P, D * K)
        self.decoder = nn.Linear(D * K, P)

    def loss(self, est, x):
        logits = self.encoder(x).view(-1, self.D, self.K)
        f = lambda z: -nn.functional.binary_cross_entropy_with_logits(
            self.decoder(z.flatten(2)), x.expand(z.shape[0], *x.shape), reduction="none").sum(-1)
        return est(logits, f).loss


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = Tiny().double()
    x = torch.bernoulli(torch.full((8, 6), 0.4, dtype=torch.float64))
    return model, x


@pytest.mark.parametrize("name,opts,batched", [
    ("reinforce", dict(baseline="loo", n_samples=2), True),
    ("gumbel", dict(tau=0.5), True),
    ("vimco", dict(n_samples=3), True),
    ("rebar", {}, False),
])
def test_vectorised_matches_looped(setup, name, opts, batched):
    model, x = setup
    est = estimators.build(name, **opts).double()
    loss = lambda: model.loss(est, x)
    torch.manual_seed(1)
    fast = gradient_stats(model, loss, params=["encoder."], n=400)
    torch.manual_seed(2)
    slow = gradient_stats(model, loss, params=["encoder."], n=400, batched=False)
    assert fast.batched is batched and not slow.batched
    # two independent variance estimates from 400 draws: within ~15% of each other
    assert abs(fast.log10_var - slow.log10_var) < 0.12
    cos = torch.nn.functional.cosine_similarity(fast.mean, slow.mean, 0)
    assert cos > 0.9


def test_exact_has_zero_variance_and_bias(setup):
    model, x = setup
    ex = estimators.build("exact")
    stats = gradient_stats(model, lambda: model.loss(ex, x), params=["encoder."], n=5,
                           exact_fn=lambda: model.loss(ex, x))
    assert stats.variance < 1e-20 and stats.bias < 1e-10 and stats.cosine > 1 - 1e-9


def test_unbiased_estimator_points_at_exact_gradient(setup):
    model, x = setup
    est, ex = estimators.build("reinforce", baseline="loo", n_samples=4), estimators.build("exact")
    torch.manual_seed(3)
    stats = gradient_stats(model, lambda: model.loss(est, x), params=["encoder."], n=2000,
                           exact_fn=lambda: model.loss(ex, x))
    metrics = stats.metrics()
    assert set(metrics) == {"grad/log10_var", "grad/snr", "grad/seconds_per_estimate",
                            "grad/bias", "grad/cosine"}
    assert metrics["grad/cosine"] > 0.97
    # the bias is the Monte Carlo error of the mean: about sqrt(trace / N)
    assert metrics["grad/bias"] < 3 * (stats.variance / 2000) ** 0.5


def test_selecting_no_parameter_names_the_valid_ones(setup):
    model, x = setup
    with pytest.raises(ValueError, match=r"select no parameter.*encoder.weight"):
        gradient_stats(model, lambda: model.loss(estimators.build("exact"), x), params=["enc."])


def test_snr_leaves_out_coordinates_that_do_not_vary():
    g = torch.tensor([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0], [2.0, 5.0, 0.0]], dtype=torch.float64)
    # coordinate 0: mean 2, sd 1 -> SNR 2; coordinate 1 is deterministic (sd 0: an
    # infinite SNR, which used to become 5 / 1e-30); coordinate 2 is always 0
    stats = _summarise(g, 0.0, True, None)
    assert stats.snr == pytest.approx(2.0)
    assert stats.metrics()["grad/snr"] == pytest.approx(2.0)
    # nothing varies: no SNR at all rather than a huge number
    still = _summarise(g[:, 1:], 0.0, True, None)
    assert still.snr is None and "grad/snr" not in still.metrics()
    assert still.metrics()["grad/log10_var"] < -250
