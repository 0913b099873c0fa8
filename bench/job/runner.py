"""One Hydra job from config to MLflow run, with the reliability rules:

1. `validate(cfg)` before the store is touched (the launching process has
   already checked, bench.tracking.preflight); a bad config ends a single run
   with its named error (exit status 2, nothing created), and in a multirun is
   recorded FAILED (the sweep goes on). A checkpoint folder that cannot be
   written (bench.tracking.writable) is refused the same way before a run
   opens, with exit status 1 in a single run.
2. One owner (bench.job.owner): a config that another live process trains
   is not touched; a single run exits 4 with one line naming the run and its
   holder.
   Skip: a FINISHED run of the experiment with the same `config_hash` tag
   means the job is done; `rerun=true` forces it. A skip is noted on the
   sweep's parent as tag `skipped.<job num> = <existing run id>`.
3. The run: params = the flattened resolved config, tags = labels + git
   commit + sweep id + config hash (+ `mlflow.parentRunId` in a multirun),
   artifact = the resolved config YAML; metrics come from `bench.job.train`.
4. An exception or a NaN/inf ends the run FAILED with tag `failure_reason`
   (and artifact traceback.txt); in a multirun the job then returns instead of
   raising, so Hydra goes on with the sweep. Ctrl-C ends the run KILLED and
   propagates.
5. The store unreachable, or its disk full, for longer than
   `mlflow.patience_s` (bench.tracking.store: shorter outages are retried and
   lose nothing) ends the job FAILED, with a `failure_reason` naming the URI,
   the patience (and "disk full" with the path) and the metric points not
   written, recorded when the store answers again (waiting at most
   max(patience, 60 s) more; if it does not, the run's heartbeat has stopped
   and liveness marks it lost later). A single run exits 1 with that line. In
   a multirun the sweep stops: later jobs of this process are not started
   (each would wait as long) and the summary says so; jobs already running in
   other processes meet the outage on their own.
6. Liveness: the open run carries a heartbeat (bench.tracking.liveness), and
   lost runs of the experiment are marked before the skip check, so a config
   whose process was killed is redone.
7. Resume (bench.job.checkpoint): when the latest run of the config ended
   KILLED or lost and its checkpoint is on disk, that same run continues from
   the checkpoint (RUNNING again, tags `resumed_from_step`, `resume_count`),
   writing no metric point twice; `rerun=true` starts afresh instead. A stop
   signal (SIGTERM, SIGUSR1, SIGUSR2) ends the run KILLED with
   `failure_reason = preempted by SIG...: checkpoint at step N; ...`, then
   hands the signal on (submitit's requeue) or exits with 128 + its number.
   A FINISHED run's checkpoint is deleted. A checkpoint that cannot be
   written (`WriteFailed`: a full disk) ends the run FAILED, resumable from
   its previous checkpoint; a single run exits 1 with that one line.

Returns the final val/elbo (NaN when failed): a Hydra sweeper's objective.
"""
from __future__ import annotations

import atexit
import gc
import logging
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
from ..tracking import writable
from ..tracking import store as S
from ..tracking.handoff import Handoff
from ..tracking.summary import EXIT_CONFIG, refuse
from . import checkpoint as CK
from . import owner as OW


def _hydra_job() -> tuple[bool, str]:
    """(is this job part of a multirun?, its job number)."""
    try:
        hc = HydraConfig.get()
    except ValueError:          # called outside Hydra (tests, notebooks)
        return False, "0"
    return hc.mode == RunMode.MULTIRUN, str(hc.job.get("num", 0))


_EXIT_HOOKED = False
# the run's log lines: Hydra's job logging sends this logger to run.log only
# (conf/config.yaml, hydra.job_logging), the console gets them from print
LOG = logging.getLogger("bench")
LOG.addHandler(logging.NullHandler())   # outside Hydra (tests, notebooks) print alone says it
SHOWN = ("val/elbo", "val/iwae", "val/kl")     # the headline values of an evaluation


