"""estimators.kl_categorical and kl_bernoulli: the analytic KL of the discrete
latents against a uniform or a given prior, checked against
torch.distributions' own KL and a sum written out over the categories; the
models' latent types return the same numbers (one implementation)."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, kl_divergence

import estimators
import models

DTYPE = torch.float64
B, D, K = 5, 3, 4


def _logits(*shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=DTYPE)


def test_categorical_against_torch_and_a_written_out_sum():
    q, p = _logits(B, D, K), _logits(D, K, seed=1)                  # p broadcasts over B
    got = estimators.kl_categorical(q, p)
    assert got.shape == (B, D)
    ref = kl_divergence(Categorical(logits=q), Categorical(logits=p.expand(B, D, K)))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    pq, pp = q.softmax(-1), p.softmax(-1)
    written = sum(pq[..., k] * (pq[..., k].log() - pp[..., k].log()) for k in range(K))
    torch.testing.assert_close(got, written, rtol=1e-12, atol=1e-12)
    # None: the uniform prior, KL = log K - H(q)
    entropy = -(pq * pq.log()).sum(-1)
    torch.testing.assert_close(estimators.kl_categorical(q),
                               torch.log(torch.tensor(float(K), dtype=DTYPE)) - entropy)
    assert (estimators.kl_categorical(q, q).abs() < 1e-12).all()     # KL(q || q) = 0


def test_bernoulli_against_torch_and_the_two_state_sum():
    a, b = _logits(B, D), _logits(D, seed=1)                        # a learned prior (D,)
    got = estimators.kl_bernoulli(a, b)
    assert got.shape == (B, D)
    ref = kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b.expand(B, D)))
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    # a Bernoulli is a K = 2 categorical with logits [0, a]
    as_two = estimators.kl_categorical(torch.stack([torch.zeros_like(a), a], -1),
                                       torch.stack([torch.zeros_like(b), b], -1))
    torch.testing.assert_close(got, as_two, rtol=1e-12, atol=1e-12)
    half = kl_divergence(Bernoulli(logits=a), Bernoulli(probs=torch.full_like(a, 0.5)))
    torch.testing.assert_close(estimators.kl_bernoulli(a), half, rtol=1e-10, atol=1e-12)


def test_gradients_reach_the_posterior_and_the_prior():
    q, p = _logits(B, D, K).requires_grad_(), _logits(D, K, seed=1).requires_grad_()
    estimators.kl_categorical(q, p).sum().backward()
    assert q.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kind, shape", [("categorical", (B, D, K)), ("bernoulli", (B, D, 2))])
def test_the_models_latents_use_the_same_kl(kind, shape):
    """models.latents' KL term is the public helper's: the same numbers."""
    lat = models.latents.build(kind, D=D, **({"K": K} if kind == "categorical" else {}))
    q, p = _logits(*shape), _logits(1, *shape[1:], seed=1)
    mine = (estimators.kl_categorical(q, p) if kind == "categorical" else
            estimators.kl_bernoulli(q[..., 1] - q[..., 0], p[..., 1] - p[..., 0]))
    assert torch.equal(lat.kl(q, p), mine)
    # against the fixed (uniform) prior the models use
    assert torch.allclose(lat.kl(q, lat.fixed_prior(q)),
                          estimators.kl_categorical(q), rtol=1e-12, atol=1e-12)
