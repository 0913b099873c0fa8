"""Fault injection on the store, against the real entry point `python -m bench.run -m`:
a shared `mlflow server` stopped mid-sweep and restarted on the same port and
backend within the patience (every run ends FINISHED, no metric point lost or
doubled, the outage announced), and two sweeps writing one sqlite store at
once, one of them through the joblib launcher (no run misfiled into the other
sweep, no point lost or doubled).

Every process (sweeps, servers) runs in a session of its own and is stopped
by its id (tests/processes.py, tests/mlflow_server.py), also when a test
fails; every wait is bounded. Run:
    python -m pytest tests/test_faults_store.py -m "faults or slow" -q
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.tracking import identity, store as tracking
from tests.mlflow_server import mlflow_server
from tests.test_faults import _points
from tests.processes import job_env, stop_group

EXPERIMENT = "discrete-latent-bench"

pytestmark = pytest.mark.faults


# -- helpers ---------------------------------------------------------------------------

def _start(cwd: Path, uri: str, name: str, *args: str) -> subprocess.Popen:
    """`python -m bench.run *args` in a session of its own, its output in files
    (a pipe nobody reads while the test polls could fill and stall the sweep)."""
    out = open(cwd / f"{name}.out", "w")
    err = open(cwd / f"{name}.err", "w")
    try:
        return subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=cwd,
                                env=job_env(uri), stdout=out, stderr=err, text=True,
                                start_new_session=True)
    finally:
        out.close()
        err.close()


def _output(cwd: Path, name: str) -> tuple[str, str]:
    return ((cwd / f"{name}.out").read_text(errors="replace"),
            (cwd / f"{name}.err").read_text(errors="replace"))


def _wait_for(pred, timeout: float, what: str, procs: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        for p in procs:
            assert p.poll() is None, f"a sweep ended (status {p.returncode}) before {what}"
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _wait(proc: subprocess.Popen, timeout: float, what: str) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{what} did not end within {timeout:.0f} s (a hang?)") from None


def _time_wait(port: int) -> int:
    """TCP connections on 127.0.0.1:port in TIME_WAIT (Linux /proc/net/tcp; 0 elsewhere)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for line in lines
               if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "06")


def _expected_steps(key: str, steps: int, eval_every: int, log_every: int) -> list[int]:
    """The steps `key` is logged at (bench.job.train's contract): evaluation at 0,
    every eval_every and the last step; train/perf/cost every log_every and the
    last step; wall and eval seconds at both; parameter counts once, at 0."""
    ev = sorted({0, steps} | set(range(eval_every, steps + 1, eval_every)))
    tr = sorted({steps} | set(range(log_every, steps + 1, log_every)))
    if key.split("/")[0] in ("val", "grad", "collapse", "latent"):
        return ev
    if key in ("perf/wall_seconds", "perf/eval_seconds"):
        return sorted(set(ev) | set(tr))
    if key.startswith("model/"):
        return [0]
    return tr


def _check_every_point(c, run, steps: int, eval_every: int, log_every: int) -> int:
    """Every metric key of `run` has every expected step exactly once (none lost,
    none doubled); returns the number of points checked."""
    keys = set(run.data.metrics)
    assert {"val/elbo", "train/loss", "perf/wall_seconds", "model/parameters"} <= keys, keys
    n = 0
    for key in sorted(keys):
        got = sorted(m.step for m in tracking.retrying(c.get_metric_history, run.info.run_id, key))
        want = _expected_steps(key, steps, eval_every, log_every)
        lost = sorted(set(want) - set(got))
        doubled = sorted(s for s, k in Counter(got).items() if k > 1)
        assert got == want, f"{run.info.run_id} {key}: lost steps {lost[:20]}, doubled {doubled[:20]}"
        n += len(got)
    return n


def _runs(uri: str):
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, f"no experiment {EXPERIMENT!r} in {uri}"
    return c, exp, tracking.search_pages(c, exp.experiment_id)


# -- a shared server restarted mid-sweep ----------------------------------------------------

# 120 train points per key and job; training (~1 s per 200 steps on a quiet core)
# outlasts the first writes, so the outage lands while job 0 trains
SRV_STEPS, SRV_EVAL, SRV_LOG = 960, 320, 8
PATIENCE_S = 90


