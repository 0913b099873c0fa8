"""Model families through `models.build`: shapes for every (family, latent,
conditioning) combination, the condition and z matter, soft and
straight-through z, latent dropout, option errors, the toy's exact gradient."""
import itertools

import pytest
import torch

import models
from models.data import Batch

DT = torch.float64




@pytest.fixture(scope="module")
def digits():
    return models.tasks.load("digits", binarize="static")


@pytest.fixture(scope="module")
def strat():
    return models.tasks.load("strategies", length=5, vocab=6, strategies=3,
                             n_train=64, n_val=32, n_test=8)


LATENTS = {"categorical": dict(D=3, K=4), "gaussian": dict(D=3)}
SMALL = {"image": dict(hidden=16, d_cond=8), "sequence": dict(d_model=16, n_heads=2)}
COMBOS = ([("image", l, c) for l, c in itertools.product(LATENTS, ["concat", "add", "film"])] +
          [("sequence", l, c) for l, c in itertools.product(LATENTS, ["prefix", "xattn", "film", "add", "concat"])])


def _make(task, latent, conditioning, **opts):
    torch.manual_seed(0)
    lat = models.latents.build(latent, **LATENTS[latent])
    return models.build(task, lat, conditioning, **{**SMALL[task.family], **opts}).to(DT)


def _batch(task, B=6):
    b = task.sample("train", B, task.generator(0))
    return Batch(b.x.to(DT) if b.x.is_floating_point() else b.x, b.c, b.truth)


def _z(model, batch, S):
    return model.latent.sample(model.posterior(batch), S)


@pytest.mark.parametrize("family, latent, conditioning", COMBOS)
def test_shapes_and_gradients(digits, strat, family, latent, conditioning):
    task = digits if family == "image" else strat
    model = _make(task, latent, conditioning)
    batch = _batch(task)
    q, p = model.posterior(batch), model.prior(batch)
    want = (6, 3, 4) if latent == "categorical" else (6, 3, 2)
    assert q.shape == want and p.shape == want and q.dtype == DT
    z = model.latent.sample(q, 2)
    ll = model.log_likelihood(batch, z)
    assert ll.shape == (2, 6) and torch.isfinite(ll).all() and (ll < 0).all()
    ctx = model.context(batch)
    assert ctx.dim() == 2 and ctx.shape[0] == 6 and not ctx.requires_grad
    loss = -ll.mean() + model.latent.kl(q, p).sum(-1).mean() - model.latent.log_prob(q, z.detach()).mean()
    loss.backward()
    grads = {n for n, prm in model.named_parameters() if prm.grad is not None and prm.grad.abs().sum() > 0}
    assert any(n.startswith("encoder") for n in grads)
    assert any(n.startswith(("decoder", "blocks")) for n in grads)


@pytest.mark.parametrize("family, latent, conditioning", COMBOS)
def test_z_and_condition_change_the_likelihood(digits, strat, family, latent, conditioning):
    task = digits if family == "image" else strat
    model = _make(task, latent, conditioning)
    with torch.no_grad():                    # leave the identity initialisation of film
        for prm in model.parameters():
            prm.add_(0.2 * torch.randn_like(prm))
    batch = _batch(task)
    z = _z(model, batch, 1)
    base = model.log_likelihood(batch, z)
    if family == "image":
        other = Batch(batch.x, (batch.c + 1) % 10, None)
    else:
        other = Batch(batch.x, batch.c.flip(0), batch.truth)
    assert not torch.allclose(model.log_likelihood(other, z), base)
    z2 = model.latent.sample(model.prior(batch), 1) if latent == "categorical" else z + 1.0
    assert not torch.allclose(model.log_likelihood(batch, z2), base)


@pytest.mark.parametrize("family, conditioning", [("image", "film"), ("sequence", "prefix"),
                                                  ("sequence", "xattn")])
def test_soft_and_straight_through_z(digits, strat, family, conditioning):
    # (sequence + film ignores z exactly at initialisation: zero FiLM maps, zero gradient)
    task = digits if family == "image" else strat
    model = _make(task, "categorical", conditioning)
    batch = _batch(task)
    logits = model.posterior(batch)
    soft = torch.softmax((logits + torch.rand_like(logits)) / 0.5, -1).expand(2, *logits.shape)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), 4).to(DT)
    st = hard + soft - soft.detach()                         # straight-through
    ll_soft, ll_st = model.log_likelihood(batch, soft), model.log_likelihood(batch, st)
    assert ll_soft.shape == ll_st.shape == (2, 6)
    assert torch.allclose(ll_st, model.log_likelihood(batch, hard))
    g_soft, = torch.autograd.grad(ll_soft.sum(), logits, retain_graph=True)
    g_st, = torch.autograd.grad(ll_st.sum(), logits)
    assert g_soft.abs().sum() > 0 and g_st.abs().sum() > 0


