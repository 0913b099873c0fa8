"""Configuration checks in the launching process, before the store exists.

A bad value must create nothing on disk (no mlflow.db, no experiment, no
sweep parent) and be reported in the time it takes to import the schema and
the estimator registry, not after mlflow's import and a schema migration. So
the sweep callback calls `check(config, multirun)` before it touches the
store:

- a single run with a bad config exits 2 with the message, no traceback;
- a folder the command would write to (the checkpoint folder, Hydra's output
  folder, a local sqlite store's folder) that cannot be written ends it with
  exit status 1 and one line naming the path (bench.tracking.writable);
- a multirun through Hydra's basic sweeper composes every job's config as the
  sweeper will (its own `validate_batch_is_legal` does the same) and exits 2
  when every job is invalid; when only some are, it names them and goes on,
  and those jobs are recorded FAILED by the runner (docs/running.md, "Reliability").

Other sweepers (Optuna) choose their jobs as they go; their jobs are checked
by the runner only.
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf, open_dict

from .summary import refuse

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
MAX_JOBS = 2000     # composing is ~10-50 ms a job; beyond this the runner checks each job


def _error(cfg: DictConfig):
    """The ConfigError of a composed config, or None when valid or when it
    cannot be checked here (an interpolation that needs the job's Hydra state)."""
    from ..config import plain
    from ..config.validate import ConfigError, validate
    c = cfg.copy()
    with open_dict(c):
        c.pop("hydra", None)        # its ${hydra.job.num} etc. resolve only inside a job
    try:
        job = plain(c)
    except Exception:  # noqa: BLE001 -- left to the job, which resolves it in its context
        return None
    try:
        validate(job)
    except ConfigError as e:
        return e
    return None


def _sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides as the basic sweeper will expand them, or None."""
    if OmegaConf.select(config, "hydra.sweeper._target_", default=None) != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parsed = OverridesParser.create().parse_overrides(args)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return jobs if len(jobs) <= MAX_JOBS else None


def check(config: DictConfig, multirun: bool) -> None:
    """Exit 2 (SystemExit, which Hydra does not wrap) when nothing could run;
    then exit 1 when a folder the command writes to is unwritable
    (bench.tracking.writable)."""
    _check_config(config, multirun)
    from . import writable
    writable.check(config, multirun)


def _check_config(config: DictConfig, multirun: bool) -> None:
    if not multirun:
        err = _error(config)
        if err is not None:
            refuse(err)
        return
    jobs = _sweep_jobs(config)
    if not jobs:
        return
    from hydra.core.global_hydra import GlobalHydra
    loader = GlobalHydra.instance().config_loader()
    bad = []
    for num, overrides in enumerate(jobs):
        err = _error(loader.load_sweep_config(config, list(overrides)))
        if err is not None:
            bad.append(f"job {num} ({' '.join(overrides)}): {err}")
    if len(bad) == len(jobs):
        refuse("every job of the sweep is invalid:\n  " + "\n  ".join(bad))
    if bad:
        print(f"[bench] {len(bad)} of {len(jobs)} jobs have configuration errors and will be "
              f"recorded FAILED:\n  " + "\n  ".join(bad), file=sys.stderr, flush=True)
