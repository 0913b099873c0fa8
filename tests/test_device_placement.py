"""The GPU path's placement and host syncs, checked on a CPU (tests/placement.py):
a few training steps of `bench.job.train.Trainer` for every estimator, the
image MLP and conv families, the Bernoulli and Gaussian latents, fp32 and bf16,
with the estimators' accelerator path taken (`estimators.base._is_host` False).
No host-created tensor may meet a device tensor (training or evaluation), and
a training step between logging boundaries reads no device value back.
Run: python -m pytest -q tests/test_device_placement.py"""
from __future__ import annotations

import pytest
import torch

import estimators
from bench.job.train import Trainer
from tests.bench.paired import TrainerStep
from tests.compose import compose_config
from tests.placement import Placement

STEPS = 3
SMALL = ["train.steps=100", "train.eval_every=100", "train.log_every=100", "train.batch_size=8",
         "eval.batch_size=16", "eval.iwae_samples=2", "eval.grad_samples=2",
         "eval.grad_batch_size=4", "progress=false", "device=cpu"]
CONV = ["model.family=conv", "conditioning=adaln", "+model.width=4", "+model.groups=2", "+model.d_cond=4", "latent.D=4"]


def _categories(name: str) -> int:
    """3, or 2 for an estimator that refuses K = 3 (Bernoulli only)."""
    try:
        estimators.build(name).check_latent(2, 3)
        return 3
    except ValueError:
        return 2


def _cases():
    out = []
    for name in estimators.names():
        cls = estimators.get(name)
        base = [f"estimator={name}"] + (["latent=gaussian", "latent.D=4"]
                                        if cls.latent == "gaussian" else
                                        ["latent.D=2", f"latent.K={_categories(name)}"])
        if name == "vimco":
            base.append("estimator.n_samples=2")
        out.append(pytest.param(base, id=f"{name}-fp32"))
        if cls.bf16_safe:
            out.append(pytest.param([*base, "train.precision=bf16"], id=f"{name}-bf16"))
    out += [pytest.param(["estimator=reinforce", *CONV], id="conv-reinforce"),
            # a batch larger than the class count: the per-class decoding path
            pytest.param(["estimator=exact", *CONV, "latent.K=2", "train.batch_size=12"],
                         id="conv-exact"),
            pytest.param(["estimator=reparam", "latent=gaussian", *CONV, "latent.D=16"],
                         id="conv-reparam"),
            pytest.param(["estimator=disarm", "latent=bernoulli", "conditioning=none", "latent.D=4"],
                         id="bernoulli-disarm"),
            pytest.param(["estimator=gumbel", "latent=bernoulli", "conditioning=none", "latent.D=4",
                          "train.precision=bf16"], id="bernoulli-gumbel-bf16")]
    return out


@pytest.fixture
def on_a_device(monkeypatch):
    """The estimators' accelerator path: no per-step finiteness read (estimators.base)."""
    from estimators import base
    monkeypatch.setattr(base, "_is_host", lambda t: False)


def trainer(*overrides) -> Trainer:
    return Trainer(compose_config(SMALL + list(overrides)), log=lambda s, m: None)


def check(tr: Trainer, steps: int = STEPS, evaluate: bool = True) -> Placement:
    step = TrainerStep(tr)       # Trainer.run's step between logging boundaries
    with Placement(tr.model, tr.est, tr.task) as p:
        for n in range(steps):
            before = len(p.reads)
            step()
            assert len(p.reads) == before, f"step {n} read device values: {p.reads[before:]}"
        if evaluate:
            tr.evaluator(steps, tr.beta(steps))     # may read; placement only
    assert not p.violations, p.violations[:5]
    return p


@pytest.mark.parametrize("overrides", _cases())
def test_a_training_step_keeps_to_the_device_and_reads_nothing(overrides, on_a_device):
    check(trainer(*overrides))


# -- the check itself can fail --------------------------------------------------------
def test_a_host_tensor_meeting_a_parameter_is_caught(on_a_device, monkeypatch):
    tr = trainer("estimator=reinforce", "latent.D=2", "latent.K=3")
    posterior = tr.model.posterior
    monkeypatch.setattr(tr.model, "posterior", lambda b: posterior(b) + torch.zeros(3))
    with pytest.raises(AssertionError, match=r"host tensor \(3,\) meets a device tensor "
                                             r"at tests/test_device_placement.py"):
        check(tr, steps=1, evaluate=False)


def test_a_read_in_the_step_is_caught(on_a_device, monkeypatch):
    tr = trainer("estimator=reinforce", "latent.D=2", "latent.K=3")
    posterior = tr.model.posterior

    def reads(b):
        out = posterior(b)
        out.sum().item()
        return out
    monkeypatch.setattr(tr.model, "posterior", reads)
    with pytest.raises(AssertionError, match=r"step 0 read device values: \[\('item', "
                                             r"'tests/test_device_placement.py"):
        check(tr, steps=1, evaluate=False)


def test_the_host_path_read_is_seen_when_it_is_taken():
    """Without the patch (a CPU run) the estimator's finiteness check reads once a step."""
    tr = trainer("estimator=reinforce", "latent.D=2", "latent.K=3")
    with pytest.raises(AssertionError, match=r"\('item', 'estimators/base.py:\d+ _check_params'\)"):
        check(tr, steps=1, evaluate=False)


@pytest.mark.parametrize("read", [lambda t: float(t.sum()), lambda t: t.tolist(),
                                  lambda t: t[t > 0], lambda t: torch.unique(t),
                                  lambda t: t.nonzero(), lambda t: t.cpu()])
def test_every_kind_of_read_counts(read):
    dev = torch.nn.Parameter(torch.randn(4))
    with Placement(torch.nn.ParameterList([dev])) as p:
        read(dev.detach() * 2)
        read(torch.ones(3) + 1)             # a host tensor's values are free
    assert len(p.reads) == 1, p.reads
