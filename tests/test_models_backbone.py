"""The shared backbone of the sequence CVAE (`backbone=shared`, models.backbone):
frozen and LoRA modes train only what they should, a zero adapter changes
nothing, router and inference network read the right spans, checkpoints
round-trip and mismatches are named, every conditioning type runs, bad
options raise; end to end: bench.pretrain then a CVAE run that loads it."""
from __future__ import annotations

import pytest
import torch

import models
from models import backbone as bb
from models.data import Batch
from models.lora import LoRALinear, adapter_parameters

SMALL = dict(d_model=16, n_heads=2, n_layers=2)
SEQ_TYPES = [c for c in models.conditioning.names() if "sequence" in models.conditioning.get(c).families]


@pytest.fixture(scope="module")
def strat():
    return models.tasks.load("strategies", length=5, vocab=6, strategies=3,
                             n_train=64, n_val=32, n_test=8)


def _base(task, path, seed=1, room=16, **over):
    """A random 'pretrained' backbone checkpoint for `task` at `path`."""
    torch.manual_seed(seed)
    spec = {**SMALL, **over}
    s = task.spec
    net = bb.Backbone(over.get("vocab_size", s["vocab_size"]), s["context_length"] + s["length"] + 5 + room,
                      spec["d_model"], spec["n_heads"], spec["n_layers"], 2)
    return bb.save_checkpoint(net, path)


def _model(task, conditioning="film", latent="categorical", seed=0, **opts):
    torch.manual_seed(seed)
    sizes = dict(D=2, K=3) if latent == "categorical" else dict(D=2)
    lat = models.latents.build(latent, **sizes)
    return models.build(task, lat, conditioning, backbone="shared", **{**SMALL, **opts})


def _batch(task, B=6):
    return task.sample("train", B, task.generator(0))


