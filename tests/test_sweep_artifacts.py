"""The end of a sweep as the MLflow UI shows it: the parent gets the sweep's
tables and figures (what `bench.tables --sweep` writes) under `tables/`, the
experiment a saved view of the sweep's runs that the printed URLs open, and
neither step can fail the sweep or change its exit status.

In process on a hand-made sweep (fast), then for real: `python -m bench.run -m`
against a sqlite store in tmp, twice, the second sweep reusing the first's runs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.tracking import callbacks, identity, ui as U
from bench.tracking.handoff import Handoff
from bench.tracking.summary import NOTE_TAG
from tests.stores import empty_db

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "discrete-latent-bench"
SID = "20260101-120000-ab12"


def ended_sweep(folder: Path, statuses: tuple[str, ...], reused: bool = False):
    """A callback at the end of a sweep whose jobs ended with `statuses`, as
    bench.run leaves the store then; with `reused`, job 9 was skipped for an
    earlier run. Returns (callback, client, experiment id, parent, earlier run)."""
    uri = empty_db(folder)
    c = MlflowClient(uri)
    exp = c.create_experiment(EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    labels = {"estimator": "gumbel", "conditioning": "concat", "task": "digits"}
    earlier = None
    if reused:
        earlier = c.create_run(exp, tags={**labels, "sweep_id": "older", "seed": "9"}).info.run_id
        c.log_metric(earlier, "val/elbo", -30.0, step=6)
        c.set_terminated(earlier, "FINISHED")
    parent = c.create_run(exp, tags={"sweep_id": SID, "sweep.parent": "true"}).info.run_id
    if reused:
        c.set_tag(parent, "skipped.9", earlier)
    for job, status in enumerate(statuses):
        rid = c.create_run(exp, tags={**labels, identity.PARENT_TAG: parent, "sweep_id": SID,
                                      "job": str(job), "seed": str(job)}).info.run_id
        c.log_metric(rid, "val/elbo", -20.0 - job, step=6)
        c.set_terminated(rid, status)
    cb = callbacks.TrackingCallback()
    cb.client, cb.exp_id, cb.parent = c, exp, parent
    cb.handoff = Handoff(uri, exp, EXPERIMENT, "abc", parent, SID)
    return cb, c, exp, parent, earlier


def summarise(cb) -> int:
    """The exit status the sweep's end gives the command."""
    try:
        cb._summarise()
    except SystemExit as e:
        return e.code
    return 0


@pytest.mark.parametrize("statuses, code", [(("FINISHED", "FINISHED"), 0),
                                            (("FINISHED", "FAILED"), 3)])
def test_a_failing_tables_step_is_one_line_and_leaves_the_exit_status(
        tmp_path, monkeypatch, capsys, statuses, code):
    def boom(*args):
        raise RuntimeError("the store said no\n  and more on a second line")
    monkeypatch.setattr(U, "attach_tables", boom)
    cb, c, exp, parent, _ = ended_sweep(tmp_path, statuses)
    assert summarise(cb) == code
    err = capsys.readouterr().err
    line, = [x for x in err.splitlines() if "tables and figures" in x]
    assert line == (f"[bench] tables and figures not attached to parent run {parent}: "
                    "RuntimeError: the store said no and more on a second line")
    assert c.get_run(parent).info.status == "FINISHED"
    assert "**Compare:**" in c.get_run(parent).data.tags[NOTE_TAG]   # the rest went on


def test_sweep_figures_false_skips_the_tables_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(U, "attach_tables", lambda *a: pytest.fail("attach_tables ran"))
    cb, *_ = ended_sweep(tmp_path, ("FINISHED",))
    cb.sweep_figures = False
    assert summarise(cb) == 0
    assert "tables and figures" not in capsys.readouterr().out


