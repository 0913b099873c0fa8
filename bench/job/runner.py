"""One Hydra job from config to MLflow run, with the reliability rules:

1. `validate(cfg)` before the store is touched (the launching process has
   already checked, bench.tracking.preflight); a bad config ends a single run
   with its named error (exit status 2, nothing created), and in a multirun is
   recorded FAILED (the sweep goes on).
2. Skip: a FINISHED run of the experiment with the same `config_hash` tag
   means the job is done; `rerun=true` forces it. A skip is noted on the
   sweep's parent as tag `skipped.<job num> = <existing run id>`.
3. The run: params = the flattened resolved config, tags = labels + git
   commit + sweep id + config hash (+ `mlflow.parentRunId` in a multirun),
   artifact = the resolved config YAML; metrics come from `bench.job.train`.
4. An exception or a NaN/inf ends the run FAILED with tag `failure_reason`
   (and artifact traceback.txt); in a multirun the job then returns instead of
   raising, so Hydra goes on with the sweep. Ctrl-C ends the run KILLED and
   propagates.
5. The store unreachable for longer than `mlflow.patience_s` (bench.tracking.store:
   shorter outages are retried and lose nothing) ends the job FAILED, with a
   `failure_reason` naming the URI, the patience and the metric points not
   written, recorded when the store answers again (waiting at most
   max(patience, 60 s) more; if it does not, the run's heartbeat has stopped
   and liveness marks it lost later). A single run exits 1 with that line. In
   a multirun the sweep stops: later jobs of this process are not started
   (each would wait as long) and the summary says so; jobs already running in
   other processes meet the outage on their own.
6. Liveness: the open run carries a heartbeat (bench.tracking.liveness), and
   lost runs of the experiment are marked before the skip check, so a config
   whose process was killed is redone.

Returns the final val/elbo (NaN when failed): a Hydra sweeper's objective.
"""
from __future__ import annotations

import atexit
import gc
import math
import sys
import traceback
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..config import plain
from ..config.validate import ConfigError, validate
from ..tracking import identity as I
from ..tracking import liveness as L
from ..tracking import sink as W
from ..tracking import store as S
from ..tracking.handoff import Handoff
from ..tracking.summary import refuse


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
    if not multirun:
        with S.named_exit():        # one line naming the store, not a chained traceback
            return _run_job(cfg, multirun, job_num)
    if S.SWEEP_STOPPED:
        S.NOT_STARTED.append(job_num)
        print(f"[bench] job {job_num} not started: the sweep stopped ({S.SWEEP_STOPPED[:200]})",
              file=sys.stderr, flush=True)
        return math.nan
    try:
        return _run_job(cfg, multirun, job_num)
    except S.TrackingUnavailable as e:
        S.SWEEP_STOPPED = str(e)
        print(f"[bench] job {job_num} FAILED: {e}\n[bench] the sweep stops: later jobs are not "
              f"started; rerun the same command when the store is back", file=sys.stderr, flush=True)
        return math.nan


