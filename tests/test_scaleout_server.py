"""Jobs against a real shared `mlflow server` (tests/mlflow_server.py, own
sqlite backend in tmp): a submitit_local sweep whose every run and metric
point arrives, an outage the jobs ride out, and one longer than the patience
that fails naming the URI. Every server is stopped by its pid (the context
manager). Run: python -m pytest -q tests/test_scaleout_server.py"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.tracking import identity, store as tracking
from tests import mlflow_server as M
from tests.processes import job_env

EXPERIMENT = "discrete-latent-bench"
STEPS, EVAL_EVERY, LOG_EVERY = 12, 4, 2
SHORT = ["experiment=smoke", f"train.steps={STEPS}", f"train.eval_every={EVAL_EVERY}",
         f"train.log_every={LOG_EVERY}"]

pytestmark = [pytest.mark.slow, pytest.mark.faults]   # outages of a shared server


def bench(cwd: Path, uri: str, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=cwd, env=job_env(uri),
                          capture_output=True, text=True, timeout=timeout)


def expected_steps(steps: int, eval_every: int, log_every: int) -> tuple[list[int], list[int]]:
    """(steps with evaluation metrics, steps with train/perf metrics): bench.job.train's contract."""
    ev = sorted({0, steps} | set(range(eval_every, steps + 1, eval_every)))
    tr = sorted({steps} | set(range(log_every, steps + 1, log_every)))
    return ev, tr


def check_every_point(c, run, steps: int, eval_every: int, log_every: int) -> None:
    ev, tr = expected_steps(steps, eval_every, log_every)
    keys = set(run.data.metrics)
    assert {"val/elbo", "train/loss", "grad/log10_var", "perf/steps_per_s"} <= keys, keys
    for key in keys:
        want = ev if key.split("/")[0] in ("val", "grad", "collapse", "latent") else \
            sorted(set(ev) | set(tr)) if key in ("perf/wall_seconds", "perf/eval_seconds") else \
            [0] if key.startswith("model/") else tr           # parameter counts: once, at step 0
        got = [m.step for m in c.get_metric_history(run.info.run_id, key)]
        assert sorted(got) == want, (key, got, want)


def test_submitit_local_sweep_logs_everything_to_the_server(tmp_path):
    """Four jobs in parallel processes through submitit_local. The jobs' own
    environment is made wrong on purpose (hydra.job.env_set: another store,
    another experiment and parent): the ids must come from the pickled
    callback (bench/tracking/callbacks.py), not from inherited variables."""
    wrong = tmp_path / "wrong.db"
    bogus = [f"+hydra.job.env_set.MLFLOW_TRACKING_URI=sqlite:///{wrong}",
             "+hydra.job.env_set.BENCH_PARENT_RUN_ID=bogus", "+hydra.job.env_set.BENCH_EXPERIMENT_ID=999"]
    with M.mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as srv:
        out = bench(tmp_path, srv.url, "-m", "hydra/launcher=submitit_local", "seed=0,1,2,3", *SHORT, *bogus)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "sweep summary: finished 4, failed 0, skipped 0" in out.stdout
        c = tracking.client(srv.url)
        exp = c.get_experiment_by_name(EXPERIMENT)
        runs = c.search_runs([exp.experiment_id], max_results=100)
        parents = [r for r in runs if r.data.tags.get("sweep.parent") == "true"]
        kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
        assert len(parents) == 1 and len(kids) == 4 and len(runs) == 5
        assert parents[0].info.status == "FINISHED" and parents[0].data.tags["sweep.finished"] == "4"
        assert sorted(r.data.tags["seed"] for r in kids) == ["0", "1", "2", "3"]
        for r in kids:
            assert r.info.status == "FINISHED", r.data.tags.get("failure_reason")
            assert r.data.tags[identity.PARENT_TAG] == parents[0].info.run_id
            check_every_point(c, r, STEPS, EVAL_EVERY, LOG_EVERY)
        # parallel: some two jobs ran at the same time
        spans = sorted((r.info.start_time, r.info.end_time) for r in kids)
        assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    assert not wrong.exists()                 # nothing went to the store the environment named


def test_outage_is_retried_and_loses_nothing(tmp_path, monkeypatch):
    """The server is stopped (by pid) while a job is training, and restarted on
    the same port and backend 6 s later: the job finishes and every point is there."""
    steps, log_every, eval_every = 3000, 10, 1000
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    with M.mlflow_server(backend, tmp_path / "artifacts") as srv:
        port, url = srv.port, srv.url
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.run", "estimator=gumbel", f"train.steps={steps}",
             f"train.log_every={log_every}", f"train.eval_every={eval_every}", "train.batch_size=16",
             "eval.grad_samples=4", "eval.iwae_samples=4", "mlflow.patience_s=120"],
            cwd=tmp_path, env=job_env(url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        c = tracking.client(url)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:     # until training has logged
            exp = c.get_experiment_by_name(EXPERIMENT)
            runs = c.search_runs([exp.experiment_id]) if exp else []
            if runs and "train/loss" in runs[0].data.metrics:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job ended before the outage: make it longer"
    # the server is down (stopped by pid on leaving the block); the job goes on
    t_down = time.time()
    time.sleep(6)
    assert proc.poll() is None, "the job did not wait for the store"
    monkeypatch.setattr(M, "free_port", lambda: port)             # same address as before
    with M.mlflow_server(backend, tmp_path / "artifacts") as srv:
        assert srv.url == url
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log[-3000:]
        # the job met the outage and said so (bench.tracking.store.retrying)
        assert "unavailable" in log, log[-3000:]
        assert time.time() - t_down > 6
        c = tracking.client(url)
        exp = c.get_experiment_by_name(EXPERIMENT)
        runs = c.search_runs([exp.experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        check_every_point(c, runs[0], steps, eval_every, log_every)


def test_outage_longer_than_patience_fails_naming_the_uri(tmp_path):
    url = f"http://127.0.0.1:{M.free_port()}"           # nothing listens there
    t0 = time.time()
    out = bench(tmp_path, url, "experiment=smoke", "mlflow.patience_s=3", timeout=120)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert url in text and "mlflow.patience_s=3" in text, text[-3000:]
    assert time.time() - t0 < 90
