"""Fault injection against the real entry point, `python -m bench.run`, as a
user's cluster inflicts it: a bad config (nothing created, a fast named
error), a sweep killed with SIGKILL mid-job (an OOM kill, a pre-empted node)
and then rerun. Every process is started in a session of its own and stopped
by its id (tests/processes.py); every wait is bounded."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.tracking import identity, liveness, store as tracking
from tests.processes import job_env, stop_group

EXPERIMENT = "discrete-latent-bench"
# short enough for a test, long enough that a live job is never taken for lost
LIVENESS = ["mlflow.heartbeat_s=0.5", "mlflow.lost_after_s=3"]
JOB = ["train.steps=600", "train.log_every=50", "train.eval_every=200", "eval.grad_stats=false"]

pytestmark = pytest.mark.faults


def _bench(cwd: Path, uri: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=cwd,
                            env=job_env(uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _runs(uri: str):
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    return c, ([] if exp is None else tracking.search_pages(c, exp.experiment_id))


@pytest.mark.parametrize("args", [
    ["estimator=vimco", "estimator.n_samples=1"],
    ["-m", "estimator=vimco", "estimator.n_samples=1", "seed=0,1"],
])
def test_bad_config_creates_nothing_and_says_why(tmp_path, args):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t0 = time.monotonic()
    out = _bench(tmp_path, uri, *args, timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-2000:]
    assert "estimator.n_samples=1 is not valid" in out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())     # no store, no outputs/
    assert took < 30, took       # ~2.5-4 s on the 2-core VM; bounded loosely for a loaded machine


def test_a_model_that_refuses_its_options_opens_no_run(tmp_path):
    """What only the model family can judge (the conv model takes adaln and
    spatial_concat, not the default concat) is refused before a run opens:
    one message naming the valid values, no traceback, exit status 2."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = _bench(tmp_path, uri, "model.family=conv", "latent.D=4", timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "conditioning 'concat' is not supported by the conv model" in out.stderr
    assert "adaln" in out.stderr and "spatial_concat" in out.stderr
    assert "Traceback" not in out.stderr
    assert _runs(uri)[1] == []


