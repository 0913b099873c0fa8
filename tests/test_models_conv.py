"""The conv family (models.conv) through `models.build(..., family="conv")`:
shapes for every latent x conditioning x image size, the spatial latent's
sizes and refusals, zero-initialised adaLN equals the unconditioned network,
the label matters under each conditioning type, estimators that differentiate
twice run through it, and a short `train()` with `model.family=conv`."""
import itertools
import math

import pytest
import torch

import estimators
import models
from bench.job.objective import objective
from models import conditioning as cond
from models.conv_blocks import ConvDecoder, ConvEncoder
from models.data import Batch
from models.latents import Categorical
from models.tasks.images import image_task
from tests.compose import compose_config

DT = torch.float64
SMALL = dict(width=8, d_cond=8, groups=4)
CONV = ["adaln", "spatial_concat"]


def synthetic_task(H: int = 28, n: int = 96, seed: int = 0, name: str = "synth28"):
    g = torch.Generator().manual_seed(seed)
    pixels, labels = torch.rand(n, H * H, generator=g), torch.arange(n) % 10
    idx = torch.randperm(n, generator=g)
    splits = {"train": idx[: n // 2], "val": idx[n // 2: 3 * n // 4], "test": idx[3 * n // 4:]}
    return image_task(name, pixels, labels, splits, (H, H), "static", 0.5, "cpu", seed, n_classes=10)


@pytest.fixture(scope="module")
def tasks():
    return {"digits": models.tasks.load("digits", binarize="static"), "synth28": synthetic_task()}


def _make(task, latent, conditioning, **opts):
    torch.manual_seed(0)
    return models.build(task, latent, conditioning, family="conv", **{**SMALL, **opts}).to(DT)


def _batch(task, B=5):
    b = task.sample("train", B, task.generator(0))
    return Batch(b.x.to(DT), b.c, b.truth)


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("task_name, latent, conditioning",
                         list(itertools.product(["digits", "synth28"], ["categorical", "gaussian"], CONV)))
def test_shapes_and_gradients(tasks, task_name, latent, conditioning):
    task = tasks[task_name]
    model = _make(task, latent, conditioning, learned_prior=True)
    positions = {"digits": 2 * 2, "synth28": 7 * 7}[task_name]
    want = (positions, 10) if latent == "categorical" else (4 * positions, 2)
    assert model.latent.param_shape == want
    b = _batch(task)
    q, p = model.posterior(b), model.prior(b)
    assert q.shape == p.shape == (5, *want)
    z = model.latent.sample(q, 3)
    if latent == "categorical":             # soft (relaxed) samples pass as well
        z = torch.softmax(q.unsqueeze(0) + torch.randn(3, *q.shape, dtype=DT), -1)
    ll = model.log_likelihood(b, z)
    assert ll.shape == (3, 5) and torch.isfinite(ll).all()
    assert model.decode_mean(b, z).shape == (3, 5, task.spec["n_pixels"])
    assert model.context(b).shape == (5, 2 * SMALL["width"])
    ll.sum().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert all(n.startswith(("enc_label", "encoder", "enc_head")) for n, _ in model.named_parameters()
               if any(n.startswith(k) for k in model.posterior_parameter_names()))


def test_default_latent_follows_the_spatial_latent(tasks):
    assert models.default_latent(tasks["digits"], "categorical", family="conv").param_shape == (4, 10)
    assert models.default_latent(tasks["synth28"], "gaussian", family="conv").D == 4 * 49
    # the MLP family's defaults are unchanged
    assert models.default_latent(tasks["digits"], "categorical").param_shape == (8, 10)
    assert models.default_latent(tasks["digits"], "categorical", family="mlp").param_shape == (8, 10)


def test_a_latent_that_does_not_fit_the_map_is_refused(tasks):
    digits = tasks["digits"]
    with pytest.raises(ValueError, match=r"latent\.D=3 is not valid .* latent\.D=4"):
        models.build(digits, models.latents.build("categorical", D=3, K=4), "adaln", family="conv")
    with pytest.raises(ValueError, match=r"latent\.D=6 is not valid .*C\*4 \(default 16\)"):
        models.build(digits, models.latents.build("gaussian", D=6), "adaln", family="conv")
    # the harness's digits sizes (D=3, K=4) with the latent.D the conv model asks for
    assert models.build(digits, models.latents.build("categorical", D=4, K=4), "adaln",
                        family="conv", **SMALL).latent.param_shape == (4, 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        models.build(synthetic_task(H=10), "categorical", "adaln", family="conv")


def test_unsupported_pairs_are_refused_naming_the_valid_ones(tasks):
    digits = tasks["digits"]
    assert cond.supported("conv") == ["adaln", "spatial_concat"]
    with pytest.raises(ValueError, match=r"supported: \['adaln', 'spatial_concat'\]"):
        models.build(digits, "categorical", "film", family="conv")
    with pytest.raises(ValueError, match=r"supported: \['add', 'concat', 'film', 'none'\]"):
        models.build(digits, "categorical", "adaln", family="mlp")
    with pytest.raises(ValueError, match=r"family='conv' is not valid for task 'strategies'; "
                                         r"valid values: \['sequence'\]"):
        models.build(models.tasks.load("strategies", n_train=8, n_val=8, n_test=8), "categorical",
                     "film", family="conv")
    with pytest.raises(ValueError, match=r"valid values: \['conv', 'mlp'\]"):
        models.build(digits, "categorical", "film", family="resnet")


def test_mlp_is_the_default_family_and_unchanged(tasks):
    digits = tasks["digits"]
    torch.manual_seed(0)
    a = models.build(digits, "categorical", "film")
    torch.manual_seed(0)
    b = models.build(digits, "categorical", "film", family="mlp")
    assert type(a) is type(b) and a.family == "image"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("net", [ConvEncoder, ConvDecoder])
def test_zero_initialised_adaln_equals_the_unconditioned_network(net):
    torch.manual_seed(0)
    widths = (8, 16, 16)
    ada = net(widths, 2, cond.get("adaln"), 5, 4, 2).to(DT)
    plain = net(widths, 2, None, 5, 4, 2).to(DT)
    missing, unexpected = plain.load_state_dict(ada.state_dict(), strict=False)
    assert not missing and unexpected and all(".mod" in k for k in unexpected)
    h = torch.randn(3, 1 if net is ConvEncoder else 16, 8, 8, dtype=DT)
    c = torch.randn(3, 5, dtype=DT)
    assert torch.equal(ada(h, c), plain(h, None))
    ada(h, c).pow(2).sum().backward()       # ... and the modulation still learns
    assert ada.blocks[0].mod1.proj.weight.grad.abs().sum() > 0


def test_adaln_model_ignores_the_label_at_initialisation(tasks):
    model = _make(tasks["digits"], "gaussian", "adaln")
    b = _batch(tasks["digits"])
    other = Batch(b.x, (b.c + 1) % 10, None)
    z = model.latent.sample(model.posterior(b), 2)
    assert torch.equal(model.log_likelihood(b, z), model.log_likelihood(other, z))
    assert torch.equal(model.posterior(b), model.posterior(other))


@pytest.mark.parametrize("latent, conditioning", list(itertools.product(["categorical", "gaussian"], CONV)))
def test_the_label_changes_the_output(tasks, latent, conditioning):
    task = tasks["digits"]
    model = _make(task, latent, conditioning)
    _perturb(model)                          # adaln starts label-blind
    b = _batch(task)
    other = Batch(b.x, (b.c + 3) % 10, None)
    z = model.latent.sample(model.posterior(b), 2)
    assert not torch.allclose(model.log_likelihood(b, z), model.log_likelihood(other, z))
    assert not torch.allclose(model.posterior(b), model.posterior(other))
    unconditioned = _make(task, latent, conditioning, encoder_conditioned=False)
    assert torch.equal(unconditioned.posterior(b), unconditioned.posterior(other))


def test_gaussian_likelihood_is_squared_error(tasks):
    task = tasks["digits"]
    model = _make(task, "gaussian", "adaln", likelihood="gaussian", sigma=0.5)
    b = _batch(task)
    z = model.latent.sample(model.posterior(b), 2)
    mean = model.decode_mean(b, z)
    want = torch.distributions.Normal(mean, 0.5).log_prob(b.x.expand_as(mean)).sum(-1)
    assert torch.allclose(model.log_likelihood(b, z), want)
    with pytest.raises(ValueError, match="likelihood='poisson' is not valid"):
        _make(task, "gaussian", "adaln", likelihood="poisson")


@pytest.mark.parametrize("conditioning", CONV)
def test_a_z_shared_by_the_batch_is_decoded_once_per_label(tasks, conditioning):
    """The exact estimator hands every example the same z (a stride-0 batch
    axis); the decoder then runs once per class and gathers the rows by label
    (no torch.unique: a host sync on a GPU, tests/test_device_placement.py).
    The likelihood and the exact gradient are those of decoding every row, and
    latent dropout (a draw per row) or a z with a gradient keep every row."""
    task = tasks["digits"]
    model = _make(task, Categorical(D=4, K=3), conditioning, latent_dropout=0.5)
    _perturb(model)
    b = _batch(task, B=12)                                # labels 0..9 and two repeats
    rows = []
    model.decoder.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    configs = torch.eye(3, dtype=DT)[torch.randint(0, 3, (6, 4))]     # (S, D, K)
    shared = configs.unsqueeze(1).expand(6, b.size, 4, 3)              # (S, B, D, K), stride 0
    model.eval()
    ll = model.log_likelihood(b, shared)
    assert rows == [6 * task.spec["n_classes"]] and task.spec["n_classes"] < b.size
    assert torch.allclose(ll, model.log_likelihood(b, shared.contiguous()), atol=1e-12)
    assert rows[-1] == 6 * b.size
    model.train()                                         # dropout draws per row
    model.log_likelihood(b, shared)
    assert rows[-1] == 6 * b.size
    model.eval()
    model.log_likelihood(b, shared.clone().requires_grad_().expand_as(shared))
    assert rows[-1] == 6 * b.size
    exact = estimators.build("exact")
    grads = []
    for z_view in (lambda z: z, lambda z: z.contiguous()):   # shared, then every row
        decode = model.log_likelihood
        out = exact(model.posterior(b), lambda z: decode(b, z_view(z)))
        grads.append(torch.autograd.grad(out.loss, list(model.encoder.parameters())))
    assert all(torch.allclose(g, h, atol=1e-12) for g, h in zip(*grads))


@pytest.mark.parametrize("name", ["rebar", "relax", "reparam"])
def test_estimators_run_through_the_conv_family(tasks, name):
    """REBAR and RELAX differentiate their own gradient through the decoder
    (GroupNorm, attention, convolutions): second derivatives must exist."""
    est = estimators.build(name)
    task = tasks["digits"]
    torch.manual_seed(0)
    model = models.build(task, est.latent, "adaln", family="conv", **SMALL)
    b = task.sample("train", 4, task.generator(0))
    out = objective(model, est, b, 1.0)
    loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
    loss.backward()
    assert torch.isfinite(out.loss)
    assert model.enc_head.layer.weight.grad.abs().sum() > 0


def test_train_end_to_end_with_the_conv_family(tmp_path, monkeypatch):
    """Samples are opt-in and draw nothing from training's RNG: with and
    without them the run's other metrics are identical."""
    from bench.job.train import train
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    quick = ["model.family=conv", "latent.D=4", "conditioning=adaln", "+model.width=8",
             "train.steps=6", "train.eval_every=3", "train.log_every=3", "train.batch_size=16",
             "eval.batch_size=32", "eval.iwae_samples=4", "eval.grad_samples=4",
             "eval.grad_batch_size=8", "eval.samples_per_class=2", "eval.classifier_steps=50", "device=cpu"]
    logged, files = [], []
    final = train(compose_config(quick + ["eval.samples=true"]), log=lambda step, m: logged.append(step),
                  artifact=lambda path, folder: files.append((path.name, folder, path.is_file())))
    assert logged == [0, 3, 6]
    assert {"val/elbo", "gen/class_accuracy", "gen/classifier_accuracy", "grad/log10_var"} <= set(final)
    assert all(folder == "samples" and ok for _, folder, ok in files)
    names = {name for name, _, _ in files}
    per_eval = ("class_samples", "vary_class", "reconstructions")     # every evaluation
    final_only = ("named_class_samples", "named_vary_class", "interpolation", "class_blend",
                  "latent_tsne")                                     # the last one: models.pictures
    assert names == {f"step{s:07d}_{k}.png" for s in (0, 3, 6) for k in per_eval} | \
        {f"step0000006_{k}.png" for k in final_only}
    plain = train(compose_config(quick), log=lambda step, m: None)
    assert not any(k.startswith("gen/") for k in plain)
    assert {k: v for k, v in final.items() if k in plain and not k.startswith(("perf/", "grad/sec"))} == \
        {k: v for k, v in plain.items() if not k.startswith(("perf/", "grad/sec"))}


def test_grey_levels_with_the_gaussian_likelihood(tmp_path, monkeypatch):
    """binarize=none keeps the grey levels (non-binary values in [0, 1]), and
    the conv family's fixed-variance Gaussian likelihood trains on them:
    beta (kl.beta) is the knob that weighs the KL against the squared error."""
    from bench.job.train import train
    grey = models.tasks.load("digits", binarize="none")
    x = grey.split("train").x
    assert ((x > 0) & (x < 1)).any() and x.min() >= 0 and x.max() <= 1
    assert torch.equal(grey.sample("train", 8, grey.generator(0)).x,
                       grey.sample("train", 8, grey.generator(0)).x)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    cfg = ["model.family=conv", "+model.likelihood=gaussian", "+model.sigma=0.1", "+model.width=8",
           "task.binarize=none", "latent=gaussian", "latent.D=16", "estimator=reparam", "kl.beta=0.5",
           "conditioning=spatial_concat", "train.steps=4", "train.eval_every=4", "train.log_every=2",
           "train.batch_size=16", "eval.batch_size=32", "eval.iwae_samples=2", "eval.grad_samples=2",
           "eval.grad_batch_size=8", "device=cpu"]
    final = train(compose_config(cfg), log=lambda step, m: None)
    assert all(math.isfinite(final[k]) for k in ("val/elbo", "val/recon", "val/kl"))


def test_unknown_binarisation_names_the_choices():
    with pytest.raises(ValueError, match="none"):
        models.tasks.load("digits", binarize="grey")