def test_the_saved_view_and_its_urls(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(U, "attach_tables", lambda *a: [])
    cb, c, exp, parent, earlier = ended_sweep(tmp_path, ("FINISHED", "FINISHED"), reused=True)
    assert summarise(cb) == 0
    out = capsys.readouterr().out
    key = f"sweep-{SID}"
    assert f"(start it with: mlflow ui --backend-store-uri {cb.handoff.uri})" in out
    assert f"    table:  http://127.0.0.1:5000/#/experiments/{exp}/runs?viewStateShareKey={key}\n" in out
    assert f"    charts: http://127.0.0.1:5000/#/experiments/{exp}/runs?viewStateShareKey={key}" \
           "&compareRunsMode=CHART\n" in out
    envelope = json.loads(c.get_experiment(exp).tags[f"mlflow.sharedViewState.{key}"])
    state = json.loads(envelope["state"])
    kids = [r.info.run_id for r in c.search_runs([exp], f"tags.`{identity.PARENT_TAG}` = '{parent}'")]
    listed = re.findall(r"'(\w+)'", state["searchFilter"])
    # the reused run belongs to another sweep: the view names every run
    assert state["searchFilter"].startswith("attributes.run_id IN (")
    assert sorted(listed) == sorted([parent, earlier, *kids])
    note = c.get_run(parent).data.tags[NOTE_TAG]
    assert f"[runs table](./#/experiments/{exp}/runs?viewStateShareKey={key})" in note


def test_a_refused_saved_view_is_one_line_and_the_sweep_ends_as_ever(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(U, "attach_tables", lambda *a: [])
    monkeypatch.setattr(U, "save_view", lambda *a: (_ for _ in ()).throw(PermissionError("read-only")))
    cb, c, _, parent, _ = ended_sweep(tmp_path, ("FINISHED", "FAILED"))
    assert summarise(cb) == 3
    assert "[bench] no saved view for the MLflow UI: PermissionError: read-only" in capsys.readouterr().err
    assert "Compare" not in c.get_run(parent).data.tags[NOTE_TAG]


# -- for real ---------------------------------------------------------------

def bench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.run", "-m", "experiment=smoke", *args],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def newest_parent(c, exp):
    parents = c.search_runs([exp], "tags.`sweep.parent` = 'true'", order_by=["attributes.start_time DESC"])
    return parents[0]


def artifacts(c, run_id: str, path: str) -> list[str]:
    return [f.path for f in c.list_artifacts(run_id, path)]


@pytest.mark.slow
def test_real_sweeps_attach_tables_and_a_rerun_names_the_runs_it_reused(tmp_path, tracking_uri):
    t0 = time.monotonic()
    first = bench(tmp_path, "seed=0,1")
    wall_first = time.monotonic() - t0
    c = MlflowClient(tracking_uri)
    exp = c.get_experiment_by_name(EXPERIMENT).experiment_id
    p1 = newest_parent(c, exp)
    sid1 = p1.data.tags["sweep_id"]
    files = artifacts(c, p1.info.run_id, "tables")
    assert "tables/elbo.md" in files and "tables/status.md" in files
    pngs = [f for f in artifacts(c, p1.info.run_id, "tables/figures") if f.endswith(".png")]
    assert pngs, artifacts(c, p1.info.run_id, "tables/figures")
    attached = re.search(r"\[bench\] (\d+) tables and figures attached to parent run "
                         rf"{p1.info.run_id} under tables/ \(([\d.]+) s;", first.stdout)
    assert attached, first.stdout[-2000:]
    print(f"2-job sweep: {wall_first:.1f} s, of which the tables step {attached.group(2)} s")
    elbo = Path(c.download_artifacts(p1.info.run_id, "tables/elbo.md", str(tmp_path))).read_text()
    assert re.search(r"\| digits \| gumbel \| concat \| 2 \| -\d", elbo), elbo
    assert f"runs?viewStateShareKey=sweep-{sid1}\n" in first.stdout

    # the same grid with one more seed: two jobs reuse the first sweep's runs
    second = bench(tmp_path, "seed=0,1,2")
    p2 = newest_parent(c, exp)
    first_runs = {r.data.tags["seed"]: r.info.run_id
                  for r in c.search_runs([exp], f"tags.sweep_id = '{sid1}' and tags.job != ''")}
    assert {k: v for k, v in p2.data.tags.items() if k.startswith("skipped.")} == {
        "skipped.0": first_runs["0"], "skipped.1": first_runs["1"]}
    table = second.stdout[second.stdout.index("sweep summary:"):]
    assert table.startswith("sweep summary: finished 1, failed 0, skipped 2, killed 0")
    for seed in ("0", "1"):
        assert re.search(rf"\n{seed} +gumbel · concat · digits · s{seed} +SKIPPED +-3\d\.\d+ +same config "
                         rf"FINISHED earlier as run {first_runs[seed][:12]}\n", table), table
    assert re.search(r"\n2 +gumbel · concat · digits · s2 +FINISHED +-3\d\.\d+\n", table), table
    note = p2.data.tags[NOTE_TAG]
    assert note.count("| SKIPPED |") == 2 and "tag `skipped.<job>` on this run" in note
    # the reused runs count in the new sweep's tables and are in its saved view
    elbo = Path(c.download_artifacts(p2.info.run_id, "tables/elbo.md", str(tmp_path / "2"))).read_text()
    assert re.search(r"\| digits \| gumbel \| concat \| 3 \| -\d", elbo), elbo
    view = json.loads(c.get_experiment(exp).tags[f"mlflow.sharedViewState.sweep-{p2.data.tags['sweep_id']}"])
    assert all(rid in json.loads(view["state"])["searchFilter"] for rid in first_runs.values())

    # switched off: an all-skipped sweep attaches nothing and says nothing of it
    third = bench(tmp_path, "seed=0", "mlflow.sweep_figures=false")
    p3 = newest_parent(c, exp)
    assert p3.info.run_id not in (p1.info.run_id, p2.info.run_id)
    assert "tables and figures" not in third.stdout + third.stderr
    assert artifacts(c, p3.info.run_id, "tables") == []
