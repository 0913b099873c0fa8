"""Hydra callback that owns the sweep-level MLflow state, in the launching
process (wired in conf/config.yaml under `hydra.callbacks`): it creates the
store and the experiment once, the sweep's parent run, and the `Handoff`
(bench.tracking.handoff) that every job reads. The MLflow client is not
pickled into jobs; the hand-off is.

A sweep through `hydra/launcher=submitit_local` with Hydra's basic sweeper
starts all its jobs at once unless `hydra.sweeper.max_batch_size` is set;
with more jobs than cores they time-share the cores, and each then needs ~40%
more CPU time (docs/cluster.md, "SLURM (submitit)"), so the callback prints how to batch them.

At the end of a multirun it prints the summary table (finished, failed,
skipped), sets `sweep.finished`, `sweep.failed`, `sweep.skipped` (and
`sweep.killed` for children still RUNNING) on the parent and ends it (FAILED,
with `sweep.not_started`, when an outage stopped the sweep). It also saves a
view of the runs table for the MLflow UI (bench.tracking.ui) and prints the
URLs that open it, and then, unless `mlflow.sweep_figures=false`, attaches
what `bench.tables --sweep` writes to the parent under `tables/`; neither can
fail the sweep or change its exit status. If the
launching process dies first (Ctrl-C), an atexit hook marks the parent and any
child left RUNNING as KILLED. If it is killed outright (SIGKILL, OOM), no hook
runs: the parent's heartbeat (bench.tracking.liveness), written from here,
stops, and the next sweep, rerun or `bench.tables` marks it and its children
lost. Before the store is touched, `preflight.check` refuses a bad config.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from . import identity as I
from . import liveness as L
from . import preflight
from . import sink as W
from . import stopping
from . import store as S
from . import ui as U
from .handoff import Handoff
from .summary import EXIT_FAILED_JOBS, EXIT_STORE, NOTE_TAG, note_markdown, shorten, summary_table


def _prepare(cfg: DictConfig) -> Handoff:
    """The store and experiment, created here once, and the hand-off for the jobs."""
    uri = S.resolve_tracking_uri()
    S.configure(cfg.mlflow.patience_s, uri)
    exp_id = S.ensure_experiment(uri, cfg.mlflow.experiment)
    # before any job: runs of a sweep that was killed -9 are marked lost, so that
    # this sweep's skip checks redo them and nobody mistakes them for live ones
    L.reap(S.client(uri), exp_id, cfg.mlflow.lost_after_s)
    return Handoff(uri, exp_id, cfg.mlflow.experiment, I.git_commit())


SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def oversubscription_hint(config: DictConfig, cores: int | None) -> str | None:
    """The advice to batch a submitit_local sweep by cores, or None when the
    launcher, the sweeper or the batch size already keeps to the cores."""
    launcher = OmegaConf.select(config, "hydra.launcher._target_", default=None)
    sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default=None)
    batch = OmegaConf.select(config, "hydra.sweeper.max_batch_size", default=None)
    if launcher != SUBMITIT_LOCAL or sweeper != BASIC_SWEEPER or not cores or \
            (batch is not None and batch <= cores):
        return None
    return (f"[bench] hydra/launcher=submitit_local starts {batch or 'all'} jobs at once "
            f"(hydra.sweeper.max_batch_size={batch if batch is not None else 'null'}) on {cores} "
            f"cores; if the sweep has more jobs than cores, add "
            f"hydra.sweeper.max_batch_size={cores}: jobs sharing a core each need ~40% more CPU time")


class TrackingCallback(Callback):
    def __init__(self) -> None:
        self.parent: str | None = None
        self.client = None
        self.exp_id: str | None = None
        self.handoff: Handoff | None = None
        self.beat: L.Heartbeat | None = None
        self.lost_after_s = 60.0
        self.sweep_figures = True
        self._stopping: str | None = None    # the stop signal's name, once one arrived

    def __getstate__(self) -> dict:
        # launchers pickle this object into every job: the hand-off travels, the client does not
        return {**self.__dict__, "client": None, "beat": None}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: the launching process's hand-off, whatever the
        launcher did with the environment."""
        if self.handoff is not None:
            self.handoff.export()

    # -- single run --------------------------------------------------------
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        preflight.check(config, multirun=False)     # before the store: a bad value creates nothing
        with S.named_exit():
            self.handoff = _prepare(config)
        self.handoff.export()

    # -- multirun ----------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        hint = oversubscription_hint(config, cores)
        if hint:
            print(hint, file=sys.stderr, flush=True)
        preflight.check(config, multirun=True)
        with S.named_exit():
            self._open_parent(config)
        atexit.register(self._abandon)
        launcher = OmegaConf.select(config, "hydra.launcher._target_", default=BASIC_LAUNCHER)
        stopping.install(self._on_signal, in_process=launcher == BASIC_LAUNCHER)

    def _open_parent(self, config: DictConfig) -> None:
        h = _prepare(config)
        self.client, self.exp_id = S.client(h.uri), h.experiment_id
        sid = I.sweep_id()
        overrides = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        run = S.retrying(self.client.create_run, self.exp_id, tags={
            I.RUN_NAME_TAG: f"sweep {sid}",
            "sweep_id": sid,
            "sweep.parent": "true",
            "sweep.overrides": " ".join(overrides),
            "sweep.dir": str(config.hydra.sweep.dir),
            "git_commit": h.git_commit,
            L.TAG: L.beat(),
        })
        self.parent = run.info.run_id
        self.beat = L.Heartbeat(self.client, self.parent, config.mlflow.heartbeat_s)
        self.lost_after_s = float(config.mlflow.lost_after_s)
        self.sweep_figures = bool(OmegaConf.select(config, "mlflow.sweep_figures", default=True))
        h.parent_run_id, h.sweep_id = self.parent, sid
        self.handoff = h
        h.export()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        self._stop_beat()
        with S.named_exit():
            self._summarise()

    def _on_signal(self, signum: int, frame) -> None:
        """A stop signal to the launching process (bench.tracking.stopping):
        the workers checkpoint and end KILLED, nothing below this process
        is left, the parent ends KILLED with the summary."""
        if self._stopping:          # already stopping: the first signal's end is under way
            return
        if self.parent is None:     # the sweep is recorded already: end as the signal would
            raise SystemExit(128 + signum)
        self._stopping = name = signal.Signals(signum).name
        print(f"[bench] {name}: stopping the sweep; each running job checkpoints and ends "
              f"KILLED", file=sys.stderr, flush=True)
        stopping.send(stopping.descendants(os.getpid()), signal.SIGTERM)
        stopping.wait_for_workers(self.client, self.exp_id, self.parent)
        ended = stopping.end_descendants()
        if ended:
            print(f"[bench] ended {ended} leftover process(es) of the sweep", file=sys.stderr, flush=True)
        self._stop_beat()
        with S.named_exit():
            self._summarise(stopped=f"stopped by {name}")
        raise SystemExit(128 + signum)

    def _summarise(self, stopped: str | None = None) -> None:
        """The summary and the parent's end: FINISHED, FAILED after an outage,
        or KILLED when `stopped` (its children still RUNNING ended KILLED too)."""
        # again at the end: runs killed less than lost_after_s before this sweep began are lost by now
        L.reap(self.client, self.exp_id, self.lost_after_s)
        kids = S.children(self.client, self.exp_id, self.parent)
        if stopped:                 # their process is gone without recording its end
            for r in kids:
                if r.info.status == "RUNNING":
                    S.retrying(self.client.set_terminated, r.info.run_id, "KILLED")
            kids = S.children(self.client, self.exp_id, self.parent)
        parent_tags = S.retrying(self.client.get_run, self.parent).data.tags
        skipped = {k.split(".", 1)[1]: v for k, v in parent_tags.items() if k.startswith("skipped.")}
        counts = {s: sum(r.info.status == s for r in kids)
                  for s in ("FINISHED", "FAILED", "KILLED", "RUNNING")}
        tags = {"sweep.finished": counts["FINISHED"], "sweep.failed": counts["FAILED"],
                "sweep.skipped": len(skipped), "sweep.killed": counts["KILLED"] + counts["RUNNING"]}
        W.set_tags(self.client, self.parent, tags)
        reused = {job: S.retrying(self.client.get_run, rid) for job, rid in skipped.items()}
        print(summary_table(kids, reused, tags), file=sys.stdout, flush=True)
        key = self._save_view(kids, reused)
        # relative links in the description work at whatever address the UI was opened
        links = None if key is None else (U.runs_url(".", self.exp_id, key),
                                          U.runs_url(".", self.exp_id, key, chart=True))
        # the parent's description in the MLflow UI: the same table, each job linked
        W.set_tags(self.client, self.parent,
                   {NOTE_TAG: note_markdown(kids, reused, tags, self.exp_id, links)})
        if stopped:
            why = f"{stopped}: rerun the same command to resume its KILLED jobs"
            print(f"[bench] sweep {why}", file=sys.stdout, flush=True)
            W.set_tags(self.client, self.parent, {"failure_reason": why})
        elif S.SWEEP_STOPPED:       # an outage longer than the patience (bench.job.runner)
            why = f"sweep stopped: {S.SWEEP_STOPPED}; jobs not started: {len(S.NOT_STARTED)}"
            print(f"[bench] {why}; rerun the same command to do them", file=sys.stdout, flush=True)
            W.set_tags(self.client, self.parent, {"failure_reason": why[:1000],
                                                  "sweep.not_started": len(S.NOT_STARTED)})
        status = "KILLED" if stopped else "FAILED" if S.SWEEP_STOPPED else "FINISHED"
        S.retrying(self.client.set_terminated, self.parent, status)
        parent, self.parent = self.parent, None
        if stopped:
            return
        # after the end, so that the tables see the parent FINISHED with its wall time;
        # not after an outage stopped the sweep: the store has just been away
        if self.sweep_figures and not S.SWEEP_STOPPED:
            self._attach_tables(parent)
        if S.SWEEP_STOPPED:
            raise SystemExit(EXIT_STORE)    # a script or scheduler must see that work is left
        if counts["FAILED"] or counts["KILLED"]:
            raise SystemExit(EXIT_FAILED_JOBS)

    def _save_view(self, kids: list, reused: dict) -> str | None:
        """The sweep's saved view in the MLflow UI, printed as the URLs that
        open it (runs table, chart view); its key, or None when the store
        refused it."""
        h = self.handoff
        ids = [self.parent] + [r.info.run_id for r in kids] + [r.info.run_id for r in reused.values()]
        try:
            key = U.save_view(self.client, self.exp_id, h.sweep_id, ids, bool(reused))
        except Exception as e:  # noqa: BLE001 -- a convenience; the sweep is recorded either way
            print(f"[bench] no saved view for the MLflow UI: {type(e).__name__}: {shorten(str(e), 200)}",
                  file=sys.stderr, flush=True)
            return None
        address, command = U.ui_address(h.uri)
        urls = U.runs_url(address, self.exp_id, key), U.runs_url(address, self.exp_id, key, chart=True)
        print("[bench] compare the runs in the MLflow UI"
              + (f" (start it with: {command})" if command else "")
              + f":\n    table:  {urls[0]}\n    charts: {urls[1]}", file=sys.stdout, flush=True)
        return key

    def _attach_tables(self, parent: str) -> None:
        """What `bench.tables --sweep` writes, on the parent under tables/.
        An error is one line: the runs and the summary are already recorded."""
        t0 = time.monotonic()
        try:
            files = U.attach_tables(self.client, self.handoff.experiment_name,
                                    self.handoff.sweep_id, parent)
        except Exception as e:  # noqa: BLE001 -- never fails the sweep nor changes its exit status
            print(f"[bench] tables and figures not attached to parent run {parent}: "
                  f"{type(e).__name__}: {shorten(str(e), 200)}", file=sys.stderr, flush=True)
            return
        print(f"[bench] {len(files)} tables and figures attached to parent run {parent} under "
              f"tables/ ({time.monotonic() - t0:.1f} s; mlflow.sweep_figures=false skips this)",
              file=sys.stdout, flush=True)

    def _stop_beat(self) -> None:
        if self.beat is not None:
            self.beat.stop()
            self.beat = None

    def _abandon(self) -> None:
        """atexit: the sweep did not reach on_multirun_end (Ctrl-C, a crash)."""
        if self.parent is None:
            return
        self._stop_beat()
        stopping.end_descendants()      # no worker of this sweep outlives it
        try:
            with S.patience(min(S.PATIENCE_S, 30.0)):
                self._summarise(stopped="interrupted")
        except BaseException:  # noqa: BLE001 -- best effort while exiting
            pass