def _train(model, task, steps=3):
    """A few Adam steps on -ELBO, over model.parameters() as bench.job.train does."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = task.generator(1)
    for _ in range(steps):
        b = task.sample("train", 8, gen)
        q, p = model.posterior(b), model.prior(b)
        z = model.latent.sample(q, 2)
        loss = -model.log_likelihood(b, z).mean() + model.latent.kl(q, p).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_frozen_and_lora_leave_every_base_weight_unchanged(strat, tmp_path, mode):
    model = _model(strat, "film", backbone_mode=mode, base=str(_base(strat, tmp_path / "b.pt")))
    before = _snapshot(model)
    _train(model, strat)
    after = _snapshot(model)
    base = {f"backbone.{n}" for n, _ in model.backbone.named_parameters() if model.backbone.is_base(n)}
    assert base and all(not dict(model.named_parameters())[n].requires_grad for n in base)
    assert all(torch.equal(before[n], after[n]) for n in base)
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and not moved & base
    # heads, the latent slots and the conditioning modules (FiLM) train in both modes
    for part in ("enc_head.", "router.", "z_table", "backbone.blocks.0.mod1."):
        assert any(n.startswith(part) for n in moved), part
    adapters = {f"backbone.{n}" for n, _ in adapter_parameters(model.backbone)}
    assert bool(adapters) == (mode == "lora")
    assert adapters <= moved or not adapters


def test_zero_lora_leaves_the_base_models_outputs_unchanged(strat, tmp_path):
    base = str(_base(strat, tmp_path / "b.pt"))
    full = _model(strat, "prefix", base=base).double()
    lora = _model(strat, "prefix", base=base, backbone_mode="lora", lora_rank=4).double()
    b = _batch(strat)
    z = full.latent.sample(full.posterior(b), 3)
    assert torch.equal(full.posterior(b), lora.posterior(b))
    assert torch.equal(full.prior(b), lora.prior(b))
    assert torch.equal(full.log_likelihood(b, z), lora.log_likelihood(b, z))
    # and the adapter is live: a non-zero B changes the outputs
    with torch.no_grad():
        for name, p in adapter_parameters(lora.backbone):
            if name.endswith("lora_B"):
                p.normal_()
    assert not torch.allclose(full.log_likelihood(b, z), lora.log_likelihood(b, z))


def test_lora_linear_is_the_base_plus_a_scaled_low_rank_update():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 7)
    h = torch.randn(3, 5)
    ad = LoRALinear(lin, rank=2, alpha=4.0)
    assert torch.equal(ad(h), lin(h)) and not lin.weight.requires_grad
    with torch.no_grad():
        ad.lora_B.normal_()
    assert torch.allclose(ad(h), h @ ad.merged_weight().T + lin.bias, atol=1e-6)


def test_router_reads_x_alone_and_inference_reads_x_and_y(strat):
    model = _model(strat, "xattn").double()
    with torch.no_grad():   # the router's last layer starts at zero (uniform prior): move it
        model.router[-1].weight.normal_()
    b = _batch(strat)
    V0 = strat.spec["vocab_size"] - strat.spec["n_symbols"]
    last_y = b.x.clone()
    last_y[:, -1] = V0 + (b.x[:, -1] - V0 + 1) % strat.spec["n_symbols"]
    only_y = Batch(last_y, b.c, b.truth)               # differs in the last target token only
    assert torch.equal(model.prior(b), model.prior(only_y))
    assert not torch.allclose(model.posterior(b), model.posterior(only_y))
    other_x = Batch(b.x, b.c.flip(0), b.truth)
    assert not torch.allclose(model.prior(b), model.prior(other_x))
    # encoder_conditioned=False: q(z | y) ignores x
    qy = _model(strat, "xattn", encoder_conditioned=False).double()
    assert torch.equal(qy.posterior(b), qy.posterior(other_x))


def test_checkpoint_round_trips(strat, tmp_path):
    path = _base(strat, tmp_path / "b.pt", seed=3)
    ckpt = bb.load_checkpoint(str(path))
    model = _model(strat, "film", base=str(path))
    P = model.backbone.spec["positions"]
    for n, t in model.backbone.base_state_dict().items():
        want = ckpt["state"][n][:P] if n == "pos.weight" else ckpt["state"][n]
        assert torch.equal(t, want), n
    again = bb.save_checkpoint(model.backbone, tmp_path / "again.pt")
    assert bb.load_checkpoint(str(again))["spec"] == model.backbone.spec
    # a LoRA model saves its base under adapter-free names
    lora = _model(strat, "film", base=str(path), backbone_mode="lora")
    assert set(lora.backbone.base_state_dict()) == set(model.backbone.base_state_dict())


@pytest.mark.parametrize("what, over", [("width", dict(d_model=8)), ("vocabulary", dict(vocab_size=40)),
                                        ("layers", dict(n_layers=3)), ("positions", dict(room=0))])
def test_mismatched_checkpoint_names_what_differs(strat, tmp_path, what, over):
    path = _base(strat, tmp_path / "b.pt", **over)
    with pytest.raises(ValueError, match=what):
        _model(strat, "film", base=str(path), backbone_mode="frozen")


def test_missing_or_foreign_checkpoint(strat, tmp_path):
    with pytest.raises(ValueError, match="no such checkpoint"):
        _model(strat, base=str(tmp_path / "nope.pt"))
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a backbone checkpoint"):
        _model(strat, base=str(tmp_path / "foreign.pt"))


@pytest.mark.parametrize("latent", ["categorical", "gaussian"])
@pytest.mark.parametrize("conditioning", SEQ_TYPES)
def test_every_conditioning_type_runs_on_the_shared_backbone(strat, conditioning, latent):
    model = _model(strat, conditioning, latent).double()
    b = _batch(strat)
    q, p = model.posterior(b), model.prior(b)
    z = model.latent.sample(q, 2)
    ll = model.log_likelihood(b, z)
    assert ll.shape == (2, 6) and torch.isfinite(ll).all() and (ll < 0).all()
    (ll.sum() + q.sum() + p.sum()).backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.context(b).shape == (6, SMALL["d_model"])


def test_trainable_parameters_by_mode(strat, tmp_path):
    base = str(_base(strat, tmp_path / "b.pt"))
    n = {m: _model(strat, "film", base=base, backbone_mode=m).trainable_parameters()
         for m in ("frozen", "lora", "full")}
    full = _model(strat, "film", base=base)
    assert n["full"] == sum(p.numel() for p in full.parameters())
    assert n["frozen"] < n["lora"] < n["full"]
    d, r, L = SMALL["d_model"], 8, SMALL["n_layers"]
    # rank r adapters on qkv (d -> 3d), out (d -> d), mlp (d -> 2d, 2d -> d)
    assert n["lora"] - n["frozen"] == L * r * ((d + 3 * d) + (d + d) + (d + 2 * d) + (2 * d + d))


@pytest.mark.parametrize("opts, match", [
    (dict(backbone="tied"), "backbone='tied'.*separate"),
    (dict(backbone="shared", backbone_mode="half"), "backbone_mode='half'.*lora"),
    (dict(backbone="shared", lora_rank=0), "lora_rank"),
    (dict(backbone="shared", lora_alpha=0.0), "lora_alpha"),
    (dict(backbone="shared", backbone_mode="frozen"), "model.base"),
    (dict(backbone="shared", backbone_mode="lora"), "model.base"),
    (dict(backbone_mode="lora", base="x.pt"), "backbone=shared"),
])
def test_bad_options_raise(strat, opts, match):
    with pytest.raises(ValueError, match=match):
        models.build(strat, "categorical", "film", **opts)


def test_separate_stays_the_default(strat):
    assert models.options(strat)["backbone"] == "separate"
    model = models.build(strat, "categorical", "film")
    assert not hasattr(model, "backbone") and model.trainable_parameters() > 0


@pytest.mark.slow
def test_pretrain_then_a_cvae_run_loads_it(tmp_path, monkeypatch):
    from bench.config import compose, plain
    from bench.job.train import Trainer
    from bench.pretrain import pretrain
    from tests.stores import empty_db

    monkeypatch.chdir(tmp_path)                      # MLflow's artifacts go beside the store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_db(tmp_path))
    task = ["task=strategies", "++task.n_train=256", "++task.n_val=64", "device=cpu"]
    sizes = ["++model.d_model=16", "++model.n_heads=2", "++model.n_layers=1"]
    cfg = plain(compose(task + sizes + ["train.steps=20", "train.eval_every=10", "train.log_every=10"]))
    run_id, final = pretrain(cfg, out=tmp_path / "base.pt", max_slots=4)
    assert final["val/nll_token"] > 0 and final["val/nll_y"] > 0
    from mlflow.tracking import MlflowClient
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "pretrain"
    assert "val/nll_y" in run.data.metrics
    ckpt = bb.load_checkpoint(run_id)                # by run id, from the store
    assert ckpt["spec"] == bb.load_checkpoint(str(tmp_path / "base.pt"))["spec"]

    for base in (run_id, str(tmp_path / "base.pt")):
        seen = {}
        quick = ["train.steps=4", "train.eval_every=4", "train.log_every=2", "train.batch_size=8",
                 "eval.batch_size=16", "eval.iwae_samples=2", "eval.grad_samples=2",
                 "eval.grad_batch_size=4", "estimator=reinforce", "conditioning=prefix"]
        shared = ["++model.backbone=shared", "++model.backbone_mode=lora", f"++model.base={base}"]
        run_cfg = plain(compose(task + sizes + quick + shared))
        trainer = Trainer(run_cfg, log=lambda step, m: seen.update(m))
        net = trainer.model.backbone
        start = net.base_state_dict()
        for n, t in start.items():                   # the base is the pretrained one ...
            assert torch.equal(t, ckpt["state"][n][: len(t)] if n == "pos.weight" else ckpt["state"][n]), n
        result = trainer.run()
        assert "val/elbo" in result and torch.isfinite(torch.tensor(result["val/elbo"]))
        end = net.base_state_dict()                  # ... and the harness's Adam left it alone
        assert all(torch.equal(start[n], end[n]) for n in start)


def test_the_study_overlay_composes_into_valid_model_options(tmp_path):
    from tests.compose import compose_config
    cfg = compose_config(["experiment=backbone_study", "model.backbone=shared",
                          "model.backbone_mode=frozen", f"model.base={tmp_path / 'b.pt'}"])
    assert cfg.task.name == "strategies" and cfg.kl.name == "cyclical"
    from models.sequence import SequenceConfig
    assert cfg.model.family is None                                # the sequence task's own
    from bench.job.build import model_options
    SequenceConfig(**model_options(cfg, drop=("family",)))           # valid options
    with pytest.raises(ValueError, match="no such checkpoint"):
        bb.load_checkpoint(cfg.model.base)
