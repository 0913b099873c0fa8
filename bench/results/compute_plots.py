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

One line per estimator variant and panel (task, and conditioning type where it
varies); runs of a line with other settings (seeds, KL schedules) are pooled.
A line of one run is that run's evaluations; a line of several is their mean
± 1 standard error, each run linearly interpolated on the union of the
runs' x values between the largest first x and the smallest last x of its
runs, so a line ends where its shortest run ends and nothing is extrapolated.
Not drawn, with the reason as status: no val/elbo after step 0, the x metrics
never logged (runs older than them), or no run with two evaluations after
step 0 whose x is known. Runs left out of a drawn figure are counted in its status.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .budget import eval_points
from .plots import DPI, PNG_META, labels, n_range, plt

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
MARKERS_UP_TO = 30  # points per line; denser lines read better without markers


def mean_line(runs: list[tuple[np.ndarray, np.ndarray]]):
    """(x, mean, s.e. or None) of one line from its runs' (x, y), x ascending."""
    if len(runs) == 1:
        return runs[0][0], runs[0][1], None
    lo, hi = max(x[0] for x, _ in runs), min(x[-1] for x, _ in runs)
    if hi < lo:  # the runs' x ranges do not overlap: no common grid
        return np.array([]), np.array([]), None
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in runs] + [[lo, hi]]))
    ys = np.stack([np.interp(grid, x, y) for x, y in runs])
    return grid, ys.mean(0), ys.std(0, ddof=1) / np.sqrt(len(runs))


def _band_note(ns: list[int]) -> str:
    if min(ns) > 1:
        return (f"mean ± 1 s.e. over runs (n = {n_range(ns)} per line), interpolated on a "
                f"common x grid; a line ends where its shortest run ends")
    if max(ns) == 1:
        return "one run per line: no band"
    return "mean ± 1 s.e. where a line has several runs; lines with one run have no band"


def _figure(data: pd.DataFrame, runs: pd.DataFrame, colours: dict, x_label: str,
            title: str, path: Path) -> Path:
    hue, col = labels(runs)
    data = data.merge(runs[list(dict.fromkeys(["run_id", hue, col, "conditioning"]))],
                      on="run_id")
    by_cond = data["conditioning"].nunique() > 1
    tasks = sorted(data[col].astype(str).unique())
    conds = sorted(data["conditioning"].astype(str).unique()) if by_cond else [None]
    fig, axes = plt.subplots(len(tasks), len(conds), squeeze=False,
                             figsize=(4.6 * len(conds), 3.4 * len(tasks) + 0.9))
    positive = data.loc[data["x"] > 0, "x"]
    log_x = len(positive) > 0 and positive.max() / positive.min() > LOG_X_SPAN
    ns, shown = [], set()
    for (i, task), (j, cond) in ((a, b) for a in enumerate(tasks) for b in enumerate(conds)):
        ax = axes[i][j]
        panel = data[data[col].astype(str) == task]
        if by_cond:
            panel = panel[panel["conditioning"].astype(str) == cond]
        if panel.empty:
            ax.set_axis_off()
            continue
        for name, line in sorted(panel.groupby(hue), key=lambda kv: str(kv[0])):
            per_run = [(g["x"].to_numpy(), g["elbo"].to_numpy())
                       for _, g in line.sort_values("x").groupby("run_id")]
            x, mean, se = mean_line(per_run)
            if not len(x):
                continue
            ns.append(len(per_run))
            colour = colours.get(str(name))
            ax.plot(x, mean, color=colour, lw=1.8, label=str(name),
                    marker="o" if len(x) <= MARKERS_UP_TO else None, ms=3.5)
            if se is not None:
                ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.22, lw=0)
            shown.add(str(name))
        ax.set(title=task + (f" · {cond}" if by_cond else ""), xlabel=x_label, ylabel=Y_LABEL)
        if log_x:
            ax.set_xscale("log")
    handles = [plt.Line2D([], [], color=colours.get(n), lw=2.5, label=n) for n in sorted(shown)]
    fig.legend(handles=handles, title="estimator variant", loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    width = int(4.6 * len(conds) * DPI / 7.5)  # characters of 11 points across the panels
    lines = [title, f"from the first evaluation after step 0; {_band_note(ns or [1])}"]
    fig.suptitle("\n".join(textwrap.fill(t, max(width, 70)) for t in lines), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)
    return path


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
    _figure(data[["run_id", "step", "elbo", "x"]], runs, colours, x_label, title, path)
    return path, "; ".join(["drawn"] + notes)


def write_compute_figures(runs: pd.DataFrame, curves: pd.DataFrame, folder: Path,
                          colours: dict) -> dict[str, tuple[Optional[Path], str]]:
    points = eval_points(curves)
    return {name: _one(name, runs, curves, points, folder / f"{name}.png", colours)
            for name in FIGURES}
