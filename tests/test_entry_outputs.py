"""What the quick start's first command prints and leaves behind, as the
README states it: exit 0, the final values and the `mlflow ui` command on
stdout; in the current directory the store (`mlflow.db` and its lock file),
`mlruns/` and one `outputs/<date>/<time>/` folder whose `run.log` holds the
run's lines (a sweep: `multirun/<date>/<time>/<job>/run.log` per job); and a
configuration error: exit 2, nothing created."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.processes import ROOT


def _bench_run(cwd, *overrides):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BENCH_", "MLFLOW_TRACKING_URI"))}   # the default store: ./mlflow.db
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "bench.run", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_run_prints_its_result_and_leaves_the_store_and_its_log(tmp_path):
    out = _bench_run(tmp_path, "train.steps=20", "eval.grad_stats=false")
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"\[bench\] run \w+ FINISHED: val/elbo=-?\d", out.stdout)
    assert "mlflow ui --backend-store-uri sqlite:///" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock",
                                                          "mlruns", "outputs"]
    (day,) = (tmp_path / "outputs").iterdir()
    (folder,) = day.iterdir()
    log = (folder / "run.log").read_text()
    # the run's own lines: which run, each evaluation, the end
    assert "config_hash" in log and "step 0: val/elbo=" in log
    assert "step 20: val/elbo=" in log and "FINISHED: val/elbo=" in log


def test_a_configuration_error_exits_2_and_creates_nothing(tmp_path):
    out = _bench_run(tmp_path, "train.lr=-1")
    assert out.returncode == 2 and "train.lr" in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []               # no outputs/, no mlflow.db, no mlruns/


def test_a_sweep_job_has_its_own_run_log(tmp_path):
    out = _bench_run(tmp_path, "-m", "train.steps=10", "eval.grad_stats=false",
                     "mlflow.sweep_figures=false")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()
    (log,) = (tmp_path / "multirun").glob("*/*/0/run.log")
    text = log.read_text()
    assert "step 10: val/elbo=" in text and "FINISHED" in text


def test_a_failed_run_logs_why_in_run_log(tmp_path):
    out = _bench_run(tmp_path, "train.steps=20", "debug.nan_at_step=5", "eval.grad_stats=false")
    assert out.returncode == 1
    (log,) = (tmp_path / "outputs").glob("*/*/run.log")
    text = log.read_text()
    assert "FAILED: NonFiniteError" in text and "Traceback" in text