def _run_job(cfg: DictConfig, multirun: bool, job_num: str) -> float:
    cfg = plain(cfg)                # enums unwrapped once, here
    resolved = OmegaConf.to_container(cfg)
    try:
        validate(cfg)               # before the store: a bad value creates nothing
        bad = None
    except ConfigError as e:
        if not multirun:            # the message says it all: no traceback, exit status 2
            refuse(e)
        bad = e
    uri = S.resolve_tracking_uri()
    S.configure(cfg.mlflow.patience_s, uri)
    c = S.client(uri)
    handoff = Handoff.from_env()
    if handoff is not None and handoff.experiment_name == cfg.mlflow.experiment:
        exp_id = handoff.experiment_id
    else:
        exp_id = S.ensure_experiment(uri, cfg.mlflow.experiment)
    parent = handoff.parent_run_id if (multirun and handoff is not None) else None
    chash = I.config_hash(resolved)
    label = I.labels(resolved)
    tags = {**label, "config_hash": chash, "git_commit": I.git_commit(),
            "job": job_num,
            I.RUN_NAME_TAG: I.run_name(resolved), "variant": I.variant(resolved)}
    if parent:                      # a single run is a run of its own: no parent, no sweep_id
        tags[I.PARENT_TAG] = parent
        tags["sweep_id"] = handoff.sweep_id or ""

    if bad is not None:             # in a sweep, recorded FAILED and the sweep goes on
        return _record_config_error(c, exp_id, tags, resolved, bad, job_num)

    # a run of this config whose process died is RUNNING forever otherwise, and
    # would look like work in progress; once marked lost (FAILED) it is redone below
    L.reap(c, exp_id, cfg.mlflow.lost_after_s)
    if not cfg.rerun:
        done = S.finished_run_with_hash(c, exp_id, chash)
        if done is not None:
            if parent:
                W.set_tags(c, parent, {f"skipped.{job_num}": done})
            print(f"[bench] skip: this config (config_hash {chash}) already FINISHED as run "
                  f"{done}; rerun=true redoes it", flush=True)
            final = S.retrying(c.get_run, done).data.metrics.get("val/elbo")
            return math.nan if final is None else final

    try:                            # data that cannot load is a configuration error: no run for it
        task = _load_task(cfg)
    except (OSError, ImportError, ValueError) as e:
        bad = ConfigError.from_component("task", cfg.task.name, e)
        if not multirun:
            refuse(bad)
        return _record_config_error(c, exp_id, tags, resolved, bad, job_num)
    run_id = W.open_run(c, exp_id, tags, resolved)
    beat = L.Heartbeat(c, run_id, cfg.mlflow.heartbeat_s)
    try:
        return _train_run(cfg, c, uri, run_id, tags, multirun, job_num, task)
    finally:
        beat.stop()


def _record_config_error(c, exp_id: str, tags: dict, resolved: dict, bad: ConfigError,
                         job_num: str) -> float:
    """A sweep's job with a configuration error: a FAILED run that says why."""
    run_id = W.open_run(c, exp_id, tags, resolved)
    _fail(c, run_id, bad)
    print(f"[bench] job {job_num}: {bad}", file=sys.stderr, flush=True)
    return math.nan


def _load_task(cfg):
    from .build import load_task, pick_device   # torch and models load only for a real run
    return load_task(cfg, pick_device(cfg.device))


def _train_run(cfg, c, uri: str, run_id: str, tags: dict, multirun: bool, job_num: str,
               task) -> float:
    from .train import train
    sink = W.MetricSink(c, run_id)
    try:
        try:
            result = train(cfg, log=sink, desc=tags[I.RUN_NAME_TAG], task=task,
                           artifact=lambda path, folder: S.retrying(c.log_artifact, run_id,
                                                                     str(path), folder))
        finally:
            sink.close()            # every metric point is in the store before the status
    except KeyboardInterrupt:
        W.set_tags(c, run_id, {"failure_reason": "KeyboardInterrupt"})
        S.retrying(c.set_terminated, run_id, "KILLED")
        raise
    except S.TrackingUnavailable as e:
        reason = S.TrackingUnavailable(f"{e}; {sink.unwritten} metric point(s) not written")
        try:                        # recorded once the store answers again, within a bound
            with S.patience(max(S.PATIENCE_S, 60.0)):
                _fail(c, run_id, reason)
        except S.TrackingUnavailable:
            print(f"[bench] could not record run {run_id} FAILED; its heartbeat has stopped, so "
                  f"the next sweep, rerun or bench.tables marks it lost", file=sys.stderr, flush=True)
        raise reason from None
    except Exception as e:  # noqa: BLE001 -- any failure is recorded, then handled below
        _fail(c, run_id, e)
        if not multirun:
            raise
        print(f"[bench] job {job_num} FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return math.nan
    S.retrying(c.set_terminated, run_id, "FINISHED")
    if not multirun:                # a sweep prints its own summary table at the end
        shown = "  ".join(f"{k}={result[k]:.3f}" for k in ("val/elbo", "val/iwae", "val/kl")
                          if k in result)
        print(f"[bench] run {run_id} FINISHED: {shown}\n[bench] store {uri}, experiment "
              f"{cfg.mlflow.experiment!r}: mlflow ui --backend-store-uri {uri}", flush=True)
    return result.get("val/elbo", math.nan)


def _fail(c, run_id: str, e: BaseException, tb: Optional[str] = None) -> None:
    reason = f"{type(e).__name__}: {e}"
    W.set_tags(c, run_id, {"failure_reason": reason[:1000]})
    try:
        S.retrying(c.log_text, run_id, tb or traceback.format_exc(), "traceback.txt")
    finally:
        S.retrying(c.set_terminated, run_id, "FAILED")
