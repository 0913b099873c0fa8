"""Result tables and figures regenerated from the MLflow store.

    python -m bench.tables [--experiment NAME] [--sweep SWEEP_ID] [--out bench-results]

Reads the study's runs in bulk (`bench.results.store`), keeps the FINISHED job
runs (the latest one per `config_hash` when a config was rerun), aggregates
their final metric values over seeds as mean ± standard error with n, and writes
into --out:

    elbo.md/.csv                 val/elbo, val/iwae, val/recon
    grad.md/.csv                 grad/log10_var, grad/snr, grad/bias
    collapse.md/.csv             val/kl and the collapse/latent-use metrics
    cost.md/.csv                 perf/steps_per_s, perf/peak_mem_mb, wall_s
    collapse_by_setting.md/.csv  collapse metrics per KL schedule × free bits
    status.md, status_runs.csv, status_sweeps.csv, status_skipped.csv
                                 every FAILED / KILLED / unfinished run with its
                                 failure_reason, each sweep's counts, and each
                                 skipped job with the earlier run it reused; lost
                                 runs (bench.tracking.liveness) marked, listed apart
    figures/*.png                (bench.results.plots)

Rows are grouped by task × estimator × conditioning, plus latent, kl and
free_bits where those vary, plus `variant` / `task_variant` where an
estimator's (task's) options vary within the selection: the name followed by
the options that vary among that name's runs, e.g.
`reinforce(baseline=ema,n_samples=1)` or `toy(t=0.499)` (`add_variants`); column names are the tag and metric names verbatim.
Output is sorted and formatted deterministically: the same runs give
byte-identical .md and .csv files. With --sweep (or when all jobs belong to one
sweep) the files are also logged as artifacts to the sweep's parent run under
`tables/`. The tracking URI is `bench.tracking.store.resolve_tracking_uri()`; the
experiment defaults to the harness's (the default of `mlflow.experiment`). Exit status 2, with a message listing what exists, when nothing
matches.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..config.schema import TrackingConf
from .format import agg_markdown, md_table, sort_rows, write_csv
from .store import MISSING, NoRunsError, Study, fetch_curves, load_study

ELBO = ("val/elbo", "val/iwae", "val/recon")
GRAD = ("grad/log10_var", "grad/snr", "grad/bias")
COLLAPSE = ("val/kl", "collapse/active_units", "collapse/mutual_info", "collapse/kl_min",
            "collapse/code_perplexity", "latent/strategy_nmi")
COST = ("perf/steps_per_s", "perf/peak_mem_mb", "wall_s")
SETTING = ("val/elbo", "val/kl", "collapse/active_units", "collapse/mutual_info", "collapse/kl_min",
           "latent/strategy_nmi")
ALWAYS = ("task", "estimator", "conditioning")   # group keys shown even when constant
IF_VARIED = ("latent", "kl", "free_bits", "free_bits_mode")  # shown only when they vary
KEY_ORDER = ("task", "task_variant", "latent", "estimator", "variant", "conditioning", "kl",
             "free_bits", "free_bits_mode")
# label column -> the tag it refines; options come from the params.<tag>.* columns
VARIANTS = {"variant": "estimator", "task_variant": "task"}
LABELS = ("task", "latent", "estimator", "conditioning", "kl", "free_bits", "seed")
STATUS_COLS = ("status", "sweep_id") + LABELS + ("run_id", "failure_reason")
SKIPPED_COLS = ("sweep_id", "job", "run_id", "status") + LABELS
OUTPUTS = ("elbo", "grad", "collapse", "cost", "collapse_by_setting")


def aggregate(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per group: the keys, n runs, and per metric mean, se, n (finite values).

    se is the sample standard deviation (ddof=1) over sqrt(n); NaN for n < 2.
    """
    by = list(by)
    cols = by + ["n"] + [f"{m}.{s}" for m in metrics for s in ("mean", "se", "n")]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    # Fixed summation order, whatever order the store returned the runs in.
    runs = sort_rows(runs, by + ["seed", "run_id"])
    rows = []
    for keys, g in runs.groupby(by, sort=False):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        row["n"] = len(g)
        for m in metrics:
            v = g[m].to_numpy(dtype=float) if m in g else np.array([])
            v = v[np.isfinite(v)]
            row[f"{m}.mean"] = float(v.mean()) if len(v) else math.nan
            row[f"{m}.se"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
            row[f"{m}.n"] = len(v)
        rows.append(row)
    return sort_rows(pd.DataFrame(rows, columns=cols), by)


def add_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `variant` and `task_variant`: the estimator (task) name, followed by
    the options (params `estimator.*`, `task.*`) that vary among the runs of
    that name in this selection (for an estimator: within one task), in key
    order, e.g. reinforce(baseline=none,n_samples=1). A name whose runs share
    every option keeps the bare name, so values tuned once per task and
    estimator (train.lr is not an option; estimator.tau is) do not split it.
    Numbers are shown to 4 significant digits."""
    runs = runs.copy()
    for col, base in VARIANTS.items():
        if base not in runs:
            continue
        prefix = f"params.{base}."
        opts = sorted(c for c in runs if c.startswith(prefix) and c != prefix + "name")
        within = [base] + (["task"] if base != "task" and "task" in runs else [])
        labels = runs[base].astype(str).copy()
        for _, g in runs.groupby(within, sort=True):
            vals = g[opts].fillna(MISSING).astype(str)
            varying = [c for c in opts if vals[c].nunique() > 1]
            if varying:
                labels.loc[g.index] = [
                    f"{name}(" + ",".join(f"{c[len(prefix):]}={_short(v)}"
                                          for c, v in zip(varying, row)) + ")"
                    for name, row in zip(g[base].astype(str),
                                         vals[varying].itertuples(index=False))]
        runs[col] = labels
    return runs


def _short(value: str) -> str:
    """A number to 4 significant digits (0.0011205837 -> 0.001121); text as is."""
    try:
        x = float(value)
    except ValueError:
        return value
    return f"{x:.4g}" if math.isfinite(x) else value


def group_keys(runs: pd.DataFrame, always=ALWAYS, if_varied=IF_VARIED) -> tuple[list, dict]:
    """Keys to group by, in KEY_ORDER order, and the constant settings to state."""
    if_varied = [c for c in if_varied if c in runs]
    varied = {c for c in if_varied if runs[c].nunique() > 1} if len(runs) else set()
    # a variant label is a key when it says more than the name it refines
    varied |= {c for c, base in VARIANTS.items()
               if c in runs and base in runs and (runs[c] != runs[base].astype(str)).any()}
    keys = [c for c in KEY_ORDER if c in always or c in varied]
    constant = {c: runs[c].iloc[0] for c in if_varied
                if c not in keys and len(runs) and runs[c].iloc[0] != MISSING}
    return keys, constant


def dedupe(finished: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the latest FINISHED run per config_hash; return (kept, superseded)."""
    has = finished["config_hash"].notna()
    latest = finished[has].sort_values(["start_time", "run_id"], kind="mergesort")
    dup = latest.duplicated("config_hash", keep="last")
    kept = pd.concat([latest[~dup], finished[~has]])
    return kept, latest[dup]


def status_tables(study: Study, superseded: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """(runs not in the tables, one row per sweep, skipped jobs with the run reused)."""
    skipped = study.skipped.merge(study.jobs.drop(columns="sweep_id"), on="run_id", how="left")
    skipped = sort_rows(skipped.fillna({"status": "not found"}).fillna(MISSING)[list(SKIPPED_COLS)],
                        SKIPPED_COLS)
    jobs = study.jobs[~study.jobs["reused"]]  # a reused run belongs to the sweep that made it
    bad = study.jobs[study.jobs["status"] != "FINISHED"]
    bad = bad.assign(status=bad["status"].where(~bad["lost"], "FAILED (lost)"))
    sup = superseded.assign(status="FINISHED (superseded)")
    runs = sort_rows(pd.concat([bad, sup])[list(STATUS_COLS)], STATUS_COLS)
    # a lost run (its process died) is counted apart from live RUNNING ones and real failures
    state = jobs["status"].where(~jobs["lost"], "LOST")
    counts = {s: jobs[state == s].groupby("sweep_id").size()
              for s in ("FINISHED", "FAILED", "LOST", "KILLED")}
    other = jobs[~state.isin(counts)].groupby("sweep_id").size()
    sweeps = set(jobs["sweep_id"]) | set(study.parents["sweep_id"].fillna(MISSING))
    parents = study.parents.assign(sweep_id=study.parents["sweep_id"].fillna(MISSING))
    rows = []
    for s in sweeps:
        p = parents[parents["sweep_id"] == s]
        p = p.iloc[-1] if len(p) else None
        row = {"sweep_id": s, "parent_run_id": p["run_id"] if p is not None else "",
               "parent_status": p["status"] if p is not None else "",
               # the sweep's wall time: the parent spans every job it launched
               "parent_wall_s": (f"{(p['end_time'] - p['start_time']) / 1000:.1f}"
                                 if p is not None and pd.notna(p["end_time"]) else "")}
        row.update({f"runs.{k.lower()}": int(c.get(s, 0)) for k, c in counts.items()})
        row["runs.other"] = int(other.get(s, 0))
        for k in ("sweep.finished", "sweep.failed", "sweep.skipped", "sweep.killed"):
            row[k] = (p[k] if p is not None and isinstance(p[k], str) else "")
        rows.append(row)
    return runs, sort_rows(pd.DataFrame(rows), ["sweep_id", "parent_run_id"]), skipped


def write_results(client, study: Study, out: Path) -> list[Path]:
    """Write every table and figure into out; return the files written."""
    from . import plots  # matplotlib only when writing

    out.mkdir(parents=True, exist_ok=True)
    finished, superseded = dedupe(study.jobs[study.jobs["status"] == "FINISHED"])
    finished = add_variants(finished)
    by, constant = group_keys(finished)
    scope = f"experiment `{study.experiment}`" + (f", sweep `{study.sweep}`" if study.sweep else "")
    note = (f"{scope}: {len(finished)} finished runs; final values, mean ± standard error "
            f"over runs (seeds), n runs per row")
    if constant:
        note += "; all runs: " + ", ".join(f"{k}={v}" for k, v in constant.items())
    specs = {"elbo": ("Final ELBO", by, ELBO), "grad": ("Gradient statistics", by, GRAD),
             "collapse": ("Posterior collapse and latent use", by, COLLAPSE),
             "cost": ("Cost", by, COST)}
    if set(finished.get("kl", [])) - {MISSING} or set(finished.get("free_bits", [])) - {MISSING}:
        sby = [c for c in ("task", "task_variant", "latent", "kl", "free_bits", "estimator",
                           "variant")
               if (c != "latent" or finished["latent"].nunique() > 1)
               and (c not in VARIANTS or c in by)]
        specs["collapse_by_setting"] = (
            "Collapse per KL schedule and free bits (pooled over conditioning)", sby, SETTING)
    written = []
    for name in OUTPUTS:  # a table not produced this time must not linger from last time
        for ext in (".md", ".csv"):
            (out / f"{name}{ext}").unlink(missing_ok=True)
    for name, (title, keys, metrics) in specs.items():
        metrics = [m for m in metrics if m in finished and finished[m].notna().any()]
        agg = aggregate(finished, keys, metrics)
        (out / f"{name}.md").write_text(f"# {title}\n\n{note}.\n\n" + agg_markdown(agg, keys, metrics))
        write_csv(agg, out / f"{name}.csv")
        written += [out / f"{name}.md", out / f"{name}.csv"]

    runs, sweeps, skipped_jobs = status_tables(study, superseded)
    n, lost = {s: int((study.jobs["status"] == s).sum()) for s in ("FAILED", "KILLED")}, int(study.jobs["lost"].sum())
    # The count a sweep wrote at its end, else (a sweep that died) its skipped.* tags.
    skipped = sum(int(float(c)) if isinstance(c, str) else len(r) for c, r in
                  zip(study.parents["sweep.skipped"], study.parents["skipped_runs"]))
    summary = (f"{scope}: {len(finished)} finished runs used, {len(superseded)} superseded by a "
               f"rerun, {n['FAILED'] - lost} failed, {n['KILLED']} killed, {lost} lost (no heartbeat), "
               f"{len(study.jobs) - len(finished) - len(superseded) - n['FAILED'] - n['KILLED']} "
               f"other (running, heartbeat fresh), {skipped} skipped (sweep parents' counts), "
               f"{study.ignored} runs without an `estimator` tag ignored.")
    text = (f"# Run status\n\n{summary}\n\n## Sweeps\n\n"
            + md_table(list(sweeps.columns), sweeps.astype(str).values.tolist())
            + "\n## Runs not in the tables\n\n"
            + (md_table(list(runs.columns), runs.astype(str).values.tolist()) if len(runs)
               else "None: every job run finished.\n")
            + "\n## Skipped jobs (config already FINISHED; that run is used)\n\n"
            + (md_table(list(skipped_jobs.columns), skipped_jobs.astype(str).values.tolist())
               if len(skipped_jobs) else "None.\n"))
    (out / "status.md").write_text(text)
    write_csv(runs, out / "status_runs.csv")
    write_csv(sweeps, out / "status_sweeps.csv")
    write_csv(skipped_jobs, out / "status_skipped.csv")
    written += [out / f for f in ("status.md", "status_runs.csv", "status_sweeps.csv",
                                  "status_skipped.csv")]

    curves = fetch_curves(client, finished["run_id"], plots.CURVE_KEYS)
    written += plots.write_figures(finished, curves, out / "figures")
    return written


def sweep_parent(study: Study) -> Optional[str]:
    """The parent to log artifacts to: the requested sweep's, or the only sweep's."""
    sweeps = set(study.jobs["sweep_id"]) | set(study.parents["sweep_id"].dropna())
    if study.sweep is None and (len(sweeps) != 1 or MISSING in sweeps):
        return None
    p = study.parents
    return p["run_id"].iloc[-1] if len(p) else None


def default_experiment() -> str:
    """The harness's experiment name: the default of `mlflow.experiment`."""
    return TrackingConf.experiment


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default=default_experiment(),
                    help="MLflow experiment (default: the default of mlflow.experiment)")
    ap.add_argument("--sweep", default=None, help="sweep_id tag of one sweep (default: all runs)")
    ap.add_argument("--out", default="bench-results", type=Path,
                    help="output folder (default ./bench-results; results/ holds the committed studies)")
    ap.add_argument("--lost-after-s", type=float, default=TrackingConf.lost_after_s,
                    help="mark RUNNING runs with an older heartbeat lost (default mlflow.lost_after_s)")
    ap.add_argument("--no-artifacts", action="store_true",
                    help="do not log the files to the sweep's parent run")
    args = ap.parse_args(argv)

    from bench.tracking.store import client as store_client

    client = store_client()
    try:
        study = load_study(client, args.experiment, args.sweep, lost_after_s=args.lost_after_s)
    except NoRunsError as e:
        print(f"bench.tables: {e}", file=sys.stderr)
        return 2
    written = write_results(client, study, args.out)
    parent = None if args.no_artifacts else sweep_parent(study)
    if parent:
        for f in written:
            sub = "tables/figures" if f.parent.name == "figures" else "tables"
            client.log_artifact(parent, str(f), artifact_path=sub)
    for f in written:
        print(f)
    if parent:
        print(f"logged {len(written)} files to parent run {parent} under tables/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