def _say(text: str, err: bool = False) -> None:
    """One harness line: on stdout (stderr for a failure) and in run.log."""
    print(text, file=sys.stderr if err else sys.stdout, flush=True)
    LOG.log(logging.WARNING if err else logging.INFO, text.replace("[bench] ", ""))


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
        _say(f"[bench] job {job_num} not started: the sweep stopped ({S.SWEEP_STOPPED[:200]})",
             err=True)
        return math.nan
    try:
        return _run_job(cfg, multirun, job_num)
    except S.TrackingUnavailable as e:
        S.SWEEP_STOPPED = str(e)
        _say(f"[bench] job {job_num} FAILED: {e}\n[bench] the sweep stops: later jobs are not "
             f"started; rerun the same command when the store is back", err=True)
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
    path = CK.path_for(cfg, chash)
    why = writable.problem(path.parent)     # before a run opens: a stop signal writes there too
    if why is not None:
        if not multirun:
            writable.refuse("cannot write train.checkpoint_dir", why)
        bad = ConfigError("train.checkpoint_dir", cfg.train.checkpoint_dir, "",
                          message=f"cannot write train.checkpoint_dir: {why}")
        return _record_config_error(c, exp_id, tags, resolved, bad, job_num)
    stale = CK.remove_stale_tmp(path.parent)
    if stale:
        _say(f"[bench] removed {len(stale)} temporary checkpoint file(s) of killed writers from "
             f"{path.parent}")
    try:                            # one process per config at a time (bench.job.owner)
        owner = OW.acquire(path, chash, L.beat())
    except OW.Held as e:
        return _held(OW.named(e, c, exp_id), c, parent, multirun, job_num)
    try:
        resume = None
        if not cfg.rerun:
            done = S.finished_run_with_hash(c, exp_id, chash)
            if done is not None:
                if parent:
                    W.set_tags(c, parent, {f"skipped.{job_num}": done})
                _say(f"[bench] skip: this config (config_hash {chash}) already FINISHED as run "
                     f"{done}; rerun=true redoes it")
                final = S.retrying(c.get_run, done).data.metrics.get("val/elbo")
                return math.nan if final is None else final
        try:
            OW.check_latest(c, exp_id, chash, cfg.mlflow.lost_after_s)
        except OW.Held as e:
            return _held(e, c, parent, multirun, job_num)
        if not cfg.rerun:
            try:
                resume = CK.find_resume(c, exp_id, chash, path, cfg.mlflow.lost_after_s, resolved)
            except CK.CheckpointMismatch as e:
                return _refuse_checkpoint(e, multirun, job_num)

        try:                            # data that cannot load is a configuration error: no run for it
            task = _load_task(cfg)
        except (OSError, ImportError, ValueError) as e:
            bad = ConfigError.from_component("task", cfg.task.name, e)
            if not multirun:
                refuse(bad)
            return _record_config_error(c, exp_id, tags, resolved, bad, job_num)
        try:                            # so is a model or estimator that refuses these options
            _check_build(cfg, task)
        except ValueError as e:
            bad = ConfigError("model", None, "", message=f"the model and estimator cannot be built "
                                                         f"from this configuration: {e}")
            if not multirun:
                refuse(bad)
            return _record_config_error(c, exp_id, tags, resolved, bad, job_num)
        if resume is None:
            run_id = W.open_run(c, exp_id, {**tags, CK.TAG: str(path)}, resolved)
        else:
            run_id = resume.run_id
        LOG.info("run %s (%s), config_hash %s, experiment %r, store %s", run_id,
                 tags[I.RUN_NAME_TAG], chash, cfg.mlflow.experiment, uri)
        plan = CK.Checkpointing(path, run_id, chash, resolved, cfg.train.checkpoint_every)
        return _train_run(cfg, c, uri, run_id, tags, multirun, job_num, task, plan, resume)
    finally:
        owner.release()


def _held(e: "OW.Held", c, parent: Optional[str], multirun: bool, job_num: str) -> float:
    """Another live process trains this config: one line, nothing written to its run."""
    if not multirun:
        _say(f"[bench] {e}", err=True)
        raise SystemExit(OW.EXIT_HELD)
    if parent:
        W.set_tags(c, parent, {f"held.{job_num}": e.holder})
    _say(f"[bench] job {job_num} not run: {e}", err=True)
    return math.nan


def _refuse_checkpoint(e: CK.CheckpointMismatch, multirun: bool, job_num: str) -> float:
    """A checkpoint that does not fit: nothing is loaded or changed; the user
    deletes the file or reruns with rerun=true."""
    if not multirun:
        _say(f"[bench] error: {e}", err=True)
        raise SystemExit(EXIT_CONFIG)
    _say(f"[bench] job {job_num} not run: {e}", err=True)
    return math.nan


def _record_config_error(c, exp_id: str, tags: dict, resolved: dict, bad: ConfigError,
                         job_num: str) -> float:
    """A sweep's job with a configuration error: a FAILED run that says why."""
    run_id = W.open_run(c, exp_id, tags, resolved)
    _fail(c, run_id, bad)
    _say(f"[bench] job {job_num}: {bad}", err=True)
    return math.nan


def _load_task(cfg):
    from .build import load_task, pick_device   # torch and models load only for a real run
    return load_task(cfg, pick_device(cfg.device))


