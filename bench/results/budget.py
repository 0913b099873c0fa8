"""Equal-compute comparisons: the validation bound at a common budget of
f-evaluations and of training seconds, and the work-normalised gradient
variance (`budget.md/.csv` of bench.tables).

Curves (`eval_points`): val/elbo and val/iwae are logged at evaluation steps
(step 0, every train.eval_every, the last step). Their cost is read at the same
step: perf/wall_seconds and perf/eval_seconds are logged with every log call,
evaluations included, and training seconds = wall − eval seconds (evaluation
time, grad statistics above all, differs between estimators and is no part of
training); cost/f_evals is logged only at log steps (multiples of
train.log_every and the last step, not step 0), so at an evaluation step it is
interpolated in step through (0, 0), exact because it is steps × f-evaluations
per step.

Budget (`at_budget`): within a group (the table keys minus estimator and
variant), the largest x every usable run reached, x being f-evaluations or
training seconds; each run's curve is linearly interpolated there
(`interpolate_at`). A run is usable on an axis when it has two evaluations or
more with a known x; the others are listed with the reason, never dropped
silently. Work-normalised variance: grad/log10_var (final) + log10(f-evaluations
per step per example), the log10 of the variance times the cost of one estimate.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .aggregate import aggregate
from .columns import legend
from .format import fmt_column, md_table, metric_cells, single_note, sort_rows

CURVE_KEYS = ("val/elbo", "val/iwae", "cost/f_evals", "perf/wall_seconds", "perf/eval_seconds")
BOUNDS = ("val/elbo", "val/iwae")
AXES = {"f_evals": "f-evaluations", "train_seconds": "training seconds"}
WORK = ("cost/f_evals_per_step", "grad/log10_var", "grad/log10_work_var")


def interpolate_at(x: Sequence[float], y: Sequence[float], budget: float) -> float:
    """y at x = budget on the piecewise-linear curve through the points (x
    increasing); NaN outside [x[0], x[-1]] or where y is missing."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if not len(x) or not math.isfinite(budget) or budget < x[0] or budget > x[-1]:
        return math.nan
    return float(np.interp(budget, x, y))


