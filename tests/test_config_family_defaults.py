"""A latent size the user leaves unset takes the model family's default for the
task and latent kind: conf/task/digits.yaml's D=3, K=4 are its MLP's
(`${mlp_only:...}`, bench.config.schema), so under `model.family=conv` they
resolve to null and then to the conv model's own default, while MLP runs
resolve, and hash, exactly as before."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from bench.job.build import build
from bench.tracking import store as tracking
from bench.tracking.identity import config_hash
from tests.compose import compose_config
from tests.processes import job_env, stop_group

CONV = ["model.family=conv", "conditioning=adaln", "estimator=reparam", "latent=gaussian"]


@pytest.mark.parametrize("overrides, pinned", [
    # the config_hash of these runs before the sizes became MLP-only: stored
    # runs keep their identity, and a rerun still finds them FINISHED
    ([], "5c43d07fefcdf085"),
    (["latent=gaussian"], "91b0217350e7f329"),
    (["model.family=mlp"], "04cc69ae46687f8c"),
])
def test_mlp_runs_keep_the_task_sizes_and_their_hash(overrides, pinned):
    cfg = compose_config(overrides)
    assert (cfg.latent.D, cfg.latent.K) == (3, 4)
    assert config_hash(OmegaConf.to_container(cfg)) == pinned


@pytest.mark.parametrize("overrides, sizes", [
    (CONV, (16, None)),                                                # C = 4 channels x 2x2
    (["model.family=conv", "conditioning=adaln"], (4, 10)),            # one variable per position
    (["model.family=conv", "conditioning=adaln", "latent.D=4"], (4, 10)),   # K unset: the family's
    ([*CONV, "latent.D=8"], (8, None)),                                # a size the user set stays
])
def test_other_families_take_their_own_default_sizes(overrides, sizes):
    cfg = compose_config(overrides + ["device=cpu"])
    _, model, _ = build(cfg, torch.device("cpu"))
    D, K = sizes
    assert model.latent.D == D
    if K is not None:
        assert model.latent.K == K


def test_the_conv_command_on_digits_finishes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *CONV, "train.steps=30",
                             "progress=false"], cwd=tmp_path, env=job_env(uri),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        stop_group(proc)
    assert proc.returncode == 0, err[-2000:]
    client = tracking.client(uri)
    exp = client.get_experiment_by_name("discrete-latent-bench")
    runs = tracking.search_pages(client, exp.experiment_id)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.params["model.family"] == "conv"
