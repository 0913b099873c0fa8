"""The Ray launchers, for real, where the `ray` extra is installed: an
environment of its own (docs/cluster.md, "Ray"), which .ci/run builds and runs
`pytest -m ray` in. Without hydra-ray-launcher these tests are skipped.

1. `hydra/launcher=ray`: the plugin starts a local Ray; two jobs; every run
   and metric point lands under one parent in the sqlite store.
2. `hydra/launcher=ray_cluster`: jobs join a running head (`ray start --head
   --block`, started here in a process group of its own and stopped by its
   pid), the way a cluster is used. The jobs' environment is made wrong on
   purpose: store and parent ids must come from the pickled callback.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("hydra_plugins.hydra_ray_launcher")

from bench.tracking import identity, store as tracking  # noqa: E402
from tests.mlflow_server import free_port  # noqa: E402
from tests.processes import job_env, stop_group  # noqa: E402
from tests.stores import empty_db  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

EXPERIMENT = "discrete-latent-bench"
STEPS, LOG_EVERY = 20, 10
SHORT = ["experiment=smoke", f"train.steps={STEPS}", f"train.log_every={LOG_EVERY}",
         f"train.eval_every={STEPS}"]


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """Ray's temp dir for one test. Isolation: `ray.init()` without an address
    joins whatever cluster <temp dir>/ray/ray_current_cluster names, stale or
    not. Short, under /tmp: Ray's unix sockets live there (107-byte limit)."""
    folder = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def env_for(uri: str, ray_tmp: str, **extra: str) -> dict:
    env = job_env(uri, RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp)
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


@contextmanager
def ray_head(port: int, log: Path, ray_tmp: str, grace_s: float = 10.0) -> Iterator[str]:
    """A one-node Ray cluster on 127.0.0.1:port; yields its address. Stopped by
    its process group id: SIGTERM, then SIGKILL after grace_s (Ray's own
    shutdown can wait on GCS for longer)."""
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
           "--num-cpus", "2", "--port", str(port), "--node-ip-address", "127.0.0.1",
           "--include-dashboard", "false"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env_for("unused", ray_tmp))
    try:
        deadline = time.time() + 60
        while "block forever" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(proc, grace_s)


def check_sweep(uri: str, n_jobs: int) -> None:
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep.parent") == "true"]
    kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
    assert len(parents) == 1 and len(kids) == n_jobs and len(runs) == n_jobs + 1
    for r in kids:
        assert r.info.status == "FINISHED", r.data.tags.get("failure_reason")
        assert r.data.tags[identity.PARENT_TAG] == parents[0].info.run_id
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "train/loss")]
        assert steps == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), steps
        assert [m.step for m in c.get_metric_history(r.info.run_id, "val/elbo")] == [0, STEPS]


def test_local_ray_sweep_logs_everything(tmp_path, ray_tmp):
    uri = empty_db(tmp_path)
    out = subprocess.run([sys.executable, "-m", "bench.run", "-m", "hydra/launcher=ray",
                          "seed=0,1", *SHORT], cwd=tmp_path, env=env_for(uri, ray_tmp),
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "sweep summary: finished 2, failed 0, skipped 0" in out.stdout
    check_sweep(uri, 2)


def test_ray_cluster_jobs_get_their_ids_from_the_callback(tmp_path, ray_tmp):
    uri = empty_db(tmp_path)
    wrong = tmp_path / "wrong.db"
    bogus = [f"+hydra.job.env_set.MLFLOW_TRACKING_URI=sqlite:///{wrong}",
             "+hydra.job.env_set.BENCH_PARENT_RUN_ID=bogus",
             "+hydra.job.env_set.BENCH_EXPERIMENT_ID=999"]
    with ray_head(free_port(), tmp_path / "ray_head.log", ray_tmp) as address:
        out = subprocess.run([sys.executable, "-m", "bench.run", "-m", "hydra/launcher=ray_cluster",
                              "estimator=gumbel,reinforce", *SHORT, *bogus], cwd=tmp_path,
                             env=env_for(uri, ray_tmp, RAY_ADDRESS=address),
                             capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "sweep summary: finished 2, failed 0, skipped 0" in out.stdout
    check_sweep(uri, 2)
    assert not wrong.exists()
