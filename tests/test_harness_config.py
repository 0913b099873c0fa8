"""The harness configuration: conf/ composes, every group option is valid, and
each bad configuration fails before training with an error naming the key and
the valid values. Also the schedules, free bits and config hash."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import estimators
from bench.config import schema
from bench.tracking import identity, store as tracking
from bench.job.objective import free_bits
from bench.job.schedules import Cyclical, kl_schedule, temperature_schedule
from bench.config.validate import ConfigError, validate
from tests.compose import choices, compose_config

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
schema.register()


def cfg_of(*overrides: str):
    return compose_config(list(overrides))


def test_defaults_compose_and_validate():
    cfg = cfg_of()
    validate(cfg)
    assert cfg.task.name == "digits" and cfg.estimator.name == "gumbel"
    assert cfg.latent.K ** cfg.latent.D <= 4096      # exact stays affordable on the default task


def test_one_name_end_to_end():
    """conf/estimator/<stem>.yaml has name == stem == a registered Estimator.name."""
    assert set(choices("estimator")) == set(estimators.names())
    for group in ("estimator", "conditioning", "kl", "latent"):
        for stem in choices(group):
            assert cfg_of(f"{group}={stem}")[group].name == stem
    for stem in choices("task"):
        assert cfg_of(f"task={stem}").task.name == stem


@pytest.mark.parametrize("name", sorted(estimators.names()))
def test_every_estimator_file_validates(name):
    cfg = cfg_of(f"estimator={name}")         # reparam, reinforce_gaussian switch latent
    if cfg.latent.name == "categorical":
        try:
            estimators.build(name).check_latent(cfg.latent.D, cfg.latent.K)
        except ValueError:                    # e.g. Bernoulli-only estimators
            with pytest.raises(ConfigError, match="latent.K"):
                validate(cfg)
            cfg = cfg_of(f"estimator={name}", "latent.K=2")
    validate(cfg)
    assert cfg.latent.name == estimators.get(name).latent


@pytest.mark.parametrize("exp", choices("experiment"))
def test_experiment_overlays_compose(exp):
    validate(cfg_of(f"experiment={exp}"))      # raises ConfigError on a bad overlay
    # an overlay that composes but changes nothing (job keys or its sweep grid)
    # is a broken overlay too
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        full = lambda *o: OmegaConf.to_container(compose(  # noqa: E731
            "config", overrides=list(o), return_hydra_config=True), resolve=False)
        with_exp, plain = full(f"experiment={exp}"), full()
    for d in (with_exp, plain):     # the runtime bookkeeping differs by name only
        d["hydra"].pop("runtime", None), d["hydra"].pop("overrides", None), d["hydra"].pop("job", None)
    assert with_exp != plain


@pytest.mark.parametrize("overrides, key, valid", [
    (["estimator.name=nope"], "estimator", "gumbel"),
    (["conditioning.name=nope"], "conditioning", "film"),
    (["estimator=vimco", "estimator.n_samples=1"], "estimator.n_samples", "integers >= 2"),
    (["estimator=reinforce", "estimator.baseline=none", "estimator.n_samples=0"],
     "estimator.n_samples", "integers >= 1"),
    (["estimator=reinforce", "estimator.n_samples=1"], "estimator.baseline", "n_samples >= 2"),
    (["kl.free_bits=-0.5"], "kl.free_bits", "numbers >= 0"),
    (["kl.free_bits_mode=none", "kl.free_bits=0.5"], "kl.free_bits_mode", "per_dim"),
    (["estimator=vimco", "kl.free_bits=0.5"], "kl.free_bits", "0 with estimator=vimco"),
    (["estimator=reparam", "latent=categorical"], "estimator", "latent=gaussian"),
    (["+estimator.bogus=1"], "estimator.bogus", "n_samples"),
    (["estimator=exact", "latent.D=8", "latent.K=10"], "estimator", "sampling estimator"),
    (["train.steps=0"], "train.steps", "integers >= 1"),
    (["train.lr=0"], "train.lr", "numbers > 0"),
    (["latent_dropout=1.0"], "latent_dropout", "< 1"),
    (["kl=cyclical", "kl.cycles=0"], "kl.cycles", "integers >= 1"),
    # infinite options passed the range checks; they are refused wherever they are
    (["kl.beta=inf"], "kl.beta", "finite numbers"),
    (["train.lr=inf"], "train.lr", "finite numbers"),
    (["estimator=gumbel", "estimator.tau=inf"], "estimator.tau", "finite numbers"),
    # used to blame estimator.baseline (the default 'loo'), which no value of fixes
    (["estimator=reinforce", "estimator.n_samples=0"], "estimator.n_samples", "integers >= 1"),
    # steps that cannot fit in any memory: refused with the estimate (bench.config.memory)
    (["estimator=indecater", "latent.D=1000", "latent.K=1000"], "estimator", "cannot fit in memory"),
    (["train.batch_size=10000000000"], "train.batch_size", "cannot fit in memory"),
])
def test_bad_config_names_key_and_valid_values(overrides, key, valid):
    with pytest.raises(ConfigError) as e:
        validate(cfg_of(*overrides))
    assert e.value.key == key
    assert str(e.value).startswith(f"{key}=") and valid in str(e.value)


def test_the_memory_estimate_names_the_largest_batch_that_fits():
    from bench.config import memory
    cfg = cfg_of("train.batch_size=1000")
    est = estimators.build("gumbel")
    per_example = 2 * 4 * 1 * 64            # digits: 64 pixels, one f-evaluation, and its gradient
    memory.check(cfg, est, "categorical", 3, 4, memory=1000 * per_example)     # fits exactly
    with pytest.raises(ConfigError) as e:
        memory.check(cfg, est, "categorical", 3, 4, memory=999 * per_example)
    assert e.value.key == "train.batch_size" and "integers <= 999 here" in str(e.value)
    assert memory.machine_bytes() > 2**26


@pytest.mark.parametrize("override, valid", [
    ("device=gpu", "auto, cpu, cuda"),
    ("kl.free_bits_mode=clamp", "none, batch, per_dim, total"),
    ("kl=exponential", None),
])
def test_schema_rejects_bad_choices_while_composing(override, valid):
    with pytest.raises((ValidationError, ConfigCompositionException, MissingConfigException)) as e:
        cfg_of(override)
    text = str(e.value) + str(getattr(e.value, "__cause__", ""))
    assert override.split("=")[0].split(".")[0] in text
    if valid:
        assert valid in text


def test_unknown_group_option_lists_available():
    with pytest.raises(MissingConfigException) as e:
        cfg_of("estimator=nope")
    assert "estimator/nope" in str(e.value)
    assert all(n in str(e.value) for n in ("gumbel", "reinforce", "vimco"))


def test_cli_bad_config_exits_before_training(tmp_path, tracking_uri):
    """The real entry point: a named error on stderr, non-zero exit, no run logged."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.run", "estimator=vimco", "estimator.n_samples=1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "estimator.n_samples=1 is not valid" in out.stderr and "integers >= 2" in out.stderr
    c = tracking.client(tracking_uri)
    exps = c.search_experiments()
    assert not c.search_runs([e.experiment_id for e in exps])


