"""What the launching process hands to its jobs, in one object.

The launching process fixes, before any job starts:

    MLFLOW_TRACKING_URI    absolute, fixed once before Hydra changes directory
    BENCH_EXPERIMENT_ID    the experiment, created once: parallel workers
    BENCH_EXPERIMENT_NAME  creating a new sqlite store race and can corrupt it,
                           and `set_experiment` racing in workers can file runs
                           under Default
    BENCH_GIT_COMMIT       asked of git once per sweep
    BENCH_PARENT_RUN_ID    multirun only: the sweep's parent run
    BENCH_SWEEP_ID         multirun only: the `sweep_id` tag of parent and children

`Handoff.export()` writes them into this process's environment (inherited by
basic, joblib and submitit_local jobs; sbatch exports it by default) and the
sweep callback also carries the object itself into every job that a launcher
pickles (joblib, submitit, Ray), where `export()` runs again, so a job whose
environment was not inherited still logs to the same store, experiment and
parent. `Handoff.from_env()` is the job's side.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

ENV = {"uri": "MLFLOW_TRACKING_URI", "experiment_id": "BENCH_EXPERIMENT_ID",
       "experiment_name": "BENCH_EXPERIMENT_NAME", "git_commit": "BENCH_GIT_COMMIT",
       "parent_run_id": "BENCH_PARENT_RUN_ID", "sweep_id": "BENCH_SWEEP_ID"}


@dataclass
class Handoff:
    uri: str
    experiment_id: str
    experiment_name: str
    git_commit: str
    parent_run_id: Optional[str] = None     # None: a single run, no parent
    sweep_id: Optional[str] = None

    def export(self) -> None:
        for key, value in asdict(self).items():
            if value:
                os.environ[ENV[key]] = value
            else:
                os.environ.pop(ENV[key], None)   # a single run must not inherit an old parent

    @classmethod
    def from_env(cls) -> Optional["Handoff"]:
        """The launching process's hand-off, or None when this process was not
        started by `bench.run` (tests, notebooks)."""
        values = {f.name: os.environ.get(ENV[f.name]) or None for f in fields(cls)}
        if not (values["uri"] and values["experiment_id"] and values["experiment_name"]):
            return None
        values["git_commit"] = values["git_commit"] or "unknown"
        return cls(**values)


def clear_sweep() -> None:
    """Forget an inherited sweep (a single run started from inside one)."""
    for key in ("parent_run_id", "sweep_id"):
        os.environ.pop(ENV[key], None)