@pytest.mark.parametrize("args, store, what", [
    (["train.checkpoint_dir={afile}/ck"], "mlflow.db", "train.checkpoint_dir"),
    (["hydra.run.dir={afile}/out"], "mlflow.db", "hydra.run.dir"),
    (["-m", "seed=0,1", "hydra.sweep.dir={afile}/out"], "mlflow.db", "hydra.sweep.dir"),
    ([], "afile/mlflow.db", "MLflow tracking store"),
])
def test_an_unwritable_place_is_named_before_anything_runs(tmp_path, args, store, what):
    """A folder under a regular file cannot be created, even by root: the
    command names it in one line before step 0, exit 1, nothing created
    (a checkpoint folder used to fail at the first checkpoint, work lost)."""
    afile = tmp_path / "afile"
    afile.write_text("")
    uri = f"sqlite:///{tmp_path / store}"
    out = _bench(tmp_path, uri, *(a.format(afile=afile) for a in args), "train.steps=5",
                 timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("[bench] error:")]
    assert len(errors) == 1 and what in errors[0] and str(afile) in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == [afile]                  # no store, no outputs/


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("launcher, seeds, in_flight", [
    ([], "0,1,2", 1),                                              # basic: one job at a time
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "0,1,2,3", 2),
])
def test_kill_9_mid_sweep_then_rerun(tmp_path, tracking_uri, launcher, seeds, in_flight):
    args = ["-m", *launcher, f"seed={seeds}", *JOB, *LIVENESS]
    n_jobs = len(seeds.split(","))
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=tmp_path,
                            env=job_env(tracking_uri), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def started():
            c, runs = _runs(tracking_uri)
            kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
            # the kill lands mid-job: a RUNNING child that has logged training metrics
            mid = [r for r in kids if r.info.status == "RUNNING" and "train/loss" in r.data.metrics]
            return len(kids) >= in_flight + (1 if not launcher else 0) and mid
        _wait_for(started, 240, "a job in flight", proc)
        os.killpg(proc.pid, signal.SIGKILL)           # no exit hook, no finally: an OOM kill
        proc.wait(timeout=30)
    finally:
        stop_group(proc)
    c, runs = _runs(tracking_uri)
    dead = {r.info.run_id for r in runs if r.info.status == "RUNNING"}
    assert len(dead) >= 2                              # the parent and at least one job

    time.sleep(3.5)                                    # > mlflow.lost_after_s: their heartbeat is stale
    out = _bench(tmp_path, tracking_uri, *args, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "marked" in out.stderr and "lost" in out.stderr

    c, runs = _runs(tracking_uri)
    assert not [r for r in runs if r.info.status == "RUNNING"]           # none left RUNNING
    for r in runs:
        if r.info.run_id in dead:
            assert r.info.status == "FAILED"
            assert r.data.tags["failure_reason"].startswith("lost: no heartbeat since ")
            assert r.info.end_time is not None
    jobs = [r for r in runs if "config_hash" in r.data.tags]
    finished = Counter(r.data.tags["config_hash"] for r in jobs if r.info.status == "FINISHED")
    assert len(finished) == n_jobs and set(finished.values()) == {1}      # one each, no duplicate
    for r in jobs:
        if r.info.status == "FINISHED":                                    # no point lost
            steps = [m.step for m in c.get_metric_history(r.info.run_id, "val/elbo")]
            assert steps == [0, 200, 400, 600], steps
            assert len(c.get_metric_history(r.info.run_id, "train/loss")) == 600 // 50
    parents = [r for r in runs if r.data.tags.get("sweep.parent") == "true"]
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"]
    assert liveness.TAG in parents[0].data.tags


HOLD = """import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


def _points(db: Path, key: str) -> int:
    import sqlite3
    try:
        con = sqlite3.connect(str(db), timeout=1)
        try:
            return con.execute("select count(*) from metrics where key = ?", (key,)).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_store_locked_longer_than_the_patience_stops_the_sweep(tmp_path, tracking_uri):
    db = tmp_path / "mlflow.db"
    args = ["-m", "seed=0,1", "train.steps=600", "train.log_every=1", "train.eval_every=300",
            "eval.grad_stats=false", "mlflow.patience_s=3"]
    sweep = subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=tmp_path,
                             env=job_env(tracking_uri), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    holder = None
    try:
        _wait_for(lambda: _points(db, "train/loss") > 20, 240, "the first metric points", sweep)
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), "12"], text=True,
                                  stdout=subprocess.PIPE, start_new_session=True)
        assert holder.stdout.readline().strip() == "locked"
        out, err = sweep.communicate(timeout=300)
    finally:
        stop_group(sweep)
        if holder is not None:
            stop_group(holder)
    assert sweep.returncode == 1, err[-3000:]
    assert "retrying for up to 3 s (mlflow.patience_s)" in err      # the notice, inside the patience
    assert "Traceback" not in err
    assert "sweep stopped" in out and "jobs not started: 1" in out
    c, runs = _runs(tracking_uri)
    kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
    assert len(kids) == 1                                           # job 1 was not started
    run = kids[0]
    reason = run.data.tags["failure_reason"]
    assert run.info.status == "FAILED" and tracking_uri in reason and "patience_s=3)" in reason
    waited = int(reason.split(" failed for ")[1].split(" s ")[0])
    assert waited <= 3 + 2, reason                                  # honoured within a few seconds
    unwritten = int(reason.rsplit("; ", 1)[1].split(" metric point")[0])
    written = len(c.get_metric_history(run.info.run_id, "train/loss"))
    assert unwritten > 0 and written + unwritten <= 600
    parent = next(r for r in runs if r.data.tags.get("sweep.parent") == "true")
    assert parent.info.status == "FAILED" and parent.data.tags["sweep.not_started"] == "1"

    out = _bench(tmp_path, tracking_uri, *args, timeout=600)     # the store is back: redo both
    assert out.returncode == 0, out.stderr[-2000:]
    c, runs = _runs(tracking_uri)
    finished = Counter(r.data.tags["config_hash"] for r in runs if r.info.status == "FINISHED"
                       and "config_hash" in r.data.tags)
    assert len(finished) == 2 and set(finished.values()) == {1}
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.parametrize("uri, words", [
    ("sqlite:////proc/bench-test/x.db", ("/proc/bench-test/x.db", "cannot be opened")),
    ("http://127.0.0.1:{port}", ("http://127.0.0.1:", "failed for", "patience_s=3")),
])
def test_unusable_store_fails_once_fast_and_named(tmp_path, uri, words):
    from tests.mlflow_server import free_port
    uri = uri.format(port=free_port())                              # nothing listens there
    t0 = time.monotonic()
    out = _bench(tmp_path, uri, "-m", "seed=0,1", "train.steps=5", "mlflow.patience_s=3",
                 timeout=180)
    took = time.monotonic() - t0
    assert out.returncode == 1, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("[bench] error:")]
    assert len(errors) == 1, out.stderr[-3000:]                     # once, not once per layer
    assert all(w in errors[0] for w in words), errors[0]
    assert "Traceback" not in out.stderr
    assert took < 60, took       # imports (5-10 s on a loaded 2-core VM) + at most the patience


@pytest.mark.slow
def test_shared_server_live_run_is_never_lost_and_a_dead_one_is(tmp_path):
    """Two processes on one `mlflow server`: a live run elsewhere keeps its
    RUNNING status through a reaper's pass; killed -9, it is marked lost."""
    from tests.mlflow_server import mlflow_server
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as srv:
        job = subprocess.Popen([sys.executable, "-m", "bench.run", "train.steps=100000",
                                "train.log_every=50", "eval.grad_stats=false", *LIVENESS],
                               cwd=tmp_path, env=job_env(srv.url), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            def running():
                _, runs = _runs(srv.url)
                return [r for r in runs if r.info.status == "RUNNING"
                        and "train/loss" in r.data.metrics]
            rid = _wait_for(running, 240, "the run to train", job)[0].info.run_id
            time.sleep(4)                                   # > mlflow.lost_after_s since it started
            tables = [sys.executable, "-m", "bench.tables", "--lost-after-s", "3",
                      "--no-artifacts", "--out", str(tmp_path / "results")]
            subprocess.run(tables, cwd=tmp_path, env=job_env(srv.url), timeout=240,
                           capture_output=True, check=True)
            c, _ = _runs(srv.url)
            assert c.get_run(rid).info.status == "RUNNING"   # its heartbeat is fresh
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
        finally:
            stop_group(job)
        time.sleep(3.5)
        out = subprocess.run(tables, cwd=tmp_path, env=job_env(srv.url), timeout=240,
                             capture_output=True, text=True, check=True)
        run = c.get_run(rid)
        assert run.info.status == "FAILED", out.stderr[-2000:]
        assert run.data.tags["failure_reason"].startswith("lost: no heartbeat since ")
        assert "1 lost (no heartbeat)" in (tmp_path / "results" / "status.md").read_text()