def test_cli_data_that_cannot_load_is_refused_before_any_run(tmp_path, tracking_uri):
    """Missing data files: one message naming the override to type, exit 2,
    no traceback, no FAILED run left behind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.run", "task=mnist", f"task.data_dir={tmp_path}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "task.data_dir=<folder>" in out.stderr and "missing IDX file" in out.stderr
    c = tracking.client(tracking_uri)
    assert not c.search_runs([e.experiment_id for e in c.search_experiments()])


# -- objective pieces ---------------------------------------------------------

def test_kl_schedules():
    kl = cfg_of("kl=linear", "kl.warmup=0.5").kl
    beta = kl_schedule(kl, steps=100)
    assert beta(0) == 0 and beta(25) == pytest.approx(0.5) and beta(50) == 1 and beta(99) == 1
    sig = kl_schedule(cfg_of("kl=sigmoid", "kl.warmup=0.5").kl, steps=100)
    assert sig(0) < 0.01 and sig(25) == pytest.approx(0.5) and sig(50) > 0.99
    cyc = kl_schedule(cfg_of("kl=cyclical").kl, steps=100)
    assert isinstance(cyc, Cyclical)
    assert [cyc(s) for s in (0, 6, 12, 24, 25, 30)] == pytest.approx([0, 0.48, 0.96, 1, 0, 0.4])
    assert kl_schedule(cfg_of("kl.beta=0.3").kl, 10)(7) == 0.3


def test_temperature_schedule():
    t = temperature_schedule(cfg_of("temperature.schedule=exponential", "temperature.final=0.25").temperature,
                             start=1.0, steps=101)
    assert t(0) == 1.0 and t(50) == pytest.approx(0.5) and t(100) == pytest.approx(0.25)
    assert temperature_schedule(cfg_of().temperature, 0.7, 10)(9) == 0.7


def test_free_bits_modes():
    kl = torch.tensor([[0.0, 2.0], [0.2, 0.0]])            # (B, D)
    assert float(free_bits(kl, 0.0, "batch")) == pytest.approx(1.1)
    assert float(free_bits(kl, 0.5, "none")) == pytest.approx(1.1)
    assert float(free_bits(kl, 0.5, "batch")) == pytest.approx(0.5 + 1.0)        # max(.5,.1)+max(.5,1)
    assert float(free_bits(kl, 0.5, "per_dim")) == pytest.approx(((0.5 + 2) + (0.5 + 0.5)) / 2)
    assert float(free_bits(kl, 2.1, "total")) == pytest.approx((2.1 + 2.1) / 2)


def test_config_hash_ignores_logging_keys_but_not_seed():
    base = OmegaConf.to_container(cfg_of(), resolve=True, enum_to_str=True)
    h = identity.config_hash(base)
    assert h == identity.config_hash(OmegaConf.to_container(
        cfg_of("rerun=true", "progress=false", "mlflow.experiment=other"), resolve=True, enum_to_str=True))
    assert h != identity.config_hash(OmegaConf.to_container(cfg_of("seed=1"), resolve=True, enum_to_str=True))
    assert h != identity.config_hash(OmegaConf.to_container(cfg_of("train.lr=0.01"), resolve=True,
                                                            enum_to_str=True))


def test_exact_rows_per_call_leaves_the_config_hash_alone():
    """How exact's sum is split into calls of f changes no number (tested in
    test_estimators_api), so runs with and without it, and runs from before
    the key existed, share one identity."""
    def resolved(*o):
        return OmegaConf.to_container(cfg_of("estimator=exact", *o), resolve=True, enum_to_str=True)
    base = resolved()
    assert base["estimator"]["rows_per_call"] is None
    old = {**base, "estimator": {k: v for k, v in base["estimator"].items() if k != "rows_per_call"}}
    h = identity.config_hash(base)
    assert h == identity.config_hash(resolved("estimator.rows_per_call=2048")) == identity.config_hash(old)
    assert h != identity.config_hash(resolved("estimator.max_configs=64"))


@pytest.mark.parametrize("overrides, cores, advice", [
    (["hydra/launcher=submitit_local"], 2, "max_batch_size=2"),      # all jobs at once
    (["hydra/launcher=submitit_local", "hydra.sweeper.max_batch_size=8"], 4, "max_batch_size=4"),
    (["hydra/launcher=submitit_local", "hydra.sweeper.max_batch_size=2"], 2, None),
    (["hydra/launcher=slurm"], 2, None),                   # SLURM allocates cores per job
    (["hydra/launcher=basic"], 2, None),
    (["hydra/launcher=submitit_local", "hparams_search=lr"], 2, None),  # Optuna batches by n_jobs
])
def test_submitit_local_oversubscription_hint(overrides, cores, advice):
    from bench.tracking.callbacks import oversubscription_hint
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    hint = oversubscription_hint(cfg, cores)
    assert hint is None if advice is None else advice in hint


@pytest.mark.parametrize("name", sorted(estimators.names()))
def test_estimator_yaml_lists_every_option_with_the_class_default(name):
    """conf/estimator/<name>.yaml exposes every option (so `estimator.<key>=`
    needs no `+`) with the default the class itself declares."""
    import yaml
    from bench.config import conf_dir
    node = yaml.safe_load((conf_dir() / "estimator" / f"{name}.yaml").read_text())
    node = {k: v for k, v in node.items() if k not in ("name", "defaults")}
    assert node == estimators.options(name)


@pytest.mark.parametrize("name", choices("task"))
def test_task_yaml_lists_every_option_with_the_loader_default(name):
    """conf/task/<name>.yaml exposes every task option (`task.<key>=` needs no `+`)
    with the default the loader itself declares."""
    import models
    cfg = cfg_of(f"task={name}")
    node = {k: v for k, v in cfg.task.items() if k != "name"}
    assert node == models.tasks.options(name)


def test_model_family_needs_no_plus_and_leaves_other_hashes_alone():
    """`model.family` is declared (null = the task's family), so it is set
    without `+`; a null there hashes like an absent key, so runs that never
    set it keep their identity (and a rerun still finds them finished)."""
    from bench.tracking.identity import config_hash
    from tests.compose import compose_config

    cfg = compose_config(["model.family=conv", "latent.D=4"])
    assert cfg.model.family == "conv"
    plain_cfg = OmegaConf.to_container(compose_config([]))
    assert plain_cfg["model"] == {"family": None, "label": None}
    without = {**plain_cfg, "model": {}}
    assert config_hash(plain_cfg) == config_hash(without)
    assert config_hash(OmegaConf.to_container(cfg)) != config_hash(plain_cfg)


def test_an_overlays_model_label_is_a_name_not_an_option():
    """disarm_linear names its model `linear` for the tables: logged with the
    config, left out of config_hash (the runs stored before the label keep
    their identity) and never handed to models.build."""
    from bench.job.build import model_options
    from bench.tracking.identity import config_hash, flatten
    from tests.compose import compose_config

    for overlay, label in (("disarm_linear", "linear"), ("disarm_nonlinear", "nonlinear")):
        cfg = compose_config([f"experiment={overlay}"])
        resolved = OmegaConf.to_container(cfg)
        assert flatten(resolved)["model.label"] == label                  # logged as a param
        unlabelled = {**resolved, "model": {k: v for k, v in resolved["model"].items()
                                            if k != "label"}}
        assert config_hash(resolved) == config_hash(unlabelled)
        assert "label" not in model_options(cfg) and "encoder_hidden" in model_options(cfg)
    linear = OmegaConf.to_container(compose_config(["experiment=disarm_linear"]))
    relabelled = compose_config(["experiment=disarm_linear", "model.label=mine"])
    assert relabelled.model.label == "mine"                    # set without `+`
    assert config_hash(OmegaConf.to_container(relabelled)) == config_hash(linear)