@pytest.mark.slow
def test_server_restarted_mid_sweep_loses_nothing(tmp_path):
    """A 3-job sweep logs to a real `mlflow server`; while job 0 trains, the server's
    process group gets SIGTERM, and after 3 s a new server starts on the same port
    and backend (outage 30-45 s measured on the loaded 2-core VM, mostly the
    new server starting; inside mlflow.patience_s=90). Every run ends
    FINISHED, one per config, every metric point is there once, the retry notice
    was printed, nothing is left RUNNING or marked lost."""
    db = tmp_path / "server.db"
    backend, artifacts = f"sqlite:///{db}", tmp_path / "artifacts"
    args = ["-m", "seed=0,1,2", f"train.steps={SRV_STEPS}", f"train.log_every={SRV_LOG}",
            f"train.eval_every={SRV_EVAL}", "eval.grad_stats=false", f"mlflow.patience_s={PATIENCE_S}"]
    sweep = None
    try:
        with mlflow_server(backend, artifacts) as srv:
            port, url = srv.port, srv.url
            sweep = _start(tmp_path, url, "sweep", *args)
            # job 0 is training and writing: a few of its points are in
            _wait_for(lambda: _points(db, "train/loss") >= 4, 240, "job 0's first points", [sweep])
            written_before = _points(db, "train/loss")
            wall_down = time.time()
        # leaving the block stopped the server's process group (SIGTERM, by its pid)
        in_time_wait = _time_wait(port)
        time.sleep(3)
        assert sweep.poll() is None, "the sweep did not wait for the store"
        with mlflow_server(backend, artifacts, port=port) as srv:
            assert srv.url == url
            outage, wall_up = time.time() - wall_down, time.time()
            assert outage < PATIENCE_S - 15, f"the restart took {outage:.0f} s: the test needs a margin"
            rc = _wait(sweep, 300, "the sweep after the restart")
            out, err = _output(tmp_path, "sweep")
            assert rc == 0, out[-2000:] + err[-3000:]
            assert "sweep summary: finished 3, failed 0, skipped 0, killed 0" in out, out[-2000:]
            # the job met the outage and said so, inside the patience (bench.tracking.store.retrying)
            assert f"tracking store {url} unavailable" in err, err[-3000:]
            assert f"retrying for up to {PATIENCE_S} s (mlflow.patience_s)" in err, err[-3000:]

            c, exp, runs = _runs(url)
            assert not [r for r in runs if r.info.status == "RUNNING"]
            assert not [r for r in runs if "failure_reason" in r.data.tags]     # none marked lost
            parents = [r for r in runs if r.data.tags.get("sweep.parent") == "true"]
            kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
            assert len(parents) == 1 and len(kids) == 3 and len(runs) == 4
            assert parents[0].info.status == "FINISHED"
            assert Counter(r.data.tags["config_hash"] for r in kids).most_common(1)[0][1] == 1
            assert sorted(r.data.tags["seed"] for r in kids) == ["0", "1", "2"]
            for r in kids:
                assert r.info.status == "FINISHED"
                assert r.data.tags[identity.PARENT_TAG] == parents[0].info.run_id
                _check_every_point(c, r, SRV_STEPS, SRV_EVAL, SRV_LOG)
            # the fault hit a job in training: job 0 produced points while the server was down
            job0 = next(r for r in kids if r.data.tags["seed"] == "0")
            stamps = [m.timestamp / 1000 for m in c.get_metric_history(job0.info.run_id, "train/loss")]
            during = sum(wall_down <= t <= wall_up for t in stamps)
            assert written_before < SRV_STEPS // SRV_LOG and during > 0, (written_before, during)
            print(f"\n[faults] server restart: outage {outage:.1f} s, {in_time_wait} connection(s) "
                  f"in TIME_WAIT on the port at the restart, job 0 had {written_before} train/loss "
                  f"points in before and logged {during} during the outage")
    finally:
        if sweep is not None:
            stop_group(sweep)


# -- two sweeps writing one sqlite store --------------------------------------------------

PAR_STEPS, PAR_EVAL, PAR_LOG = 200, 100, 1          # a store write per step and job
# the basic sweep's jobs run one after another from the start; the joblib sweep's
# two run at once, after its workers have started: the two sweeps overlap
SWEEPS = {"basic": ("0,1,2", []),
          "joblib": ("3,4", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])}


