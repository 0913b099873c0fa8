"""Hand-made MLflow runs in the harness's schema, and tests of bench.results.store.

The builders (`fresh_store`, `make_run`, `make_sweep`) are imported by the other
bench.tables tests and the benchmark: they log runs through the public
MlflowClient exactly as the harness lays them out: a parent per
sweep with `sweep_id` and `sweep.*` counts, children tagged with the job's
setting and `mlflow.parentRunId`, metrics with steps.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from bench.results import store as tables_store
from bench.results.tables import default_experiment
from bench.results.store import NoRunsError, fetch_curves, load_study, search_all
from tests.stores import empty_db

EXP = default_experiment()  # the harness's experiment name, so the CLI default finds it
T0 = 1_700_000_000_000  # fixed start time (ms) so tables and wall times are reproducible


def fresh_store(folder: Path, experiment: str = EXP) -> tuple[MlflowClient, str, str]:
    """(client, tracking uri, experiment id) of a new store under folder."""
    uri = empty_db(folder)
    client = MlflowClient(uri)
    exp_id = client.create_experiment(experiment, artifact_location=(folder / "artifacts").as_uri())
    return client, uri, exp_id


def make_run(client, exp_id, tags: dict, finals: dict = (), curves: dict = (),
             status="FINISHED", parent_id=None, start_ms=T0, wall_s=10.0, params: dict = ()):
    """One run: finals are logged at step 100 after the curves' points (step, value)."""
    tags = {k: str(v) for k, v in dict(tags).items()}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run_id = client.create_run(exp_id, start_time=start_ms, tags=tags).info.run_id
    metrics = [Metric(k, float(v), start_ms, step) for k, pts in dict(curves).items()
               for step, v in pts]
    metrics += [Metric(k, float(v), start_ms + 1, 100) for k, v in dict(finals).items()]
    params = [Param(k, str(v)) for k, v in dict(params).items()]
    if metrics or params:
        client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id, status, end_time=start_ms + int(wall_s * 1000))
    return run_id


def make_sweep(client, exp_id, sweep_id: str, jobs: list[dict], skipped=0, start_ms=T0):
    """A parent and one child per job dict (keys: tags, finals, curves, status, wall_s)."""
    parent = client.create_run(exp_id, start_time=start_ms, tags={"sweep_id": sweep_id}).info.run_id
    children = []
    for i, job in enumerate(jobs):
        tags = {"sweep_id": sweep_id, **job["tags"]}
        if job.get("status") == "FAILED":
            tags.setdefault("failure_reason", "boom")
        children.append(make_run(
            client, exp_id, tags, job.get("finals", {}), job.get("curves", {}),
            job.get("status", "FINISHED"), parent, start_ms + 1000 * (i + 1), job.get("wall_s", 10.0)))
    finished = sum(j.get("status", "FINISHED") == "FINISHED" for j in jobs)
    failed = sum(j.get("status") == "FAILED" for j in jobs)
    for key, value in (("sweep.finished", finished), ("sweep.failed", failed),
                       ("sweep.skipped", skipped)):
        client.set_tag(parent, key, str(value))
    client.set_terminated(parent, "FINISHED", end_time=start_ms + 1000 * (len(jobs) + 2))
    return parent, children


def job(estimator, conditioning="concat", seed=0, task="digits", **finals):
    return {"tags": {"estimator": estimator, "conditioning": conditioning, "seed": seed,
                     "task": task, "latent": "categorical", "kl": "constant", "free_bits": 0,
                     "free_bits_mode": "batch"},
            "finals": {k.replace("__", "/"): v for k, v in finals.items()}}


# ------------------------------------------------------------------ tests

def test_parents_jobs_and_single_runs_are_told_apart(tmp_path):
    client, _, exp = fresh_store(tmp_path)
    parent, kids = make_sweep(client, exp, "s1", [job("gumbel", val__elbo=-1.0),
                                                   job("reinforce", val__elbo=-2.0)], skipped=3)
    single = make_run(client, exp, job("exact")["tags"], {"val/elbo": -0.5})
    make_run(client, exp, {"note": "not a bench run"})  # e.g. an Optuna study's own run
    study = load_study(client, EXP)
    assert set(study.jobs["run_id"]) == set(kids) | {single}
    assert list(study.parents["run_id"]) == [parent]
    assert study.parents["sweep.skipped"].iloc[0] == "3"
    assert study.ignored == 1
    swept = load_study(client, EXP, "s1")
    assert set(swept.jobs["run_id"]) == set(kids)


def test_final_values_are_the_last_step_and_wall_time_from_start_end(tmp_path):
    client, _, exp = fresh_store(tmp_path)
    make_run(client, exp, job("gumbel")["tags"], curves={"val/elbo": [(0, -9.0), (50, -5.0)]},
             finals={"val/elbo": -3.0}, wall_s=12.5)
    row = load_study(client, EXP).jobs.iloc[0]
    assert row["val/elbo"] == -3.0
    assert row["wall_s"] == pytest.approx(12.5)


def test_search_pages_through_every_run(tmp_path, monkeypatch):
    client, _, exp = fresh_store(tmp_path)
    ids = {make_run(client, exp, job("gumbel", seed=s)["tags"], start_ms=T0 + s) for s in range(5)}
    monkeypatch.setattr(tables_store, "PAGE", 2)  # forces three pages
    assert {r.info.run_id for r in search_all(client, exp)} == ids


def test_bulk_curves_equal_per_run_histories(tmp_path):
    client, _, exp = fresh_store(tmp_path)
    ids = [make_run(client, exp, job("gumbel", seed=s)["tags"],
                    curves={"val/elbo": [(t, -10.0 + t + s) for t in (0, 10, 20)],
                            "grad/log10_var": [(t, 1.0 - s) for t in (0, 10)]}) for s in range(3)]
    got = fetch_curves(client, ids, ["val/elbo", "grad/log10_var"])
    want = sorted((rid, key, m.step, m.value) for rid in ids for key in ("val/elbo", "grad/log10_var")
                  for m in client.get_metric_history(rid, key))
    assert sorted(map(tuple, got[["run_id", "key", "step", "value"]].values.tolist())) == want
    assert len(got) == 3 * 3 + 3 * 2


def test_nothing_matching_names_what_exists(tmp_path):
    client, _, exp = fresh_store(tmp_path)
    make_sweep(client, exp, "2024-01-01_10-00-00", [job("gumbel", val__elbo=-1.0)])
    with pytest.raises(NoRunsError, match=rf"'nope'.*'{EXP}'"):
        load_study(client, "nope")
    with pytest.raises(NoRunsError, match=rf"sweep 'x'.*'{EXP}'.*2024-01-01_10-00-00"):
        load_study(client, EXP, "x")
    client.create_experiment("empty")
    with pytest.raises(NoRunsError, match="'empty' has no runs"):
        load_study(client, "empty")
