"""The validation bound against compute, for `bench.results.plots.write_figures`.

Contract: `write_compute_figures(runs, curves, folder, colours)` returns
{figure name: (path or None, status)} and writes, where the data can fill them:

    elbo_vs_f_evals.png   val/elbo against cumulative evaluations of f per example
                          (cost/f_evals: steps x Estimator.f_evaluations)
    elbo_vs_seconds.png   val/elbo against training seconds: perf/wall_seconds
                          minus perf/eval_seconds (evaluation time, gradient
                          statistics above all, differs between estimators and
                          is no part of training)

`runs` and `curves` are what `write_figures` receives (one row per FINISHED
run; long-format histories run_id, key, step, value) and `colours` its palette.
The x of each evaluation is the one the equal-compute tables read
(`bench.results.budget.eval_points`), so figure and table agree: the times are
logged with every log call, evaluations included; cost/f_evals only at
logging steps, so at an evaluation step that is not one (train.eval_every not
a multiple of train.log_every) it is interpolated in step through (0, 0),
exact since it is linear in step; the status says how many evaluations that
concerned. Points start at the first evaluation after step 0.

Panels per task, and per conditioning type where it varies; within a panel
one line per setting, spread over seeds (`bench.results.lines`). A line of
one run is that run's evaluations; a line of several is their mean
± 1 standard error, each run linearly interpolated on the union of the
runs' x values between the largest first x and the smallest last x of its
runs, so a line ends where its shortest run ends and nothing is extrapolated.
Not drawn, with the reason as status: no val/elbo after step 0, the x metrics
never logged (runs older than them), or no run with two evaluations after
step 0 whose x is known. Runs left out of a drawn figure are counted in its status.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .budget import eval_points
from .lines import add_lines, draw_panels
from .plots import labels

ELBO = "val/elbo"
WALL, EVAL_S, F_EVALS = "perf/wall_seconds", "perf/eval_seconds", "cost/f_evals"
KEYS = (F_EVALS, WALL, EVAL_S)      # what write_figures must fetch besides val/elbo
FIGURES = ("elbo_vs_f_evals", "elbo_vs_seconds")
# figure -> (column of eval_points, metrics it needs, x-axis, title)
AXES = {
    "elbo_vs_f_evals": ("f_evals", (F_EVALS,), "evaluations of f per example (cumulative)",
                        "Validation ELBO against evaluations of the objective f"),
    "elbo_vs_seconds": ("train_seconds", (WALL, EVAL_S),
                        "training time (seconds, evaluation excluded)",
                        "Validation ELBO against training time"),
}
Y_LABEL = "validation ELBO (nats, higher is better)"
LOG_X_SPAN = 30   # a log x-axis once x spans this factor: exact's K^D f-evaluations per step


def _figure(data: pd.DataFrame, runs: pd.DataFrame, colours: dict, x_label: str,
            title: str, path: Path) -> tuple[Optional[Path], str]:
    hue, col = labels(runs)
    by_cond = runs["conditioning"].nunique() > 1
    runs, legend = add_lines(runs, exclude=("conditioning",) if by_cond else ())
    data = data.merge(runs[list(dict.fromkeys(["run_id", hue, col, "conditioning", "line",
                                               "rest"]))], on="run_id")
    positive = data.loc[data["x"] > 0, "x"]
    log_x = len(positive) > 0 and positive.max() / positive.min() > LOG_X_SPAN
    data = data.rename(columns={"run_id": "series", "elbo": "y"})
    return draw_panels(
        data, colours, hue=hue, legend=legend, row=col, col="conditioning" if by_cond else None,
        x_label=x_label, y_label=Y_LABEL, path=path, log_x=log_x,
        title=title, subtitle="from the first evaluation after step 0",
        grid=", interpolated on a common x grid; a line ends where its shortest run ends",
        titles=lambda task, cond: task + (f" · {cond}" if by_cond else ""))


def _one(name: str, runs, curves, points: pd.DataFrame, path: Path,
         colours: dict) -> tuple[Optional[Path], str]:
    axis, needs, x_label, title = AXES[name]
    after = points[points["step"] > 0]
    if after.empty:
        return None, f"no {ELBO} logged after step 0"
    logged = set(curves["key"])
    if not set(needs) <= logged:
        return None, (f"no {', '.join(k for k in needs if k not in logged)} logged "
                      f"(runs older than that metric)")
    known = after[np.isfinite(after[axis].to_numpy(float))]
    counts = known.groupby("run_id").size()
    kept = counts[counts >= 2].index
    if not len(kept):
        return None, (f"no run has two evaluations after step 0 with a known {axis}: "
                      f"no curve to draw")
    notes = []
    missing = after["run_id"].nunique() - len(kept)
    if missing:
        notes.append(f"{missing} run(s) without {' and '.join(needs)} at two evaluations "
                     f"after step 0 left out")
    unknown = int((~np.isfinite(after[axis].to_numpy(float)) & after["run_id"].isin(kept)).sum())
    if unknown:
        notes.append(f"{unknown} evaluation(s) without a known {axis} left out")
    if axis == "f_evals":
        cost = curves.loc[curves["key"] == F_EVALS, ["run_id", "step"]].assign(logged=True)
        at = known[known["run_id"].isin(kept)].merge(cost, on=["run_id", "step"], how="left")
        interpolated = int(at["logged"].isna().sum())
        if interpolated:
            notes.append(f"x interpolated in step at {interpolated} evaluation(s) that were "
                         f"not logging steps")
    data = known[known["run_id"].isin(kept)].rename(columns={ELBO: "elbo", axis: "x"})
    drawn, status = _figure(data[["run_id", "step", "elbo", "x"]], runs, colours, x_label,
                            title, path)
    return drawn, "; ".join([status] + notes)


def write_compute_figures(runs: pd.DataFrame, curves: pd.DataFrame, folder: Path,
                          colours: dict) -> dict[str, tuple[Optional[Path], str]]:
    points = eval_points(curves)
    return {name: _one(name, runs, curves, points, folder / f"{name}.png", colours)
            for name in FIGURES}
