"""Collapse metrics on hand-built posteriors, and `evaluate` end to end."""
import math

import pytest
import torch
from torch import nn

import models
from models import metrics
from models.data import Batch

DT = torch.float64
K, D, B = 5, 3, 200




def _distinct_codes():
    """Deterministic codes: example b puts all its mass on class (b + d) mod K of
    variable d, so every class is used equally often."""
    idx = (torch.arange(B)[:, None] + torch.arange(D)[None]) % K          # (B, D)
    return torch.nn.functional.one_hot(idx, K).to(DT) * 60.0 - 30.0          # peaked logits


def test_posterior_equal_to_prior_is_collapsed():
    lat = models.latents.build("categorical", D=D, K=K)
    prior = torch.randn(1, D, K, dtype=DT).expand(B, D, K)
    assert metrics.active_units(lat.mean(prior)) == 0
    assert metrics.mutual_info_categorical(prior) == pytest.approx(0.0, abs=1e-12)
    s = metrics.kl_summary(metrics.kl_per_variable(lat, prior, prior))
    assert s == {"min": pytest.approx(0.0, abs=1e-12), "mean": pytest.approx(0.0, abs=1e-12), "below": D}


def test_distinct_codes_use_log_k_nats_and_k_codes():
    q = _distinct_codes()
    assert metrics.mutual_info_categorical(q) == pytest.approx(D * math.log(K), abs=1e-9)
    assert metrics.code_perplexity(q) == pytest.approx(K, abs=1e-9)
    assert metrics.active_units(q.softmax(-1)) == D * K
    # one variable collapsed onto a single class: it adds no information, perplexity 1
    q2 = q.clone()
    q2[:, 0] = torch.tensor([30.0] + [-30.0] * (K - 1), dtype=DT)
    assert metrics.mutual_info_categorical(q2) == pytest.approx((D - 1) * math.log(K), abs=1e-9)
    assert metrics.code_perplexity(q2) == pytest.approx((1 + (D - 1) * K) / D, abs=1e-9)
    assert metrics.active_units(q2.softmax(-1)) == (D - 1) * K