def eval_points(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run and evaluation step: run_id, step, val/elbo, val/iwae,
    f_evals, train_seconds (NaN where not known)."""
    cols = ["run_id", "step", *BOUNDS, *AXES]
    c = curves[curves["key"].isin(CURVE_KEYS)]
    if c.empty:
        return pd.DataFrame(columns=cols)
    wide = c.pivot(index=["run_id", "step"], columns="key", values="value")
    wide = wide.reindex(columns=list(CURVE_KEYS)).reset_index()
    rows = []
    for rid, g in wide.groupby("run_id", sort=True):
        g = g.sort_values("step")
        cost = g.dropna(subset=["cost/f_evals"])
        xs = np.concatenate([[0.0], cost["step"].to_numpy(float)])
        ys = np.concatenate([[0.0], cost["cost/f_evals"].to_numpy(float)])
        step = g["step"].to_numpy(float)
        f = np.interp(step, xs, ys) if len(cost) else np.full(len(g), math.nan)
        f[step > xs[-1]] = math.nan      # past the last logged cost: unknown
        seconds = g["perf/wall_seconds"] - g["perf/eval_seconds"]
        rows.append(pd.DataFrame({"run_id": rid, "step": g["step"].to_numpy(),
                                  "val/elbo": g["val/elbo"], "val/iwae": g["val/iwae"],
                                  "f_evals": f, "train_seconds": seconds.to_numpy(float)}))
    points = pd.concat(rows, ignore_index=True)
    return points[points["val/elbo"].notna()].reset_index(drop=True)[cols]


def _usable(p: pd.DataFrame, axis: str) -> tuple[bool, str]:
    known = p[np.isfinite(p[axis].to_numpy(float))]
    if len(p) < 2:
        return False, f"{len(p)} evaluation(s): no curve past the first"
    if len(known) < 2 or known[axis].max() <= known[axis].min():
        what = "cost/f_evals" if axis == "f_evals" else "perf/wall_seconds, perf/eval_seconds"
        return False, f"{what} not logged at two evaluations"
    return True, ""


def at_budget(runs: pd.DataFrame, curves: pd.DataFrame,
              by: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs with budget/<axis>, <bound>@<axis>, cost/f_evals_per_step and
    grad/log10_work_var columns; the runs not usable on an axis, with why)."""
    points = eval_points(curves)
    per_run = {rid: g.sort_values("step") for rid, g in points.groupby("run_id", sort=False)}
    empty = points.iloc[:0]
    group = [c for c in by if c not in ("estimator", "variant")]
    out, excluded = runs.copy(), []
    for axis in AXES:
        out[f"budget/{axis}"] = math.nan
        for b in BOUNDS:
            out[f"{b}@{axis}"] = math.nan
        for _, g in (out.groupby(group, sort=False) if group else [((), out)]):
            usable = []
            for i, rid in zip(g.index, g["run_id"]):
                p = per_run.get(rid, empty)
                ok, why = _usable(p, axis)
                if ok:
                    usable.append((i, p.sort_values(axis, kind="mergesort")))
                else:
                    excluded.append({**{c: out.at[i, c] for c in by},
                                     "seed": out.at[i, "seed"], "run_id": rid,
                                     "axis": AXES[axis], "reason": why})
            if not usable:
                continue
            budget = min(float(p[axis].max()) for _, p in usable)
            for i, p in usable:
                out.at[i, f"budget/{axis}"] = budget
                for b in BOUNDS:
                    out.at[i, f"{b}@{axis}"] = interpolate_at(p[axis], p[b], budget)
    out["cost/f_evals_per_step"] = out["run_id"].map(f_per_step(curves)).astype(float)
    var = (pd.to_numeric(out["grad/log10_var"], errors="coerce") if "grad/log10_var" in out
           else math.nan)
    out["grad/log10_work_var"] = var + np.log10(out["cost/f_evals_per_step"])
    cols = list(by) + ["seed", "run_id", "axis", "reason"]
    return out, sort_rows(pd.DataFrame(excluded, columns=cols), cols)


def f_per_step(curves: pd.DataFrame) -> pd.Series:
    """Per run: f-evaluations per step per example, from its last cost/f_evals point."""
    cost = curves[(curves["key"] == "cost/f_evals") & (curves["step"] > 0)]
    last = cost.sort_values(["run_id", "step"], kind="mergesort").groupby("run_id").last()
    return last["value"] / last["step"]


def budget_tables(runs: pd.DataFrame, curves: pd.DataFrame, by: Sequence[str],
                  note: str) -> tuple[str, pd.DataFrame]:
    """(budget.md text, budget.csv frame): one CSV row per table row."""
    by = list(by)
    values, excluded = at_budget(runs, curves, by)
    metrics = [f"{b}@{a}" for a in AXES for b in BOUNDS] + list(WORK)
    agg = aggregate(values, by, metrics)
    group = [c for c in by if c not in ("estimator", "variant")]
    for pos, axis in enumerate(AXES):   # one budget per group: a plain value, no spread
        budgets = values.groupby(by, sort=False)[f"budget/{axis}"].max() if len(values) else {}
        agg.insert(len(by) + 1 + pos, f"budget/{axis}",
                   [budgets.get(tuple(r) if len(by) > 1 else r[0], math.nan)
                    for r in agg[by].itertuples(index=False)])
    n_eval = eval_points(curves).groupby("run_id").size()
    n_eval = n_eval[n_eval.index.isin(values["run_id"])]
    evals = (f"{n_eval.min()}–{n_eval.max()}" if len(n_eval) and n_eval.min() != n_eval.max()
             else f"{n_eval.min() if len(n_eval) else 0}")
    text = [f"# Equal compute\n\n{note}. Compared within each group of "
            f"{', '.join(group) or 'all runs'}: the budget is the largest that every usable "
            f"run of the group reached, and each run's validation curve ({evals} evaluations "
            f"per run) is linearly interpolated there; few evaluations make that coarse. "
            f"Training seconds exclude evaluation time and depend on the machine and its "
            f"load: compare them only within one study.\n"]
    cheap = [m for m in metrics if m.endswith("@f_evals")]
    for title, plain, cols in (
            ("At a common budget of f-evaluations (per example)", ["budget/f_evals"], cheap),
            ("At a common budget of training seconds", ["budget/train_seconds"],
             [m for m in metrics if m.endswith("@train_seconds")]),
            ("Work-normalised gradient variance", ["cost/f_evals_per_step"],
             ["grad/log10_var", "grad/log10_work_var"])):
        if all(agg[f"{m}.n"].sum() == 0 for m in cols if f"{m}.n" in agg):
            text.append(f"\n## {title}\n\nNo run has the values this table needs.\n")
            continue
        cols = [m for m in cols if agg[f"{m}.n"].sum() > 0]
        plain_cells = [fmt_column(agg[p].tolist() if p in agg else agg[f"{p}.mean"].tolist())
                       for p in plain]
        cells = [metric_cells(agg, m, "ci95") for m in cols]
        rows = [list(r) + [int(n)] + [c[i] for c in plain_cells + cells]
                for i, (r, n) in enumerate(zip(agg[by].itertuples(index=False), agg["n"]))]
        header = by + ["n"] + plain + cols
        text += [f"\n## {title}\n\n", md_table(header, rows), single_note(agg, cols), "\n",
                 legend(header, runs)]
    text.append("\n## Runs not at a budget\n\n")
    text.append(md_table(list(excluded.columns), excluded.astype(str).values.tolist())
                if len(excluded) else "None: every run has a curve past its first evaluation "
                                      "on both axes.\n")
    return "".join(text), agg
