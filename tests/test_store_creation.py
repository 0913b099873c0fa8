"""Two commands that start at the same moment against a store that does not
exist yet: MLflow's schema migration is not safe against a concurrent one
(`duplicate column name`, `table ... already exists`), so the store is
created under an exclusive lock beside it (bench.tracking.store); the
config is then trained by one of them only (bench.job.owner)."""
from __future__ import annotations

import threading

import pytest

from bench.tracking import store as S


@pytest.mark.slow
@pytest.mark.faults
def test_two_identical_commands_on_a_new_store_give_one_run(tmp_path):
    """The store is created once (no migration race), and the config is
    trained once: the second command finds it held and exits in one line."""
    from bench.job.owner import EXIT_HELD
    from tests.test_owner import held_line, together
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outs = together(tmp_path, uri, "train.steps=300", "train.eval_every=300",
                    "eval.grad_stats=false")
    assert sorted(o.returncode for o in outs) == [0, EXIT_HELD], [o.stderr[-2000:] for o in outs]
    (held,) = [o for o in outs if o.returncode == EXIT_HELD]
    (line,) = held_line(held.stderr)
    assert "Traceback" not in held.stderr and "duplicate column" not in held.stderr
    c = S.client(uri)
    runs = S.search_pages(c, c.get_experiment_by_name("discrete-latent-bench").experiment_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert f"run {runs[0].info.run_id}" in line and " pid=" in line


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
