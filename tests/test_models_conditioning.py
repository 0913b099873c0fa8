"""Conditioning modules: zero-initialised FiLM is the identity, the condition
matters once trained, unsupported combinations are refused."""
import pytest
import torch

import models
from models import conditioning as cond
from models.layers import Block, CondMLP

DT = torch.float64




def test_registry_and_support():
    assert {"add", "concat", "film", "prefix", "xattn", "adaln", "spatial_concat"} <= set(cond.names())
    assert cond.supported("image") == ["add", "concat", "film", "none"]
    assert cond.supported("sequence") == ["add", "concat", "film", "prefix", "xattn"]
    with pytest.raises(ValueError, match=r"supported: \['add', 'concat', 'film', 'none'\]"):
        cond.check("xattn", "image")
    with pytest.raises(ValueError, match="valid names"):
        cond.get("gate")


def test_film_mlp_at_init_equals_unconditioned_network():
    torch.manual_seed(0)
    film = CondMLP(6, 16, 3, n_layers=3, conditioning="film", d_cond=5).to(DT)
    plain = CondMLP(6, 16, 3, n_layers=3, conditioning=None).to(DT)
    missing, unexpected = plain.load_state_dict(film.state_dict(), strict=False)
    assert not missing and all(k.startswith("mods.") for k in unexpected)
    h, c = torch.randn(4, 6, dtype=DT), torch.randn(4, 5, dtype=DT)
    assert torch.equal(film(h, c), plain(h))
    # ... and the FiLM maps still get a gradient, so the conditioning is learned
    film(h, c).pow(2).sum().backward()
    assert film.mods[0].proj.weight.grad.abs().sum() > 0


def test_film_block_at_init_equals_unconditioned_block():
    torch.manual_seed(0)
    film = Block(8, 2, cond.get("film"), d_cond=5).to(DT)
    plain = Block(8, 2).to(DT)
    plain.load_state_dict(film.state_dict(), strict=False)
    h, c = torch.randn(3, 7, 8, dtype=DT), torch.randn(3, 5, dtype=DT)
    assert torch.allclose(film(h, cond=c), plain(h), atol=1e-12, rtol=0)


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("name", ["concat", "add", "film"])
def test_condition_changes_mlp_output(name):
    torch.manual_seed(0)
    net = CondMLP(6, 16, 3, conditioning=name, d_cond=5).to(DT)
    _perturb(net)                           # film starts as the identity
    h = torch.randn(4, 6, dtype=DT)
    c1, c2 = torch.randn(2, 4, 5, dtype=DT)
    assert not torch.allclose(net(h, c1), net(h, c2))


def test_module_shapes():
    h, c = torch.randn(2, 7, 8), torch.randn(2, 5)
    assert cond.get("concat")(8, 5, 6)(h, c).shape == (2, 7, 6)
    assert cond.get("add")(8, 5)(h, c).shape == (2, 7, 8)
    assert cond.get("film")(8, 5)(h, c).shape == (2, 7, 8)
    assert cond.get("xattn")(8, 2)(h, torch.randn(2, 3, 8)).shape == (2, 7, 8)


@pytest.mark.parametrize("name", cond.names())
def test_hooks_of_each_type_build_for_its_families(name):
    """Every registered type builds the networks of each family it declares."""
    cls = cond.get(name)
    assert cls.families and cls.name == name
    if "image" in cls.families:
        net = CondMLP(6, 16, 3, conditioning=cls, d_cond=5)
        assert net(torch.randn(4, 6), torch.randn(4, 5)).shape == (4, 3)
    if "sequence" in cls.families:
        task = models.tasks.load("strategies", n_train=64, n_val=16, n_test=16)
        model = models.build(task, "categorical", name)
        batch = task.split("val")
        z = model.latent.sample(model.posterior(batch), 2)                # (2, B, D, K)
        assert model.log_likelihood(batch, z).shape == (2, batch.size)


def test_models_refuse_unsupported_conditioning():
    digits = models.tasks.load("digits")
    with pytest.raises(ValueError, match=r"supported: \['add', 'concat', 'film', 'none'\]"):
        models.build(digits, "categorical", "prefix")
    with pytest.raises(ValueError, match="valid names"):
        models.build(digits, "categorical", "cross")
