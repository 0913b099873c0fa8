"""The configuration of `bench.run`: where conf/ is, its schema (types and
defaults, `bench.config.schema`) and the checks that need more than types
(`bench.config.validate`).

    from bench.config import compose, conf_dir
    cfg = compose(["estimator=reinforce", "train.steps=10"])   # the config a job sees
"""
from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    """The folder of config.yaml: conf/ beside this `bench` package in a source
    checkout (editable install, or a tree on PYTHONPATH), else the installed
    package `bench_conf` that pyproject.toml makes of conf/."""
    beside = Path(__file__).resolve().parents[2] / "conf"
    if (beside / "config.yaml").is_file():
        return beside
    import bench_conf
    return Path(bench_conf.__file__).resolve().parent


def compose(overrides: list[str] = (), name: str = "config"):
    """Compose the real config in-process (tests, notebooks, `bench.gpu_bench`),
    as Hydra would for `python -m bench.run <overrides>`; schema enums intact."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from . import schema
    schema.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides))


def plain(cfg):
    """The config a job works with: resolved, enums as their string values,
    without the `hydra` node. Done once where a job starts, so validation and
    the runtime read plain strings and numbers."""
    from omegaconf import OmegaConf
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved.pop("hydra", None)
    return OmegaConf.create(resolved)