@pytest.mark.parametrize("family", ["image", "sequence"])
def test_latent_dropout_in_training_mode_only(digits, strat, family):
    task = digits if family == "image" else strat
    model = _make(task, "categorical", "prefix" if family == "sequence" else "concat", latent_dropout=1.0)
    batch = _batch(task)
    z1, z2 = _z(model, batch, 1), torch.roll(_z(model, batch, 1), 1, -1)
    model.train()
    assert torch.equal(model.log_likelihood(batch, z1), model.log_likelihood(batch, z2))
    model.eval()
    assert not torch.allclose(model.log_likelihood(batch, z1), model.log_likelihood(batch, z2))


def test_priors(digits, strat):
    b = _batch(digits)
    fixed = _make(digits, "categorical", "film")
    assert torch.equal(fixed.prior(b), torch.zeros(6, 3, 4, dtype=DT))
    learned = _make(digits, "gaussian", "film", learned_prior=True)
    assert learned.prior(b).shape == (6, 3, 2)
    assert sum(p.numel() for p in learned.parameters()) > sum(p.numel() for p in _make(digits, "gaussian", "film").parameters())
    s = _batch(strat)
    router = _make(strat, "categorical", "xattn")
    assert torch.equal(router.prior(s), torch.zeros(6, 3, 4, dtype=DT))   # zero-initialised router
    assert router.prior(s).requires_grad
    assert not _make(strat, "gaussian", "film", learned_prior=False).prior(s).requires_grad


def test_unconditioned_encoder_ignores_the_condition(digits, strat):
    for task, other in ((digits, lambda b: Batch(b.x, (b.c + 1) % 10, None)),
                        (strat, lambda b: Batch(b.x, b.c.flip(0), b.truth))):
        model = _make(task, "categorical", "concat", encoder_conditioned=False)
        b = _batch(task)
        assert torch.equal(model.posterior(b), model.posterior(other(b)))


@pytest.mark.parametrize("opts, key", [({"hiden": 3}, "hidden"), ({"latent_dropout": 1.5}, "latent_dropout"),
                                       ({"learned_prior": "yes"}, "learned_prior"), ({"n_layers": 0}, "n_layers")])
def test_bad_image_options(digits, opts, key):
    with pytest.raises(ValueError, match=key):
        models.build(digits, "categorical", **opts)


def test_bad_sequence_options(strat):
    with pytest.raises(ValueError, match="n_heads"):
        models.build(strat, "categorical", "prefix", d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="valid options"):
        models.build(strat, "categorical", "prefix", hidden=3)
    assert models.options(strat)["d_model"] == 64 and models.options("image")["hidden"] == 128


def test_posterior_parameter_names(digits, strat):
    for model, want in ((_make(digits, "categorical", "film"), ["enc_label.", "encoder."]),
                        (_make(strat, "gaussian", "xattn"), ["encoder.", "enc_head."])):
        assert model.posterior_parameter_names() == want
        # the posterior depends on those parameters only
        q = model.posterior(_batch(digits if model.family == "image" else strat))
        names = [n for n, p in model.named_parameters()
                 if torch.autograd.grad(q.sum(), p, retain_graph=True, allow_unused=True)[0] is not None]
        assert all(n.startswith(tuple(want)) for n in names) and names
    toy = models.build(models.tasks.load("toy"), "categorical")
    assert toy.posterior_parameter_names() == ["theta"]


def test_wrong_z_shape_is_refused(digits):
    model = _make(digits, "categorical", "film")
    with pytest.raises(ValueError, match="z must have shape"):
        model.log_likelihood(_batch(digits), torch.zeros(1, 6, 3, 5, dtype=DT))


def test_defaults_by_name(digits, strat):
    m = models.build(digits)
    assert m.conditioning == "film" and m.latent.param_shape == (8, 10)
    assert m.config.hidden == 128
    s = models.build(strat, "gaussian", "prefix")
    assert s.latent.param_shape == (8, 2)


# -- toy ----------------------------------------------------------------------

@pytest.mark.parametrize("t, theta", [(0.45, 0.0), (0.499, 1.3), (0.2, -0.7)])
def test_toy_exact_grad_matches_autograd_on_enumeration(t, theta):
    task = models.tasks.load("toy", t=t, D=2)
    model = models.build(task, "categorical", init=theta).to(DT)
    batch = task.sample("train", 3)
    logits = model.posterior(batch)
    assert logits.shape == (3, 2, 2) and model.prior(batch) is None
    z = torch.nn.functional.one_hot(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]), 2).to(DT)
    z = z.unsqueeze(1).expand(4, 3, 2, 2)                                     # every joint value
    weights = model.latent.log_prob(logits, z).exp()                          # (4, 3)
    objective = (weights * model.log_likelihood(batch, z)).sum(0).mean()
    assert torch.allclose(objective, model.exact_objective())
    objective.backward()
    assert torch.allclose(model.theta.grad, model.exact_grad())
    assert (model.exact_grad() < 0).all() == (t < 0.5)     # maximising: push b towards 0 when t < 1/2


def test_toy_refuses_wrong_latent():
    task = models.tasks.load("toy")
    with pytest.raises(ValueError, match="K=2"):
        models.build(task, models.latents.build("categorical", D=1, K=3))
