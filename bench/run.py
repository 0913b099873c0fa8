"""Entry point: one run, or a sweep with `-m`, configured by conf/ (Hydra 1.3).

    python -m bench.run                                        # defaults: digits, gumbel, concat
    python -m bench.run estimator=reinforce estimator.baseline=ema train.steps=2000
    python -m bench.run -m estimator=gumbel,reinforce,exact    # one MLflow parent, a child per job
    python -m bench.run -m hydra/launcher=joblib seed=0,1,2    # jobs in parallel processes
    python -m bench.run -m experiment=estimators               # a standard ablation overlay

Every run is logged to MLflow (bench.tracking.store.resolve_tracking_uri: the
MLFLOW_TRACKING_URI variable, else ./mlflow.db where the command started);
browse with `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
The command line's overrides are checked first (bench.config.overrides: an
unknown key or group option exits 2). The job itself is bench.job.runner.run_job; the sweep-level state
bench.tracking.callbacks.
"""
from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from .config import conf_dir, schema
from .job.runner import run_job
from .tracking.store import resolve_tracking_uri

schema.register()


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_job(cfg)


if __name__ == "__main__":
    # unknown keys and group options exit 2 naming the valid ones, before Hydra
    # composes (its own errors exit 1) and before anything is created
    from hydra._internal.utils import get_args_parser
    from .config import overrides
    overrides.check(get_args_parser().parse_known_args()[0].overrides)  # Hydra reports bad flags
    # made absolute here, before Hydra changes anything, and inherited by every
    # job process: one store per command, never one per job directory
    os.environ["MLFLOW_TRACKING_URI"] = resolve_tracking_uri()
    main()
