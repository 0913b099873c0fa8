"""Read a study out of the MLflow store in bulk, for `python -m bench.tables`.

Contract: `load_study(client, experiment, sweep)` returns a `Study` with one row
per job run (`jobs`) and one per sweep parent (`parents`), built from paged
`search_runs` calls only, never one request per run. Final metric values are
the latest value of each metric as `search_runs` returns it. `fetch_curves`
returns long-format metric histories (run_id, key, step, value) through the
store's bulk history call where the store has one (sqlite/SQL stores, or the
tracking server's `get-history-bulk` route), and falls back to one
`get_metric_history` call per run otherwise.

The run schema is the harness's: a sweep's parent run carries the tag
`sweep_id` and, once the sweep ends, the counts `sweep.finished`,
`sweep.failed`, `sweep.skipped`; each job is a child run (tag
`mlflow.parentRunId`) tagged with the labels `LABEL_KEYS`; a single run has no parent.
A job the harness skipped (its config had already FINISHED) leaves no run,
only the parent's tag `skipped.<job num> = <earlier run id>`; those earlier runs
are fetched too (flag `reused`) so that a sweep's tables show every job of it.
Nothing matching raises `NoRunsError` naming the experiment or sweep and
listing what exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import pandas as pd
from mlflow.tracking import MlflowClient

from ..tracking.identity import LABEL_KEYS, PARENT_TAG
from ..tracking.liveness import LOST_PREFIX, reap
from ..tracking.store import retrying, search_pages

RUN_TAGS = LABEL_KEYS + ("sweep_id", "config_hash", "failure_reason", "git_commit")
SWEEP_COUNTS = ("sweep.finished", "sweep.failed", "sweep.skipped", "sweep.killed")
SKIPPED_PREFIX = "skipped."  # on a parent: skipped.<job num> = id of the earlier run
# config groups whose params come along as params.<key>: the estimator's and task's
# options (variant labels), the latent's sizes (legends), the model's settings
# (backbone, backbone_mode), and the single keys that join an estimator's variant
# (bench.results.aggregate.ESTIMATOR_TRAINING)
PARAM_GROUPS = ("estimator", "task", "latent", "model")
PARAM_KEYS = ("train.estimator_beta1",)
MISSING = "-"  # label for a tag a run does not carry (e.g. `kl` on an old run)

# 50,000 is the largest page the SQL store and the server accept.
PAGE = 50_000
# The server's get-history-bulk route accepts at most 100 runs and returns at
# most 25,000 points per request.
SERVER_BULK_RUNS, SERVER_BULK_POINTS = 100, 25_000
# SQLite caps the number of bound parameters in one IN (...) clause.
SQL_BULK_RUNS = 500


class NoRunsError(LookupError):
    """Nothing in the store matches the requested experiment or sweep."""


@dataclass
class Study:
    experiment: str
    experiment_id: str
    sweep: Optional[str]
    jobs: pd.DataFrame      # one row per job run: run_id, status, tags, wall_s, final metrics
    parents: pd.DataFrame   # one row per sweep parent: run_id, sweep_id, status, sweep counts
    ignored: int            # runs that are neither a job (no `estimator` tag) nor a parent
    skipped: pd.DataFrame   # one row per skipped job: sweep_id, job, run_id (the earlier run)


def search_all(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list:
    """Every active run matching the filter, in pages of PAGE, oldest first."""
    return search_pages(client, experiment_id, filter_string, page_size=PAGE,
                        order_by=["attributes.start_time ASC"])


def _row(run) -> dict:
    tags, info = run.data.tags, run.info
    row = {
        "run_id": info.run_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "parent_run_id": tags.get(PARENT_TAG, ""),
    }
    for key in RUN_TAGS + SWEEP_COUNTS:
        row[key] = tags.get(key)
    row["is_job"] = "estimator" in tags
    row["sweep_parent"] = tags.get("sweep.parent") == "true"
    row["skipped_runs"] = {k[len(SKIPPED_PREFIX):]: v for k, v in tags.items()
                           if k.startswith(SKIPPED_PREFIX)}
    row.update(run.data.metrics)  # latest value per metric key
    # the estimator's and task's options (variant labels), latent sizes, model settings
    row.update({f"params.{k}": v for k, v in run.data.params.items()
                if k.split(".", 1)[0] in PARAM_GROUPS or k in PARAM_KEYS})
    return row


def _experiment(client: MlflowClient, name: str):
    exp = retrying(client.get_experiment_by_name, name)
    if exp is None or exp.lifecycle_stage != "active":
        names = sorted(e.name for e in retrying(client.search_experiments))
        raise NoRunsError(
            f"experiment {name!r} not found in {client.tracking_uri}; "
            f"experiments there: {', '.join(map(repr, names)) or 'none'}"
        )
    return exp


def pick_experiment(client: MlflowClient, sweep: Optional[str] = None) -> list[str]:
    """The experiments that hold runs, most recent run first; those holding
    `sweep` only, when any does. `bench.tables` without --experiment reads the
    first. NoRunsError, listing the experiments, when none holds a run."""
    def latest(flt: str) -> dict[str, int]:
        found = {}
        for e in retrying(client.search_experiments):
            runs = retrying(client.search_runs, [e.experiment_id], filter_string=flt,
                            max_results=1, order_by=["attributes.start_time DESC"])
            if runs:
                found[e.name] = runs[0].info.start_time or 0
        return found
    # quotes inside a sweep id would break the filter; sweep ids are timestamps
    found = (sweep and latest(f"tags.sweep_id = '{sweep}'")) or latest("")
    if not found:
        names = sorted(e.name for e in retrying(client.search_experiments))
        raise NoRunsError(f"no experiment in {client.tracking_uri} holds runs; "
                          f"experiments there: {', '.join(map(repr, names)) or 'none'}")
    return sorted(found, key=lambda n: (-found[n], n))


def _sweeps_present(rows: pd.DataFrame) -> list[str]:
    return sorted(s for s in rows["sweep_id"].dropna().unique())


def load_study(client: MlflowClient, experiment: str, sweep: Optional[str] = None,
               lost_after_s: Optional[float] = None) -> Study:
    """The experiment's runs; with `lost_after_s`, RUNNING runs silent for longer
    are first marked lost in the store (bench.tracking.liveness), so that a
    sweep killed overnight does not read as one still in progress."""
    exp = _experiment(client, experiment)
    if lost_after_s is not None:
        reap(client, exp.experiment_id, lost_after_s)
    # Quotes inside a sweep id would break the filter; sweep ids are timestamps.
    flt = f"tags.sweep_id = '{sweep}'" if sweep else ""
    rows = pd.DataFrame([_row(r) for r in search_all(client, exp.experiment_id, flt)])
    if rows.empty:
        if sweep:
            everything = pd.DataFrame([_row(r) for r in search_all(client, exp.experiment_id)])
            present = _sweeps_present(everything) if not everything.empty else []
            raise NoRunsError(
                f"sweep {sweep!r} has no runs in experiment {experiment!r}; "
                f"sweeps there: {', '.join(map(repr, present)) or 'none'}"
            )
        raise NoRunsError(f"experiment {experiment!r} has no runs")

    # A parent is whatever a child points at, or a run carrying sweep counts,
    # or a sweep-tagged top-level run without an estimator (a sweep whose jobs
    # were all skipped, or one that died before writing its counts).
    referenced = set(rows["parent_run_id"]) - {""}
    has_counts = rows[list(SWEEP_COUNTS)].notna().any(axis=1)
    bare_sweep = rows["sweep_id"].notna() & (rows["parent_run_id"] == "") & ~rows["is_job"]
    is_parent = rows["run_id"].isin(referenced) | has_counts | bare_sweep | rows["sweep_parent"]
    parents = rows[is_parent].copy()
    jobs = rows[~is_parent & rows["is_job"]].copy()
    ignored = int((~is_parent & ~rows["is_job"]).sum())
    skipped = pd.DataFrame(
        [(p.sweep_id, job, rid) for p in parents.itertuples() for job, rid in p.skipped_runs.items()],
        columns=["sweep_id", "job", "run_id"])
    jobs["reused"] = False
    missing = sorted(set(skipped["run_id"]) - set(jobs["run_id"]))
    if missing:  # earlier runs a sweep skipped to: part of its results
        found = pd.DataFrame([_row(r) for r in _runs_by_id(client, exp.experiment_id, missing)])
        if not found.empty:
            jobs = pd.concat([jobs, found[found["is_job"]].assign(reused=True)], ignore_index=True)
    if jobs.empty and parents.empty:
        where = f"sweep {sweep!r} of " if sweep else ""
        raise NoRunsError(f"{where}experiment {experiment!r} has no job runs (tag 'estimator')")

    for col in LABEL_KEYS:
        jobs[col] = jobs[col].fillna(MISSING).astype(str)
    jobs["sweep_id"] = jobs["sweep_id"].fillna(MISSING)
    jobs["failure_reason"] = jobs["failure_reason"].fillna("")
    jobs["lost"] = (jobs["status"] == "FAILED") & jobs["failure_reason"].str.startswith(LOST_PREFIX)
    done = jobs["end_time"].notna() & jobs["start_time"].notna()
    jobs["wall_s"] = (jobs["end_time"] - jobs["start_time"]).where(done) / 1000.0
    # Row order must not depend on the store's: sort on stable keys.
    jobs = jobs.sort_values(["start_time", "run_id"], kind="mergesort").reset_index(drop=True)
    parents = parents.sort_values(["start_time", "run_id"], kind="mergesort").reset_index(drop=True)
    return Study(experiment, exp.experiment_id, sweep, jobs, parents, ignored, skipped)


def _runs_by_id(client: MlflowClient, experiment_id: str, run_ids: list[str]) -> list:
    runs = []
    for i in range(0, len(run_ids), 100):  # keeps the filter string short
        ids = ", ".join(f"'{r}'" for r in run_ids[i:i + 100])
        runs += search_all(client, experiment_id, f"attributes.run_id IN ({ids})")
    return runs


# ---------------------------------------------------------------- curves

def _bulk_sql(store, run_ids: list[str], key: str) -> list[tuple]:
    out = []
    for i in range(0, len(run_ids), SQL_BULK_RUNS):
        chunk = run_ids[i:i + SQL_BULK_RUNS]
        # One query per chunk and key; max_results bounds the whole answer.
        for m in retrying(store.get_metric_history_bulk, chunk, key, max_results=10**9):
            out.append((m.run_id, key, m.step, m.timestamp, m.value))
    return out


def _bulk_server(store, run_ids: list[str], key: str) -> list[tuple]:
    from mlflow.utils.rest_utils import http_request

    def fetch(chunk: list[str]) -> list[tuple]:
        resp = http_request(
            store.get_host_creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
            params={"run_id": chunk, "metric_key": key, "max_results": SERVER_BULK_POINTS},
        )
        resp.raise_for_status()
        points = resp.json().get("metrics", [])
        if len(points) >= SERVER_BULK_POINTS:  # truncated: split the chunk
            if len(chunk) == 1:
                raise OverflowError(chunk[0])
            half = len(chunk) // 2
            return fetch(chunk[:half]) + fetch(chunk[half:])
        return [(p["run_id"], key, int(p.get("step", 0)), int(p.get("timestamp", 0)),
                 float(p["value"])) for p in points]

    out = []
    for i in range(0, len(run_ids), SERVER_BULK_RUNS):
        out.extend(fetch(run_ids[i:i + SERVER_BULK_RUNS]))
    return out


def _per_run(client: MlflowClient, run_ids: list[str], key: str) -> list[tuple]:
    return [(rid, key, m.step, m.timestamp, m.value)
            for rid in run_ids for m in retrying(client.get_metric_history, rid, key)]


def fetch_curves(client: MlflowClient, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Long-format histories; where a step was logged twice the last value wins."""
    run_ids = sorted(set(run_ids))
    store = client._tracking_client.store  # no public bulk-history API in mlflow 3
    points: list[tuple] = []
    for key in keys:
        if not run_ids:
            break
        if hasattr(store, "get_metric_history_bulk"):
            points += _bulk_sql(store, run_ids, key)
            continue
        if hasattr(store, "get_host_creds"):
            try:
                points += _bulk_server(store, run_ids, key)
                continue
            except Exception:  # older server or a run too long for one answer
                pass
        points += _per_run(client, run_ids, key)
    df = pd.DataFrame(points, columns=["run_id", "key", "step", "timestamp", "value"])
    df = df.sort_values(["run_id", "key", "step", "timestamp"], kind="mergesort")
    df = df.drop_duplicates(["run_id", "key", "step"], keep="last")
    return df.drop(columns="timestamp").reset_index(drop=True)
