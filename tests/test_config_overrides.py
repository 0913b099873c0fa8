"""Every configuration mistake on the command line exits 2 naming the valid
choices, and creates nothing (bench.config.overrides): unknown keys with or
without `+`, unknown group options, `+` on a declared key, wrong types."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.config.overrides import errors
from tests.processes import job_env


@pytest.mark.parametrize("override, names", [
    ("+kl.free_bit=0.5", ["kl.free_bits"]),       # Hydra ran this to FINISHED, typo ignored
    ("kl.free_bit=0.5", ["kl.free_bits"]),        # Hydra: exit 1, no valid keys
    ("kl=cyclic", ["cyclical", "constant", "linear", "sigmoid"]),
])
def test_cli_mistake_exits_2_naming_the_valid_choices_and_creates_nothing(tmp_path, override, names):
    env = job_env("unused")
    env.pop("MLFLOW_TRACKING_URI")      # the default store, ./mlflow.db, must not appear
    out = subprocess.run([sys.executable, "-m", "bench.run", "train.steps=5", override],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "FINISHED" not in out.stdout
    assert all(n in out.stderr for n in names), out.stderr
    assert list(tmp_path.iterdir()) == []          # no outputs/, no mlflow.db, no mlruns/


@pytest.mark.parametrize("overrides, words", [
    (["+train.x=1"], ["'train.x' is not a key of 'train'", "train.steps"]),
    (["++eval.sample=true"], ["eval.samples"]),
    (["~kl.betta"], ["kl.beta"]),
    (["estimatr=gumbel"], ["estimator"]),
    (["+kl.free_bits=0.5"], ["without '+'"]),
    (["seed.x=1"], ["'seed' is a value"]),
    (["kl=constant,cyclic"], ["kl=cyclic", "cyclical"]),          # every option of a sweep
    (["device=gpu"], ["auto, cpu, cuda"]),
    (["kl.free_bits=0,abc"], ["kl.free_bits='abc'"]),
])
def test_mistakes_are_named(overrides, words):
    found = errors(overrides)
    assert len(found) == 1 and all(w in found[0] for w in words), found


@pytest.mark.parametrize("overrides", [
    ["kl=cyclical", "kl.free_bits=0,0.5", "seed=range(3)", "latent.D=null"],
    ["model.family=conv", "+model.width=8", "++task.n_train=256", "conditioning=adaln"],
    ["+estimator.bogus=1"],         # open group: refused by validate, naming the estimator's options
    ["experiment=smoke", "hparams_search=lr", "hydra/launcher=joblib", "+hydra.job.env_set.X=1"],
    ["kl.warmup=${train.steps}"],
])
def test_valid_overrides_and_open_groups_pass(overrides):
    assert errors(overrides) == []