@pytest.mark.slow
def test_two_sweeps_in_parallel_on_one_sqlite_store(tmp_path, tracking_uri):
    """Two independent sweeps start at the same moment on one sqlite store (made
    once before, as an earlier command would have: the tables exist, the
    experiment does not, so both launching processes race to create it), one
    with the basic launcher, the other with joblib and 2 workers: three jobs
    write a metric batch per step at once. Every run ends FINISHED under its
    own sweep's parent (parent id and sweep_id tags), one run per config,
    every metric point is there once, nothing lands in the Default experiment."""
    db = Path(tracking_uri[len("sqlite:///"):])
    common = [f"train.steps={PAR_STEPS}", f"train.log_every={PAR_LOG}",
              f"train.eval_every={PAR_EVAL}", "eval.grad_stats=false"]
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.monotonic()
    try:
        for name, (seeds, launcher) in SWEEPS.items():
            procs[name] = _start(tmp_path, tracking_uri, name, "-m", *launcher, f"seed={seeds}", *common)
        deadline = time.monotonic() + 300
        rcs = {name: _wait(p, max(1.0, deadline - time.monotonic()), f"sweep {name}")
               for name, p in procs.items()}
    finally:
        for p in procs.values():
            stop_group(p)
    took = time.monotonic() - t0
    outs = {name: _output(tmp_path, name) for name in SWEEPS}
    for name, (seeds, _) in SWEEPS.items():
        out, err = outs[name]
        n = len(seeds.split(","))
        assert rcs[name] == 0, f"{name}: " + out[-2000:] + err[-3000:]
        assert f"sweep summary: finished {n}, failed 0, skipped 0, killed 0" in out, out[-2000:]

    c, exp, runs = _runs(tracking_uri)
    assert [e.name for e in c.search_experiments()].count(EXPERIMENT) == 1
    assert not tracking.search_pages(c, "0")                            # nothing under Default
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("sweep.parent") == "true"}
    kids = [r for r in runs if identity.PARENT_TAG in r.data.tags]
    assert len(parents) == 2 and len(kids) == 5 and len(runs) == 7
    assert len({p.data.tags["sweep_id"] for p in parents.values()}) == 2
    assert len({p.data.tags["sweep.dir"] for p in parents.values()}) == 2
    # which parent is which sweep: its recorded overrides
    sweep_of = {pid: next(name for name, (seeds, _) in SWEEPS.items()
                          if f"seed={seeds}" in p.data.tags["sweep.overrides"].split())
                for pid, p in parents.items()}
    assert sorted(sweep_of.values()) == sorted(SWEEPS)
    assert Counter(r.data.tags["config_hash"] for r in kids).most_common(1)[0][1] == 1
    points = 0
    for pid, p in parents.items():
        assert p.info.status == "FINISHED"
        mine = [r for r in kids if r.data.tags[identity.PARENT_TAG] == pid]
        seeds = SWEEPS[sweep_of[pid]][0].split(",")
        assert sorted(r.data.tags["seed"] for r in mine) == sorted(seeds), sweep_of[pid]
        for r in mine:                      # filed under its own sweep, not the other one
            assert r.info.status == "FINISHED", r.data.tags.get("failure_reason")
            assert r.data.tags["sweep_id"] == p.data.tags["sweep_id"]
            assert r.info.experiment_id == exp.experiment_id
            points += _check_every_point(c, r, PAR_STEPS, PAR_EVAL, PAR_LOG)
        assert p.data.tags["sweep.finished"] == str(len(seeds))
    # it was parallel: the two sweeps overlapped, and so did the joblib sweep's own jobs
    spans = {name: sorted((r.info.start_time, r.info.end_time) for r in kids
                          if sweep_of[r.data.tags[identity.PARENT_TAG]] == name) for name in SWEEPS}
    t0_ms = min(s for v in spans.values() for s, _ in v)
    rel = {k: [((s - t0_ms) / 1000, (e - t0_ms) / 1000) for s, e in v] for k, v in spans.items()}
    a, b = spans["basic"], spans["joblib"]
    assert min(s for s, _ in a) < max(e for _, e in b) and min(s for s, _ in b) < max(e for _, e in a), \
        f"the two sweeps did not overlap, nothing was tested (run spans, s): {rel}"
    assert any(y[0] < x[1] for x, y in zip(b, b[1:])), f"joblib's jobs did not overlap: {rel}"
    waits = sum(e.count("unavailable") for _, e in outs.values())
    print(f"\n[faults] parallel writers: sweeps {took:.0f} s, {len(kids)} runs, {points} points checked, "
          f"{waits} retry notice(s), {_points(db, 'train/loss')} train/loss rows; run spans (s) {rel}")
