"""The real entry point, `python -m bench.run`, as a subprocess against a
temporary sqlite store: sweeps under one parent, rerun skipping, failures that
do not stop a sweep, joblib parallel jobs that lose nothing, Ctrl-C -> KILLED."""
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.tracking import identity, store as tracking

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "discrete-latent-bench"
SMOKE = ["experiment=smoke"]            # 6 steps, eval at 0, 3, 6; train metrics at 2, 4, 6
METRICS = ("train/loss", "train/elbo", "val/elbo", "val/recon", "val/kl", "val/iwae",
           "grad/log10_var", "grad/snr", "collapse/active_units", "collapse/mutual_info",
           "collapse/kl_min", "collapse/code_perplexity", "perf/steps_per_s", "perf/peak_mem_mb")

pytestmark = pytest.mark.slow


def bench(cwd: Path, *args: str, timeout: int = 300, status: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == status, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def store(uri: str):
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.parent") == "true"]
    kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
    return c, exp, parents, kids


def newest(parents):
    return max(parents, key=lambda r: r.info.start_time)


def test_sweep_parent_children_metrics_and_rerun(tmp_path, tracking_uri):
    grid = ["estimator=gumbel,reinforce,exact", "conditioning=concat,film", "kl=constant,cyclical"]
    out = bench(tmp_path, "-m", *grid, *SMOKE)
    assert "sweep summary: finished 12, failed 0, skipped 0" in out.stdout
    assert "it/s" not in out.stdout + out.stderr and "\r" not in out.stdout   # no bar off a tty
    c, exp, parents, kids = store(tracking_uri)
    assert len(parents) == 1 and len(kids) == 12
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.finished"] == "12" and parent.data.tags["sweep.skipped"] == "0"
    combos = set()
    for r in kids:
        t = r.data.tags
        assert r.info.status == "FINISHED", t.get("failure_reason")
        assert t[identity.PARENT_TAG] == parent.info.run_id
        assert t["sweep_id"] == parent.data.tags["sweep_id"]
        for k in ("estimator", "conditioning", "task", "latent", "kl", "free_bits", "seed",
                  "git_commit", "config_hash"):
            assert t.get(k), k
        combos.add((t["estimator"], t["conditioning"], t["kl"]))
        # exact has zero gradient variance by construction: no log10_var, no SNR
        want = set(METRICS) - ({"grad/log10_var", "grad/snr"} if t["estimator"] == "exact" else set())
        assert want <= set(r.data.metrics), want - set(r.data.metrics)
        assert ("grad/log10_var" in r.data.metrics) == (t["estimator"] != "exact")
        assert [m.step for m in c.get_metric_history(r.info.run_id, "val/elbo")] == [0, 3, 6]
        assert r.data.params["train.steps"] == "6" and r.data.params["estimator.name"] == t["estimator"]
    assert len(combos) == 12
    assert "grad/bias" in next(r for r in kids if r.data.tags["estimator"] == "gumbel").data.metrics
    arts = [f.path for f in c.list_artifacts(kids[0].info.run_id)]
    assert "config.yaml" in arts

    # the same sweep again: everything skipped, nothing new
    out = bench(tmp_path, "-m", *grid, *SMOKE)
    assert "skipped 12" in out.stdout
    c, exp, parents, kids = store(tracking_uri)
    again = newest(parents)
    assert len(kids) == 12 and again.data.tags["sweep.skipped"] == "12"
    assert again.data.tags["sweep.finished"] == "0"

    # an overlapping sweep redoes only what is new; rerun=true forces a finished config
    bench(tmp_path, "-m", "estimator=gumbel,vimco", "conditioning=concat", "kl=constant", *SMOKE)
    bench(tmp_path, "estimator=gumbel", "conditioning=concat", "kl=constant", "rerun=true", *SMOKE)
    c, exp, parents, kids = store(tracking_uri)
    third = newest(parents)
    assert third.data.tags["sweep.skipped"] == "1" and third.data.tags["sweep.finished"] == "1"
    runs = c.search_runs([exp.experiment_id], "tags.estimator = 'gumbel' and tags.conditioning = 'concat'"
                         " and tags.kl = 'constant'")
    assert len(runs) == 2 and len({r.data.tags["config_hash"] for r in runs}) == 1
    single = [r for r in runs if identity.PARENT_TAG not in r.data.tags]
    assert len(single) == 1 and "sweep_id" not in single[0].data.tags    # a run of its own


def test_failed_jobs_are_recorded_and_the_sweep_goes_on(tmp_path, tracking_uri):
    """A NaN loss and a bad config each end FAILED with the reason; the rest
    finish; the command exits 3 (a sweep with failed jobs), with the table in
    the parent's description."""
    out = bench(tmp_path, "-m", "estimator=vimco", "estimator.n_samples=1,2",
                "debug.nan_at_step=null,1", *SMOKE, status=3)
    assert "finished 1, failed 3" in out.stdout
    c, exp, parents, kids = store(tracking_uri)
    by = {(r.data.tags["job"]): r for r in kids}
    assert len(by) == 4 and parents[0].data.tags["sweep.failed"] == "3"
    note = parents[0].data.tags["mlflow.note.content"]
    assert note.startswith("**Sweep summary:** finished 1, failed 3") and note.count("](#/experiments/") == 4
    for r in kids:
        p = r.data.params
        reason = r.data.tags.get("failure_reason", "")
        if p["estimator.n_samples"] == "1":
            assert r.info.status == "FAILED" and "estimator.n_samples=1 is not valid" in reason
        elif p["debug.nan_at_step"] == "1":
            assert r.info.status == "FAILED" and "non-finite train/loss at step 1" in reason
            assert "traceback.txt" in [f.path for f in c.list_artifacts(r.info.run_id)]
        else:
            assert r.info.status == "FINISHED"


def test_joblib_parallel_sweep_loses_nothing(tmp_path, tracking_uri):
    bench(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2,3",
          "estimator=gumbel", *SMOKE)
    c, exp, parents, kids = store(tracking_uri)
    assert len(parents) == 1 and len(kids) == 4
    assert sorted(r.data.tags["seed"] for r in kids) == ["0", "1", "2", "3"]
    for r in kids:
        assert r.info.status == "FINISHED"
        for key, steps in (("train/loss", [2, 4, 6]), ("val/elbo", [0, 3, 6]),
                           ("grad/log10_var", [0, 3, 6]), ("perf/steps_per_s", [2, 4, 6])):
            assert [m.step for m in c.get_metric_history(r.info.run_id, key)] == steps, key
    # nothing filed under another experiment (set_experiment races)
    others = [e for e in c.search_experiments() if e.name != EXPERIMENT]
    assert not c.search_runs([e.experiment_id for e in others]) if others else True


def _store_rows(db: Path, sql: str) -> list:
    """Rows from the store through a fresh read-only sqlite connection: the poll
    shares no engine, session or pool state with anything this process ran before."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:        # busy, or tables not there yet: ask again
        return []


def test_ctrl_c_marks_the_run_killed(tmp_path, tracking_uri):
    # PYTHONFAULTHANDLER: if the child hangs, SIGABRT makes it print every thread's stack
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    db = tmp_path / "mlflow.db"
    # log_every=100: on a loaded machine a point every 10 steps queues faster than
    # sqlite writes it, and Ctrl-C drains the whole queue before the run ends
    # output to files, not pipes: a pipe nobody reads fills up and blocks the child
    out, err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", "train.steps=1000000",
                             "train.eval_every=1000000", "train.log_every=100"],
                            cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)

    def child_output() -> str:
        return ("\n--- stdout ---\n" + (tmp_path / "stdout.txt").read_text()[-2000:]
                + "\n--- stderr ---\n" + (tmp_path / "stderr.txt").read_text()[-4000:])

    try:
        deadline = time.time() + 120
        while not _store_rows(db, "SELECT 1 FROM latest_metrics WHERE key = 'train/loss'"):
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"no train/loss in the store after 120 s (exit status "
                                     f"{proc.poll()}):{child_output()}")
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)        # faulthandler: the stacks to stderr
            proc.wait(timeout=30)
            raise AssertionError(f"no exit 120 s after Ctrl-C:{child_output()}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close(), err.close()
    runs = _store_rows(db, "SELECT r.status, t.value FROM runs r JOIN experiments e "
                           "ON r.experiment_id = e.experiment_id LEFT JOIN tags t ON "
                           f"t.run_uuid = r.run_uuid AND t.key = 'failure_reason' WHERE e.name = '{EXPERIMENT}'")
    assert runs == [("KILLED", "KeyboardInterrupt")], child_output()


def test_job_process_freezes_the_heap_at_exit():
    """bench.job.runner registers gc.freeze once per process, to run after the hooks
    registered later (the process's clean-up) and skip the shutdown collections."""
    code = ("import atexit, gc, bench.job.runner as job\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, flush=True))\n"
            "n = atexit._ncallbacks(); job._quick_exit(); job._quick_exit()\n"
            "print('hooks added', atexit._ncallbacks() - n, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["hooks added 1", "frozen True"], out.stdout