def test_gaussian_mutual_info_minibatch_estimator():
    # He et al. use the analytic entropy and a sampled log q(z): unbiased, not exact,
    # so the checks average 40 draws (standard error about 0.1 / sqrt(40))
    g = torch.Generator().manual_seed(0)
    mi = lambda params, **kw: sum(metrics.mutual_info_gaussian(params, g, **kw) for _ in range(40)) / 40
    same = torch.zeros(B, 4, 2, dtype=DT)                                   # q = N(0, I) for every x
    assert mi(same) == pytest.approx(0.0, abs=0.07)
    assert metrics.active_units(same[..., 0]) == 0
    far = torch.zeros(B, 4, 2, dtype=DT)
    far[..., 0] = 100.0 * torch.arange(B, dtype=DT)[:, None]                # distinct, tight codes
    far[..., 1] = -2.0
    # bounded by log B in expectation, reached for perfectly separated codes; chunked = unchunked
    assert mi(far) == pytest.approx(math.log(B), abs=0.07)
    assert metrics.active_units(far[..., 0]) == 4
    mixed = torch.randn(B, 4, 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    chunked = metrics.mutual_info_gaussian(mixed, torch.Generator().manual_seed(7), chunk_elems=4000)
    whole = metrics.mutual_info_gaussian(mixed, torch.Generator().manual_seed(7))
    assert chunked == pytest.approx(whole, abs=1e-12)


def test_nmi_matches_definition_and_sklearn():
    from sklearn.metrics import normalized_mutual_info_score as sk_nmi
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(4, (500,), generator=g)
    assert metrics.nmi(truth, (truth * 7 + 3) % 11) == pytest.approx(1.0)   # a relabelling
    noisy = torch.where(torch.rand(500, generator=g) < 0.3, torch.randint(6, (500,), generator=g), truth)
    assert metrics.nmi(truth, noisy) == pytest.approx(sk_nmi(truth.numpy(), noisy.numpy()), abs=1e-10)
    assert metrics.nmi(truth, torch.randint(4, (500,), generator=g)) < 0.05
    codes = metrics.joint_codes(torch.nn.functional.one_hot(torch.tensor([[1, 2], [3, 0]]), 4).to(DT))
    assert codes.tolist() == [1 * 4 + 2, 3 * 4 + 0]


class HandModel(nn.Module):
    """The model contract with hand-built posterior and prior; log p(x | z) = -|z - x|^2
    when `uses_z`, else a constant."""

    def __init__(self, q, p, uses_z=True):
        super().__init__()
        self.latent = models.latents.build("categorical", D=q.shape[1], K=q.shape[2])
        self.q, self.p, self.uses_z = q, p, uses_z

    def posterior(self, batch):
        return self.q

    def prior(self, batch):
        return self.p

    def log_likelihood(self, batch, z):
        if not self.uses_z:
            return torch.full(z.shape[:2], -1.0, dtype=z.dtype)
        return -((z - batch.x.softmax(-1)) ** 2).sum((-1, -2))

    def context(self, batch):
        return torch.zeros(batch.size, 1)


def test_evaluate_on_hand_built_models():
    q = _distinct_codes()
    batch = Batch(q, torch.zeros(B, dtype=torch.long), (torch.arange(B) % K))
    uniform = torch.zeros(B, D, K, dtype=DT)
    out = models.evaluate(HandModel(q, uniform), batch, n_iw=4, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"val/elbo", "val/recon", "val/kl", "val/iwae", "collapse/active_units",
                        "collapse/mutual_info", "collapse/kl_min", "collapse/kl_mean",
                        "collapse/kl_below_0.01", "collapse/code_perplexity",
                        "collapse/decoder_sensitivity", "latent/strategy_nmi"}
    assert out["val/recon"] == pytest.approx(0.0, abs=1e-9)                 # z always = its code
    assert out["val/kl"] == pytest.approx(D * math.log(K), abs=1e-9)
    assert out["val/elbo"] == pytest.approx(-D * math.log(K), abs=1e-9)
    assert out["val/iwae"] == pytest.approx(out["val/elbo"], abs=1e-9)       # q deterministic
    assert out["collapse/mutual_info"] == pytest.approx(D * math.log(K))
    assert out["collapse/code_perplexity"] == pytest.approx(K)
    assert out["latent/strategy_nmi"] == pytest.approx(1.0)                  # variable 0 = truth
    assert out["collapse/decoder_sensitivity"] > 0.5
    collapsed = HandModel(uniform, uniform, uses_z=False)
    out = models.evaluate(collapsed, batch._replace(truth=None), n_iw=3)
    assert out["collapse/decoder_sensitivity"] == 0.0 and out["collapse/active_units"] == 0
    assert out["collapse/mutual_info"] == pytest.approx(0.0, abs=1e-12)
    assert out["collapse/kl_below_0.01"] == D and "latent/strategy_nmi" not in out


@pytest.mark.parametrize("task_name, latent, conditioning", [("digits", "categorical", "film"),
                                                             ("digits", "gaussian", "concat"),
                                                             ("strategies", "categorical", "prefix"),
                                                             ("strategies", "gaussian", "xattn")])
def test_evaluate_real_models(task_name, latent, conditioning):
    opts = dict(n_train=32, n_val=48, n_test=8, length=4) if task_name == "strategies" else {}
    task = models.tasks.load(task_name, **opts)
    torch.manual_seed(0)
    small = dict(d_model=16, n_heads=2) if task_name == "strategies" else dict(hidden=16)
    model = models.build(task, latent, conditioning, **small)
    model.train()
    out = models.evaluate(model, task.split("val"), n_iw=5)
    assert model.training                                                    # mode restored
    expected = {"val/elbo", "val/recon", "val/kl", "val/iwae", "collapse/active_units",
                "collapse/mutual_info", "collapse/kl_min", "collapse/kl_mean", "collapse/kl_below_0.01",
                "collapse/decoder_sensitivity"}
    if latent == "categorical":
        expected.add("collapse/code_perplexity")
        if task_name == "strategies":
            expected.add("latent/strategy_nmi")
    assert set(out) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert out["val/elbo"] == pytest.approx(out["val/recon"] - out["val/kl"])
    assert out["val/kl"] >= 0 and out["collapse/kl_min"] <= out["collapse/kl_mean"]


def test_evaluate_toy_is_exact():
    task = models.tasks.load("toy", t=0.45)
    model = models.build(task, "categorical", init=0.5)
    s = torch.sigmoid(torch.tensor(0.5)).item()
    out = models.evaluate(model, task.split("val"))
    assert out == {"val/elbo": pytest.approx(-(s * 0.55 ** 2 + (1 - s) * 0.45 ** 2))}
