"""Latent types against torch.distributions, in float64."""
import pytest
import torch
from torch import distributions as dist

from models import latents

DT = torch.float64




def test_categorical_kl_log_prob_sample():
    torch.manual_seed(0)
    lat = latents.build("categorical", D=3, K=4)
    assert lat.param_shape == (3, 4) and lat.estimator_kind == "categorical"
    q, p = torch.randn(5, 3, 4, dtype=DT), torch.randn(5, 3, 4, dtype=DT)
    want = dist.kl_divergence(dist.Categorical(logits=q), dist.Categorical(logits=p))
    assert torch.allclose(lat.kl(q, p), want)
    z = lat.sample(q, 7)
    assert z.shape == (7, 5, 3, 4) and z.dtype == DT and torch.equal(z.sum(-1), torch.ones(7, 5, 3, dtype=DT))
    want_lp = dist.Categorical(logits=q).log_prob(z.argmax(-1)).sum(-1)
    assert torch.allclose(lat.log_prob(q, z), want_lp)
    assert torch.allclose(lat.entropy(q), dist.Categorical(logits=q).entropy())
    # a broadcast fixed prior: KL to uniform = log K - H(q)
    u = lat.fixed_prior(q)
    assert torch.allclose(lat.kl(q, u), torch.log(torch.tensor(4.0, dtype=DT)) - lat.entropy(q))


def test_categorical_sample_frequencies():
    lat = latents.build("categorical", D=1, K=3)
    logits = torch.log(torch.tensor([[[0.2, 0.3, 0.5]]], dtype=DT))
    g = torch.Generator().manual_seed(0)
    freq = lat.sample(logits, 20000, g).mean((0, 1, 2))
    assert torch.allclose(freq, torch.tensor([0.2, 0.3, 0.5], dtype=DT), atol=0.015)


def test_gaussian_kl_log_prob_rsample():
    torch.manual_seed(0)
    lat = latents.build("gaussian", D=3)
    assert lat.param_shape == (3, 2) and lat.estimator_kind == "gaussian"
    q, p = torch.randn(5, 3, 2, dtype=DT), torch.randn(5, 3, 2, dtype=DT)
    Nq = dist.Normal(q[..., 0], q[..., 1].exp())
    Np = dist.Normal(p[..., 0], p[..., 1].exp())
    assert torch.allclose(lat.kl(q, p), dist.kl_divergence(Nq, Np))
    q.requires_grad_(True)
    z = lat.sample(q, 4)
    assert z.shape == (4, 5, 3)
    z.sum().backward()                      # reparameterised: gradient reaches the mean
    assert torch.allclose(q.grad[..., 0], torch.full((5, 3), 4.0, dtype=DT))
    assert torch.allclose(lat.log_prob(q, z), Nq.log_prob(z).sum(-1))
    assert torch.allclose(lat.entropy(q), Nq.entropy())


@pytest.mark.parametrize("name, sizes, key", [("categorical", {"D": 2, "K": 1}, "K"),
                                              ("gaussian", {"D": 0}, "D"),
                                              ("gaussian", {"D": 2, "K": 3}, "K"),
                                              ("poisson", {}, "categorical")])
def test_bad_latents(name, sizes, key):
    with pytest.raises(ValueError, match=key):
        latents.build(name, **sizes)


def test_bernoulli_log_softmax_shortcut_equals_log_softmax():
    """The KL of K = 2 latents takes log sigmoid of the logit difference (faster
    than log_softmax on CPU): the same values and gradients, extremes included."""
    import torch
    from models.latents import _log_softmax
    x = torch.cat([torch.randn(64, 50, 2, dtype=torch.float64) * 8,
                   torch.tensor([[[1e4, -1e4], [0.0, 0.0], [-30.0, 30.0]]], dtype=torch.float64)
                   .expand(64, 3, 2)], 1).requires_grad_()
    a, b = _log_softmax(x), x.log_softmax(-1)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
    w = torch.randn_like(a)
    ga, = torch.autograd.grad((a * w).sum(), x)
    gb, = torch.autograd.grad((b * w).sum(), x)
    assert torch.allclose(ga, gb, rtol=0, atol=1e-12)
    y = torch.randn(4, 3, 5)
    assert torch.equal(_log_softmax(y), y.log_softmax(-1))     # other K: log_softmax itself
