"""What did not reach the tables: `status.md`, `status_runs.csv`,
`status_sweeps.csv` and `status_skipped.csv` of bench.tables.

- runs: every FAILED / KILLED / unfinished job run with its failure_reason,
  lost runs (bench.tracking.liveness) as `FAILED (lost)`, and FINISHED runs a
  rerun of the same config superseded;
- sweeps: one row per sweep, its parent, wall time and counts by status (a
  lost run counted apart from live RUNNING ones and real failures), and the
  counts the sweep itself wrote at its end;
- skipped: each job a sweep skipped, with the earlier run it reused.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .columns import legend
from .format import md_table, sort_rows, write_csv
from .store import MISSING, Study

LABELS = ("task", "latent", "estimator", "conditioning", "kl", "free_bits", "seed")
STATUS_COLS = ("status", "sweep_id") + LABELS + ("run_id", "failure_reason")
SKIPPED_COLS = ("sweep_id", "job", "run_id", "status") + LABELS
FILES = ("status.md", "status_runs.csv", "status_sweeps.csv", "status_skipped.csv")


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


def _table(df: pd.DataFrame) -> str:
    return md_table(list(df.columns), df.astype(str).values.tolist()) + "\n" + legend(df.columns)


def write_status(study: Study, used: int, superseded: pd.DataFrame, scope: str,
                 out: Path) -> list[Path]:
    """Write the status files into out; `used` is the number of runs in the tables."""
    runs, sweeps, skipped_jobs = status_tables(study, superseded)
    n = {s: int((study.jobs["status"] == s).sum()) for s in ("FAILED", "KILLED")}
    lost = int(study.jobs["lost"].sum())
    # The count a sweep wrote at its end, else (a sweep that died) its skipped.* tags.
    skipped = sum(int(float(c)) if isinstance(c, str) else len(r) for c, r in
                  zip(study.parents["sweep.skipped"], study.parents["skipped_runs"]))
    other = len(study.jobs) - used - len(superseded) - n["FAILED"] - n["KILLED"]
    summary = (f"{scope}: {used} finished runs used, {len(superseded)} superseded by a "
               f"rerun, {n['FAILED'] - lost} failed, {n['KILLED']} killed, {lost} lost (no heartbeat), "
               f"{other} other (running, heartbeat fresh), {skipped} skipped (sweep parents' counts), "
               f"{study.ignored} runs without an `estimator` tag ignored.")
    text = (f"# Run status\n\n{summary}\n\n## Sweeps\n\n" + _table(sweeps)
            + "\n## Runs not in the tables\n\n"
            + (_table(runs) if len(runs) else "None: every job run finished.\n")
            + "\n## Skipped jobs (config already FINISHED; that run is used)\n\n"
            + (_table(skipped_jobs) if len(skipped_jobs) else "None.\n"))
    (out / "status.md").write_text(text)
    write_csv(runs, out / "status_runs.csv")
    write_csv(sweeps, out / "status_sweeps.csv")
    write_csv(skipped_jobs, out / "status_skipped.csv")
    return [out / f for f in FILES]
