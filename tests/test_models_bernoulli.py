"""The papers' binary VAE (REBAR, RELAX, DisARM as their code has it): the
Bernoulli latent's maths against the K = 2 categorical it stands for, the
overlays' model (one logit per latent, 200 decoder inputs on 2b - 1, Glorot
weights, zero biases, D prior logits at SGD 1e-2), the sampled-KL objective,
the training-set ELBO against a direct computation, and RELAX's configuration
at the papers' settings against its source."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import estimators
import models
from bench.job.objective import objective
from bench.job.train import Trainer
from models.data import Batch
from models.evaluate import single_sample_elbo
from models.tasks.images import image_task
from tests.compose import compose_config

D64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.steps=3", "train.eval_every=3", "train.log_every=1", "eval.batch_size=8",
         "eval.iwae_samples=2", "eval.grad_samples=2", "eval.grad_batch_size=2", "device=cpu"]


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(12, 6, generator=g)                                  # grey levels
    labels = torch.arange(12) % 2
    splits = {"train": torch.arange(8), "val": torch.arange(8, 10), "test": torch.arange(10, 12)}
    return image_task("tiny", pixels, labels, splits, (2, 3), "dynamic", None, "cpu", 0, n_classes=2)


def _papers_model(task, D=3, seed=0, **opts):
    torch.manual_seed(seed)
    kw = dict(encoder_hidden=[], decoder_hidden=[], norm="none", init="glorot", center_input=True,
              output_bias_init="data", learned_prior=True)
    kw.update(opts)
    return models.build(task, models.latents.build("bernoulli", D=D), "none", **kw)


# -- the latent ------------------------------------------------------------------

def test_bernoulli_is_the_k2_categorical_of_its_logit():
    """kl, log_prob, log_ratio and sampling of [0, a] equal the categorical's
    of the same two logits (float64); the decoder reads 2b - 1."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 5, generator=g, dtype=D64), torch.randn(1, 5, generator=g, dtype=D64)
    ber, cat = models.latents.build("bernoulli", D=5), models.latents.build("categorical", D=5, K=2)
    q, p = ber.params(a), ber.params(b)
    assert q.shape == (4, 5, 2) and torch.equal(q[..., 0], torch.zeros(4, 5, dtype=D64))
    torch.testing.assert_close(ber.kl(q, p), cat.kl(q, p), rtol=1e-12, atol=1e-12)
    z = cat.sample(q, 3, torch.Generator().manual_seed(2))                   # (3, 4, 5, 2)
    torch.testing.assert_close(ber.log_prob(q, z), cat.log_prob(q, z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ber.log_ratio(p, q, z), cat.log_prob(p, z) - cat.log_prob(q, z),
                               rtol=1e-12, atol=1e-12)
    assert torch.equal(ber.code(z), 2 * z[..., 1] - 1)
    assert ber.n_params == ber.code_size() == 5 and cat.code_size() == 10
    # its KL is the closed form of two Bernoullis
    s, t = torch.sigmoid(a), torch.sigmoid(b)
    closed = s * (s / t).log() + (1 - s) * ((1 - s) / (1 - t)).log()
    torch.testing.assert_close(ber.kl(q, p), closed, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("K", [2, 3])
def test_k2_fast_paths_equal_torch_ops(K):
    from estimators.sampling import log_softmax, one_hot_argmax, softmax
    g = torch.Generator().manual_seed(K)
    x = torch.randn(3, 4, 6, K, generator=g, dtype=D64)
    torch.testing.assert_close(log_softmax(x), x.log_softmax(-1), rtol=0, atol=1e-13)
    torch.testing.assert_close(softmax(x), x.softmax(-1), rtol=0, atol=1e-13)
    want = torch.zeros_like(x).scatter(-1, x.argmax(-1, keepdim=True), 1.0)
    assert torch.equal(one_hot_argmax(x), want)
    tie = torch.zeros(2, 2, K, dtype=D64)                                   # ties: category 0
    assert torch.equal(one_hot_argmax(tie), torch.zeros_like(tie).scatter(-1, tie.argmax(-1, keepdim=True), 1.0))


# -- the model ----------------------------------------------------------------

def test_linear_overlay_is_the_papers_model():
    """experiment=disarm_linear: one logit per latent (200 encoder outputs), 200
    decoder inputs, Glorot-uniform weights and zero biases (the decoder's
    output bias at the data logits), 200 prior logits from zero in their own SGD
    at 1e-2, the KL sampled inside f."""
    pytest.importorskip("mlxtend")
    cfg = compose_config(["experiment=disarm_linear", *QUICK])
    t = Trainer(cfg, log=lambda step, m: None)
    m = t.model
    enc, dec = [[l for l in net.modules() if isinstance(l, nn.Linear)] for net in (m.encoder, m.decoder)]
    assert [l.weight.shape for l in enc] == [(200, 784)] and [l.weight.shape for l in dec] == [(784, 200)]
    for layer in (enc[0], dec[0]):
        bound = math.sqrt(6 / sum(layer.weight.shape))                      # glorot_uniform
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert abs(w.var().item() - bound ** 2 / 3) < 0.05 * bound ** 2 / 3
    assert torch.equal(enc[0].bias, torch.zeros(200))
    want = torch.logit(m.input_mean.clamp(1e-3, 1 - 1e-3))
    torch.testing.assert_close(dec[0].bias.detach(), want)
    assert m.prior_logits.shape == (200,) and not m.prior_logits.any()
    assert [p for g in t.prior_opt.param_groups for p in g["params"]] == [m.prior_logits]
    assert t.prior_opt.param_groups[0]["lr"] == 1e-2 and t.sampled
    assert t.opt.defaults["fused"] is True
    batch = t.task.sample("train", 5, t.task.generator(0))
    assert m.posterior(batch).shape == (5, 200, 2)
    b = torch.randint(0, 2, (1, 5, 200)).double().float()
    z = torch.stack([1 - b, b], -1)
    torch.testing.assert_close(m.logits(batch, z)[0], dec[0](2 * b[0] - 1))


def test_glorot_leaves_conditioning_maps_alone(tiny):
    """init=glorot re-draws the networks' own layers; film's zero-initialised
    maps stay zero, so a film model still starts as the unconditioned one."""
    m = _papers_model(tiny, encoder_hidden=[4], decoder_hidden=[4], learned_prior=False)
    f = models.build(tiny, models.latents.build("bernoulli", D=3), "film", encoder_hidden=[4],
                     decoder_hidden=[4], norm="none", init="glorot")
    mods = [p for n, p in f.named_parameters() if ".mods." in n]
    assert mods and all(not p.any() for p in mods)
    assert all(not l.bias.any() for l in m.encoder.modules() if isinstance(l, nn.Linear))


def test_bad_init_and_context_name_the_key(tiny):
    for key, value in (("init", "xavier"), ("context", "pixels")):
        with pytest.raises(ValueError, match=key):
            _papers_model(tiny, **{key: value})


def test_other_families_refuse_the_bernoulli_latent_by_name(tiny):
    from models.tasks import load
    with pytest.raises(ValueError, match="bernoulli.*valid names"):
        models.default_latent(load("strategies"), "bernoulli")


# -- the objective ---------------------------------------------------------------

def test_sampled_kl_objective_has_the_analytic_objectives_gradient(tiny):
    """With the exact estimator, E_q[log p(x|b) + log p(b) - log q(b|x)] and
    E_q log p(x|b) - KL are the same function of every parameter: equal values
    and gradients. Dropping the log-ratio from f (a broken sampled form) does not."""
    m = _papers_model(tiny).double()
    with torch.no_grad():
        m.prior_logits.normal_()
    batch = Batch(tiny.split("train").x.double(), tiny.split("train").c, None)
    exact = estimators.build("exact").double()

    def value_grad(**kw):
        m.zero_grad()
        obj = objective(m, exact, batch, 1.0, **kw)
        obj.loss.backward()
        return obj.loss.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]

    v_a, g_a = value_grad()
    v_s, g_s = value_grad(sampled=True)
    torch.testing.assert_close(v_s, v_a, rtol=1e-12, atol=1e-10)
    for a, s in zip(g_a, g_s):
        torch.testing.assert_close(s, a, rtol=1e-9, atol=1e-10)
    lat = m.latent
    broken = lat.log_ratio
    lat.log_ratio = lambda p, q, z: torch.zeros(z.shape[:2], dtype=z.dtype)
    try:
        v_b, _ = value_grad(sampled=True)
    finally:
        lat.log_ratio = broken
    assert abs(v_b - v_a) > 1e-3


def test_sampled_kl_refuses_free_bits():
    from bench.config.validate import ConfigError, validate
    with pytest.raises(ConfigError, match="kl.free_bits"):
        validate(compose_config(["kl.form=sampled", "kl.free_bits=0.5"]))


# -- the training-set ELBO -------------------------------------------------------

def test_train_elbo_matches_a_direct_computation(tiny):
    """single_sample_elbo against the formulas written out: one b per image drawn
    by the same Gumbel-max noise, log p(x|b) from the linear decoder on 2b - 1,
    log p(b) and log q(b|x) from the logits; chunking changes nothing."""
    m = _papers_model(tiny)
    with torch.no_grad():
        m.prior_logits.normal_()
    batch = tiny.split("train")
    got = single_sample_elbo(m, batch, torch.Generator().manual_seed(5))
    chunked = single_sample_elbo(m, batch, torch.Generator().manual_seed(5), rows=3)
    enc = [l for l in m.encoder.modules() if isinstance(l, nn.Linear)][0]
    dec = [l for l in m.decoder.modules() if isinstance(l, nn.Linear)][0]
    with torch.no_grad():
        a = enc(batch.x - m.input_mean)                                       # (B, D)
        logq = torch.stack([F.logsigmoid(-a), F.logsigmoid(a)], -1)
        u = torch.rand((1, *logq.shape), generator=torch.Generator().manual_seed(5))
        u = u.clamp_(torch.finfo(u.dtype).tiny, 1.0)
        b = (logq + -torch.log(-torch.log(u))).argmax(-1)[0].float()         # (B, D)
        l = dec(2 * b - 1)
        x = batch.x
        log_px = (x * F.logsigmoid(l) + (1 - x) * F.logsigmoid(-l)).sum(-1)
        pr = m.prior_logits
        log_pb = (b * F.logsigmoid(pr) + (1 - b) * F.logsigmoid(-pr)).sum(-1)
        log_qb = (b * F.logsigmoid(a) + (1 - b) * F.logsigmoid(-a)).sum(-1)
        want = (log_px + log_pb - log_qb).mean().item()
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert chunked == pytest.approx(got, rel=1e-6)


def test_trainset_elbo_is_logged_on_the_first_n_training_images():
    cfg = compose_config(["latent=bernoulli", "conditioning=none", "eval.train_elbo_size=100", *QUICK])
    logged = {}
    Trainer(cfg, log=lambda step, m: logged.update(m)).run()
    assert "trainset/elbo" in logged and math.isfinite(logged["trainset/elbo"])
    t = Trainer(cfg, log=lambda step, m: None)
    assert torch.equal(t.evaluator.trainset.x, t.task.split("train").x[:100])
    off = compose_config(["latent=bernoulli", "conditioning=none", *QUICK])
    assert Trainer(off, log=lambda step, m: None).evaluator.trainset is None


# -- RELAX at the papers' settings -----------------------------------------------

# DisARM's RELAX baseline (google-research/disarm/binary): networks.py
# get_relax_control_variate: c = scaling_factor * (f(sigmoid(z / temperature)) +
# control_nn([x, z])), z = logits + logit(u); the launcher's control network
# Dense(137, LeakyReLU(0.3)) -> Dense(1); log temperature from log(0.1), scaling
# factor from 1, both learned; the launcher's theta_optimizer trains them and the
# control network with Adam(infnet_lr, beta_1=0.999).
DISARM_RELAX = dict(use_f=True, eta_scales_net=True, net_input="perturbed", hidden=137, layers=1,
                    activation="leaky_relu", tau=0.1, eta=1.0)


def _stage_relax_overrides() -> dict:
    text = (ROOT / "results" / "reproduce.sh").read_text()
    line = re.search(r'^RELAX_PAPER="([^"]*)"', text, re.M).group(1)
    return dict(kv.split("=", 1) for kv in line.split())


def test_relax_in_the_study_is_disarms_relax():
    """The stage's RELAX overrides are DISARM_RELAX (and the model's context is
    x itself, the control network's input), and build the network the source has,
    trained by an Adam with the source's beta_1."""
    over = _stage_relax_overrides()
    assert over.pop("estimator") == "relax" and over.pop("model.context") == "input"
    assert over.pop("train.estimator_beta1") == "0.999"
    opts = {k.split(".", 1)[1]: v for k, v in over.items()}
    want = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in DISARM_RELAX.items()}
    assert opts == want
    est = estimators.build("relax", **DISARM_RELAX)
    est(torch.zeros(2, 200, 2), lambda z: z[..., 1].sum((-1,)).expand(z.shape[0], 2),
        torch.zeros(2, 784))
    first, act, last = est.net
    assert first.weight.shape == (137, 200 + 784) and last.weight.shape == (1, 137)
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.3
    assert est.log_tau.exp().item() == pytest.approx(0.1) and est.eta.item() == 1.0


def test_estimator_beta1_reaches_the_estimators_adam_only():
    """train.estimator_beta1 sets beta_1 of the Adam over the estimator's own
    parameters (RELAX's control variate), not the model's; at its default it
    leaves config_hash as it was before the key existed."""
    from omegaconf import OmegaConf
    from bench.config.validate import ConfigError, validate
    from bench.tracking.identity import config_hash
    over = ["latent=bernoulli", "conditioning=none", "estimator=relax", *QUICK]
    cfgs = {b: compose_config(over + ([f"train.estimator_beta1={b}"] if b else []))
            for b in (None, 0.9, 0.999)}
    t = Trainer(cfgs[0.999], log=lambda step, m: None)
    assert t.est_opt.param_groups[0]["betas"] == (0.999, 0.999)
    assert t.opt.param_groups[0]["betas"] == (0.9, 0.999)
    h = {b: config_hash(OmegaConf.to_container(c)) for b, c in cfgs.items()}
    assert h[None] == h[0.9] != h[0.999]
    with pytest.raises(ConfigError, match="train.estimator_beta1"):
        validate(compose_config(over + ["train.estimator_beta1=1.0"]))
