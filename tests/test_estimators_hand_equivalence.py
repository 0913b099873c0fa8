"""The hand-written training steps of tests/bench/hand.py compute the same
estimators as the library: from the same parameters and the same seed, one
step of each gives the same loss and the same gradients (model and estimator
parameters) up to float rounding. That is what makes the speed comparison of
tests/bench/paired.py a fair one.

Three steps per case, the library's parameters reset to the hand loop's
before each, so state that persists (the EMA baseline, its step count) is
checked too, while Adam's amplification of rounding in near-zero gradients
cannot make the two drift apart.
"""
from __future__ import annotations

import pytest
import torch

import estimators
from tests.bench.paired import CASES, build_pair, library_step, setting_name

CELLS = [(label, D, K) for label, case in CASES.items() for D, K in case.settings]


def test_every_categorical_estimator_and_reparam_has_a_hand_loop():
    wanted = {n for n in estimators.names() if estimators.get(n).latent == "categorical"}
    covered = {case.name for case in CASES.values()}
    assert wanted | {"reparam"} <= covered
    assert {"none", "ema", "learned", "loo"} <= {c.opts.get("baseline") for c in CASES.values()
                                                  if c.name == "reinforce"}


def _sync(s, lib) -> None:
    lib.model.load_state_dict(s.model.state_dict())
    with torch.no_grad():
        for p, q in zip(lib.est.parameters(), getattr(s, "own", None) or []):
            p.copy_(q)


def _close(a, b, what):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("label,D,K", CELLS, ids=[f"{c[0]}-{setting_name(c[1], c[2])}" for c in CELLS])
def test_hand_step_matches_library(label, D, K):
    s, lib = build_pair(label, D, K, seed=0, batch=32)
    own = getattr(s, "own", None) or []
    assert len(own) == len(list(lib.est.parameters()))
    for step in range(3):
        _sync(s, lib)
        torch.manual_seed(100 + step)
        loss_hand = CASES[label].step(s)
        torch.manual_seed(100 + step)
        loss_lib = library_step(lib)
        _close(loss_lib, loss_hand, f"step {step} loss")
        for (n, p), q in zip(lib.model.named_parameters(), s.model.parameters()):
            _close(p.grad, q.grad, f"step {step} grad {n}")
        for (n, p), q in zip(lib.est.named_parameters(), own):
            _close(p.grad, q.grad, f"step {step} grad estimator.{n}")
        if hasattr(s, "ema"):
            _close(lib.est.ema, s.ema, f"step {step} ema")


# -- what the speed work in estimators/ must keep ------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_still_raise(bad):
    logits = torch.zeros(4, 3, 5, requires_grad=True)
    with torch.no_grad():
        logits[2, 1, 3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        estimators.build("reinforce", baseline="none", n_samples=1)(logits, lambda z: z.sum((-1, -2)))


def test_finite_logits_whose_sum_overflows_pass():
    """The check reads the sum first; an overflowing sum of finite logits is
    not a NaN, and the exact test says so."""
    logits = torch.full((4, 3, 5), 3e38)
    out = estimators.build("exact")(logits[:, :1], lambda z: z.sum((-1, -2)))
    assert out.loss.isfinite()


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_gradient_stats_still_falls_back_to_the_loop(name):
    """Gated parameters are detached leaves now, not hooked views; under vmap
    they must still refuse (the looped estimates, as before)."""
    from tests.bench.hand import Net, digits
    torch.manual_seed(0)
    model, x = Net(2, 3), digits(8)
    est = estimators.build(name)
    f = lambda z: model.rec(x, z.flatten(2))       # noqa: E731
    stats = estimators.gradient_stats(model, lambda: est(model.logits(x), f).loss,
                                      params=["enc."], n=3)
    assert not stats.batched
