"""Two commands that start at the same moment against a store that does not
exist yet: MLflow's schema migration is not safe against a concurrent one
(`duplicate column name`, `table ... already exists`), so the store is
created under an exclusive lock beside it (bench.tracking.store)."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from bench.tracking import store as S
from tests.processes import job_env, stop_group


@pytest.mark.slow
@pytest.mark.faults
def test_two_identical_commands_create_a_new_store_together(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "bench.run", "train.steps=5", "train.eval_every=5",
            "eval.grad_stats=false", "rerun=true"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=job_env(uri), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for _ in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            stop_group(p)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    c = S.client(uri)
    exp = c.get_experiment_by_name("discrete-latent-bench")
    runs = S.search_pages(c, exp.experiment_id)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_store_creation_is_serialised_by_a_lock_beside_the_store(tmp_path):
    """While one process holds `<db>.lock`, another's ensure_experiment
    creates no table; once it is released, it creates the store."""
    import fcntl
    import sqlite3
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 -- imported before the clock runs
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    done = threading.Event()

    def tables() -> int:
        con = sqlite3.connect(str(db))
        try:
            return con.execute("select count(*) from sqlite_master").fetchone()[0]
        finally:
            con.close()

    with open(f"{db}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: (S.ensure_experiment(uri, "e"), done.set()), daemon=True)
        t.start()
        assert not done.wait(6)             # migrating an empty store takes ~2-5 s unlocked
        assert tables() == 0
    assert done.wait(120)
    assert tables() > 0 and S.client(uri).get_experiment_by_name("e") is not None