def _check_build(cfg, task) -> None:
    """Build the run's model and estimator once and drop them: options that only
    the model family can judge (a conditioning type the family does not take, a
    latent size the conv model cannot hold) are refused before a run opens. The
    RNG is forked, so the run's own build draws the same initial weights."""
    import torch

    from .build import build, pick_device
    device = pick_device(cfg.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        build(cfg, device, task)


class _Sink:
    """The run's MetricSink, which `drain` empties (every queued point
    written) before the trainer writes a checkpoint: the points before a
    checkpoint's step are then in the store whatever kills the process."""

    def __init__(self, c, run_id: str):
        self.c, self.run_id = c, run_id
        self.sink = W.MetricSink(c, run_id)

    def __call__(self, step: int, metrics: dict) -> None:
        self.sink(step, metrics)
        if "val/elbo" in metrics:       # an evaluation: its headline values in run.log
            LOG.info("step %d: %s", step, "  ".join(
                f"{k}={metrics[k]:.4g}" for k in SHOWN + ("train/loss",) if k in metrics))

    def drain(self) -> None:
        self.sink.close()
        self.sink = W.MetricSink(self.c, self.run_id)

    def close(self) -> None:
        self.sink.close()

    @property
    def unwritten(self) -> int:
        return self.sink.unwritten


def _train_run(cfg, c, uri: str, run_id: str, tags: dict, multirun: bool, job_num: str,
               task, plan: CK.Checkpointing, resume: Optional[CK.Resume]) -> float:
    from .train import Trainer
    beat = None
    sink = _Sink(c, run_id)
    plan.sync = sink.drain
    log = sink if resume is None else CK.skip_logged(sink, resume.logged)
    try:
        if resume is None:
            beat = L.Heartbeat(c, run_id, cfg.mlflow.heartbeat_s)
        try:
            trainer = Trainer(cfg, log, desc=tags[I.RUN_NAME_TAG], task=task, checkpoint=plan,
                              artifact=lambda path, folder: S.retrying(c.log_artifact, run_id,
                                                                        str(path), folder))
            if resume is not None:
                trainer.restore(resume.state)   # a mismatch leaves the run as it was
                CK.reopen(c, resume, tags)
                beat = L.Heartbeat(c, run_id, cfg.mlflow.heartbeat_s)
                _say(f"[bench] resuming run {run_id} from step {trainer.start} ({plan.path})")
            result = trainer.run()
        finally:
            sink.close()            # every metric point is in the store before the status
    except CK.CheckpointMismatch as e:
        return _refuse_checkpoint(e, multirun, job_num)
    except CK.Preempted as e:
        W.set_tags(c, run_id, {"failure_reason": e.reason})
        S.retrying(c.set_terminated, run_id, "KILLED")
        _say(f"[bench] run {run_id} KILLED: {e.reason}", err=True)
        e.chain()                   # submitit's requeue, or exit 128 + signal
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
            _say(f"[bench] could not record run {run_id} FAILED; its heartbeat has stopped, so "
                 f"the next sweep, rerun or bench.tables marks it lost", err=True)
        raise reason from None
    except CK.WriteFailed as e:     # the previous checkpoint is whole: a rerun resumes from it
        _fail(c, run_id, e, reason=str(e))
        _say(f"[bench] run {run_id} FAILED: {e}", err=True)
        if not multirun:
            raise SystemExit(1) from None
        return math.nan
    except Exception as e:  # noqa: BLE001 -- any failure is recorded, then handled below
        _fail(c, run_id, e)
        if not multirun:
            raise
        _say(f"[bench] job {job_num} FAILED: {type(e).__name__}: {e}", err=True)
        return math.nan
    finally:
        if beat is not None:
            beat.stop()
    S.retrying(c.set_terminated, run_id, "FINISHED")
    plan.path.unlink(missing_ok=True)   # nothing left to resume
    if not multirun:                # a sweep prints its own summary table at the end
        shown = "  ".join(f"{k}={result[k]:.3f}" for k in SHOWN if k in result)
        _say(f"[bench] run {run_id} FINISHED: {shown}\n[bench] store {uri}, experiment "
             f"{cfg.mlflow.experiment!r}: mlflow ui --backend-store-uri {uri}")
    else:                           # the summary table is the sweep's; run.log is the job's
        LOG.info("run %s FINISHED", run_id)
    if trainer.stopped is not None:     # a stop signal during the last step's logging
        CK.chain(*trainer.stopped)
    return result.get("val/elbo", math.nan)


def _fail(c, run_id: str, e: BaseException, tb: Optional[str] = None,
          reason: Optional[str] = None) -> None:
    reason = reason or f"{type(e).__name__}: {e}"
    LOG.error("run %s FAILED: %s\n%s", run_id, reason, tb or traceback.format_exc())
    W.set_tags(c, run_id, {"failure_reason": reason[:1000]})
    try:
        S.retrying(c.log_text, run_id, tb or traceback.format_exc(), "traceback.txt")
    finally:
        S.retrying(c.set_terminated, run_id, "FAILED")
