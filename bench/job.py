"""One Hydra job from config to MLflow run, with the reliability rules:

1. `validate(cfg)` before anything is built; a bad config ends a single run
   with its named error (exit status 2, nothing logged), and in a multirun is
   recorded FAILED (the sweep goes on).
2. Skip: a FINISHED run of the experiment with the same `config_hash` tag
   means the job is done; `rerun=true` forces it. A skip is noted on the
   sweep's parent as tag `skipped.<job num> = <existing run id>`.
3. The run: params = the flattened resolved config, tags = labels + git
   commit + sweep id + config hash (+ `mlflow.parentRunId` in a multirun),
   artifact = the resolved config YAML; metrics come from `bench.train`.
4. An exception or a NaN/inf ends the run FAILED with tag `failure_reason`
   (and artifact traceback.txt); in a multirun the job then returns instead of
   raising, so Hydra goes on with the sweep. Ctrl-C ends the run KILLED and
   propagates.
5. The store unreachable for longer than `mlflow.patience_s` (bench.tracking:
   shorter outages are retried and lose nothing) raises `TrackingUnavailable`,
   naming the URI, in a multirun too: every later job would wait as long, so
   the sweep stops; runs left RUNNING are marked KILLED by the callback's exit
   hook when the store answers again.

Returns the final val/elbo (NaN when failed): a Hydra sweeper's objective.
"""
from __future__ import annotations

import atexit
import gc
import math
import os
import sys
import traceback
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import tracking as T
from .validate import ConfigError, validate


def _hydra_job() -> tuple[bool, str]:
    """(is this job part of a multirun?, its job number)."""
    try:
        hc = HydraConfig.get()
    except ValueError:          # called outside Hydra (tests, notebooks)
        return False, "0"
    return hc.mode == RunMode.MULTIRUN, str(hc.job.get("num", 0))


_EXIT_HOOKED = False


def _quick_exit() -> None:
    """Freeze the heap at interpreter exit. Python's shutdown runs full
    garbage collections over every object torch, torch._dynamo and mlflow
    made: ~1.1-2 s of a job process measured, paid once per process (each
    submitit/SLURM job, each joblib worker). Frozen objects are skipped by
    those collections and freed with the process. Nothing here waits on the
    collector: runs are ended, metric sinks closed and threads joined before
    atexit hooks run. Registered by the first job of a process, so it runs
    after hooks registered later (LIFO)."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        _EXIT_HOOKED = True
        atexit.register(gc.freeze)


def run_job(cfg: DictConfig) -> float:
    _quick_exit()
    multirun, job_num = _hydra_job()
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resolved.pop("hydra", None)
    uri = T.resolve_tracking_uri()
    T.configure(cfg.mlflow.patience_s, uri)
    c = T.client(uri)
    env = T.ids_from_env()
    if env.get("BENCH_EXPERIMENT_ID") and \
            os.environ.get("BENCH_EXPERIMENT_NAME") == cfg.mlflow.experiment:
        exp_id = env["BENCH_EXPERIMENT_ID"]
    else:
        exp_id = T.ensure_experiment(uri, cfg.mlflow.experiment)
    parent = env.get("BENCH_PARENT_RUN_ID") if multirun else None
    chash = T.config_hash(resolved)
    label = T.labels(resolved)
    tags = {**label, "config_hash": chash, "git_commit": T.git_commit(),
            "job": job_num,
            T.RUN_NAME_TAG: "-".join(str(label[k]) for k in ("estimator", "conditioning", "kl"))
            + f"-fb{label['free_bits']}-s{label['seed']}"}
    if parent:                      # a single run is a run of its own: no parent, no sweep_id
        tags[T.PARENT_TAG] = parent
        tags["sweep_id"] = env.get("BENCH_SWEEP_ID", "")

    try:
        validate(cfg)
    except ConfigError as e:
        if not multirun:            # the message says it all: no traceback, exit status 2
            print(f"Error in the configuration: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from e
        run_id = _open_run(c, exp_id, tags, resolved)
        _fail(c, run_id, e)
        print(f"[bench] job {job_num}: {e}", file=sys.stderr, flush=True)
        return math.nan

    if not cfg.rerun:
        done = T.finished_run_with_hash(c, exp_id, chash)
        if done is not None:
            if parent:
                T.set_tags(c, parent, {f"skipped.{job_num}": done})
            print(f"[bench] skip: this config (config_hash {chash}) already FINISHED as run "
                  f"{done}; rerun=true redoes it", flush=True)
            final = T.retrying(c.get_run, done).data.metrics.get("val/elbo")
            return math.nan if final is None else final

    run_id = _open_run(c, exp_id, tags, resolved)
    from .train import train        # torch and models load only for a real run
    sink = T.MetricSink(c, run_id)
    try:
        try:
            result = train(cfg, log=sink, desc=tags[T.RUN_NAME_TAG])
        finally:
            sink.close()            # every metric point is in the store before the status
    except KeyboardInterrupt:
        T.set_tags(c, run_id, {"failure_reason": "KeyboardInterrupt"})
        T.retrying(c.set_terminated, run_id, "KILLED")
        raise
    except T.TrackingUnavailable:
        raise                       # recording the failure would wait as long again
    except Exception as e:  # noqa: BLE001 -- any failure is recorded, then handled below
        _fail(c, run_id, e)
        if not multirun:
            raise
        print(f"[bench] job {job_num} FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return math.nan
    T.retrying(c.set_terminated, run_id, "FINISHED")
    if not multirun:                # a sweep prints its own summary table at the end
        shown = "  ".join(f"{k}={result[k]:.3f}" for k in ("val/elbo", "val/iwae", "val/kl")
                          if k in result)
        print(f"[bench] run {run_id} FINISHED: {shown}\n[bench] store {uri}, experiment "
              f"{cfg.mlflow.experiment!r}: mlflow ui --backend-store-uri {uri}", flush=True)
    return result.get("val/elbo", math.nan)


def _open_run(c, exp_id: str, tags: dict, resolved: dict) -> str:
    run = T.retrying(c.create_run, exp_id, tags={k: str(v) for k, v in tags.items()})
    run_id = run.info.run_id
    T.log_params(c, run_id, T.flatten(resolved))
    T.retrying(c.log_text, run_id, OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    return run_id


def _fail(c, run_id: str, e: BaseException, tb: Optional[str] = None) -> None:
    reason = f"{type(e).__name__}: {e}"
    T.set_tags(c, run_id, {"failure_reason": reason[:1000]})
    try:
        T.retrying(c.log_text, run_id, tb or traceback.format_exc(), "traceback.txt")
    finally:
        T.retrying(c.set_terminated, run_id, "FAILED")
