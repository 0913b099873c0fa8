"""A stop signal to the process that launched a parallel sweep
(bench.tracking.stopping): its workers checkpoint and end KILLED with the
resume hint, the parent ends KILLED with its `sweep.*` tags and the summary
printed, and no process below the launcher outlives it. Real launchers,
real subprocesses, a real sqlite store."""
from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from bench.tracking import stopping
from tests.processes import job_env, stop_group

SWEEP = ["seed=0,1", "train.steps=3000", "train.checkpoint_every=100", "eval.grad_stats=false",
         "mlflow.sweep_figures=false"]
LAUNCHERS = {"joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             "submitit_local": ["hydra/launcher=submitit_local", "hydra.sweeper.max_batch_size=2"]}


def _read(db, sql: str, *args) -> list:
    """Through a read-only connection of its own, closed after the read."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.Error:            # tables not made yet
        return []
    finally:
        con.close()


def _all_below(pid: int) -> set[int]:
    """Every process below `pid`, the resource trackers included."""
    parents: dict[int, list[int]] = {}
    for entry in (e for e in os.listdir("/proc") if e.isdigit()):
        st = stopping._stat(int(entry))
        if st is not None:
            parents.setdefault(st[1], []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for kid in parents.get(todo.pop(), []):
            out.add(kid)
            todo.append(kid)
    return out


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("launcher,signum", [("joblib", signal.SIGTERM), ("joblib", signal.SIGHUP),
                                             ("submitit_local", signal.SIGINT)])
def test_a_stop_signal_to_the_launcher_ends_the_sweep_and_its_workers(tmp_path, launcher, signum):
    if launcher == "submitit_local" and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed")
    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", "-m", *LAUNCHERS[launcher], *SWEEP],
                            cwd=tmp_path, env=job_env(f"sqlite:///{db}"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(_read(db, "select distinct run_uuid from latest_metrics where key='train/loss'")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        below = _all_below(proc.pid)
        assert below, "no worker processes"
        t0 = time.monotonic()
        proc.send_signal(signum)            # the launcher only, not its process group
        out, err = proc.communicate(timeout=180)
        took = time.monotonic() - t0
        time.sleep(3)                       # the resource trackers end once their owner has
        left = [p for p in below if stopping.alive(p)]
    finally:
        stop_group(proc)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert not left, f"outlived the sweep: {left}"
    runs = dict(_read(db, "select run_uuid, status from runs"))
    tags = {}
    for run_id, key, value in _read(db, "select run_uuid, key, value from tags"):
        tags.setdefault(run_id, {})[key] = value
    (parent,) = [r for r in runs if tags[r].get("sweep.parent") == "true"]
    kids = [r for r in runs if r != parent]
    assert runs[parent] == "KILLED"
    name = signal.Signals(signum).name
    assert tags[parent]["failure_reason"].startswith(f"stopped by {name}")
    assert (tags[parent]["sweep.killed"], tags[parent]["sweep.finished"]) == ("2", "0")
    assert len(kids) == 2 and {runs[k] for k in kids} == {"KILLED"}
    for k in kids:
        assert tags[k]["failure_reason"].startswith("preempted by SIGTERM: checkpoint at step ")
        assert tags[k]["failure_reason"].endswith("rerun the same command to resume")
    assert "sweep summary: finished 0, failed 0, skipped 0, killed 2" in out
    print(f"{launcher} {name}: sweep ended in {took:.1f} s")
