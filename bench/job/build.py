"""Task, model and estimator of one run, from a validated config with plain
values (enums already strings: `bench.config.plain`).

    task, model, est = build(cfg, pick_device(cfg.device))
"""
from __future__ import annotations

import torch

import estimators
import models


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _opts(node, drop=("name",)) -> dict:
    return {k: v for k, v in dict(node).items() if k not in drop}


def model_options(cfg, drop: tuple = ()) -> dict:
    """The `model` section as models.build options: without `label`, the
    tables' name for the model (bench.config.schema), and without `drop`."""
    return _opts(cfg.model, drop=("label",) + tuple(drop))


def load_task(cfg, device: torch.device):
    """The task of the config on `device` (its loader checks its own options and data)."""
    return models.tasks.load(cfg.task.name, device=device, seed=cfg.seed, **_opts(cfg.task))


def build(cfg, device: torch.device, task=None):
    """(task, model, estimator) on `device`; the latent's sizes default to the task's.
    `task`: already loaded by the job runner (before the MLflow run opened)."""
    task = load_task(cfg, device) if task is None else task
    lat = cfg.latent
    default = models.default_latent(task, lat.name, family=cfg.model.get("family"))  # for null keys
    sizes = {"D": default.D if lat.D is None else lat.D}
    if lat.name == "categorical":
        sizes["K"] = default.K if lat.K is None else lat.K
    latent = models.latents.build(lat.name, **sizes)     # bernoulli and gaussian take no K
    extra = model_options(cfg)
    if cfg.latent_dropout > 0:
        extra["latent_dropout"] = cfg.latent_dropout
    model = models.build(task, latent, conditioning=cfg.conditioning.name,
                         **_opts(cfg.conditioning), **extra).to(device)
    est = estimators.build(cfg.estimator.name, **_opts(cfg.estimator)).to(device)
    if latent.estimator_kind == "categorical":
        est.check_latent(latent.D, latent.K)   # sizes validation could not see (task defaults)
    return task, model, est
