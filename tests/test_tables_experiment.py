"""`bench.tables` without --experiment: the experiment with the most recent
run, named in one line; no store is ever created; nothing to read exits 2
naming what exists."""
from __future__ import annotations

import subprocess
import sys

from bench.results import tables
from tests.processes import job_env
from tests.test_tables_store import T0, fresh_store, job, make_run


def _cli(cwd, *args, **env):
    e = job_env("unused", **env)
    if "MLFLOW_TRACKING_URI" not in env:
        e.pop("MLFLOW_TRACKING_URI")            # the default store: ./mlflow.db
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=300)


def test_tables_reads_the_experiment_a_real_run_logged_to(tmp_path):
    """Runs of another experiment than the default one (experiment=disarm_linear
    logs to `disarm`): found without --experiment, and named."""
    run = _cli(tmp_path, "bench.run", "train.steps=5", "train.eval_every=5", "eval.grad_stats=false",
               "mlflow.experiment=other")
    assert run.returncode == 0, run.stderr[-3000:]
    out = _cli(tmp_path, "bench.tables", "--out", str(tmp_path / "t"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "experiment 'other'" in out.stderr
    assert "other" in (tmp_path / "t" / "elbo.md").read_text()


def test_no_store_is_created_and_the_uri_named(tmp_path):
    out = _cli(tmp_path, "bench.tables")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_most_recent_experiment_holding_runs_wins(tmp_path, monkeypatch, capsys):
    client, uri, old = fresh_store(tmp_path / "s", "older")
    make_run(client, old, job("gumbel")["tags"], {"val/elbo": -1.0}, start_ms=T0)
    new = client.create_experiment("newer")
    make_run(client, new, job("exact")["tags"], {"val/elbo": -2.0}, start_ms=T0 + 1000)
    client.create_experiment("empty")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tables.main(["--out", str(tmp_path / "t"), "--no-artifacts"]) == 0
    err = capsys.readouterr().err
    assert "experiment 'newer'" in err and "'older'" in err and "'empty'" not in err
    assert "exact" in (tmp_path / "t" / "elbo.md").read_text()


def test_a_store_without_runs_lists_its_experiments(tmp_path, monkeypatch, capsys):
    _, uri, _ = fresh_store(tmp_path / "s", "nothing-yet")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tables.main(["--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "no experiment" in err and "'nothing-yet'" in err
    assert not (tmp_path / "t").exists()
