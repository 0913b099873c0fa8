"""The lines of the figures of `bench.tables`: one per setting, spread over seeds alone.

Contract: a figure's lines split its runs by the keys the tables group rows by
(`aggregate.group_keys`: estimator variant and conditioning, and the model
options, latent, KL schedule, free bits ... where they vary), less the task
(every figure's panel) and what the figure puts on its x-axis or in panels of
its own (`add_lines(runs, exclude)`). The runs of one line then differ in seed
(and in settings the tables pool too), so its spread is over seeds. Each line
is named by its estimator variant followed by the other keys that vary across
the runs ("gumbel · film", "reinforce · kl=linear · free_bits=0.5"); its colour
is its variant's (the palette of every figure), its dash pattern that of the
rest of its name.

`draw_panels(data, ...)` draws from long rows (series, x, y, line and the
panel columns; a series is one run, or for the collapse figure one seed):
a line is `mean_line` of its series, with a band of ± 1 standard error only
where it has two series or more; a line needs two points, and the figure is
not drawn, with the reason, where no line has them (one evaluation per run).
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .aggregate import group_keys
from .plots import DPI, PNG_META, labels, n_range, plt

SEP = " · "
PLAIN = ("estimator", "variant", "conditioning", "model")   # values that read as they are
Y_LABEL_CHARS = 36          # characters of an axis label along a 3.4-inch panel
DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)))
MARKERS_UP_TO = 30   # points per line; denser lines read better without markers


def add_lines(runs: pd.DataFrame, exclude: Sequence[str] = ()) -> tuple[pd.DataFrame, str]:
    """runs with `line` (its name) and `rest` (the name less the variant), and
    the legend title: the names of the settings that make up a line's name."""
    hue, panel = labels(runs)
    keys, _ = group_keys(runs)
    keys = [k for k in keys if k in runs and k not in ("task", "task_variant", panel, *exclude)]
    # the name starts with the variant label (the estimator's name where no option varies)
    shown = [k for k in keys if k not in ("estimator", "variant", hue)
             and runs[k].astype(str).nunique() > 1]

    def part(key, value):
        return str(value) if key in PLAIN else f"{key}={value}"
    rest = [SEP.join(part(k, v) for k, v in zip(shown, row))
            for row in runs[shown].itertuples(index=False)] if shown else [""] * len(runs)
    runs = runs.assign(rest=rest)
    runs["line"] = [SEP.join(p for p in (str(h), r) if p) for h, r in zip(runs[hue], runs["rest"])]
    return runs, SEP.join(["estimator variant"] + shown)


def mean_line(runs: list[tuple[np.ndarray, np.ndarray]]):
    """(x, mean, s.e. or None) of one line from its runs' (x, y), x ascending:
    each run interpolated on the union of their x between the largest first
    and the smallest last x, so nothing is extrapolated."""
    if len(runs) == 1:
        return runs[0][0], runs[0][1], None
    lo, hi = max(x[0] for x, _ in runs), min(x[-1] for x, _ in runs)
    if hi < lo:  # the runs' x ranges do not overlap: no common grid
        return np.array([]), np.array([]), None
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in runs] + [[lo, hi]]))
    ys = np.stack([np.interp(grid, x, y) for x, y in runs])
    return grid, ys.mean(0), ys.std(0, ddof=1) / np.sqrt(len(runs))


def band_note(ns: list[int], grid: str = "") -> str:
    if min(ns) > 1:
        return f"mean ± 1 s.e. over seeds (n = {n_range(ns)} per line){grid}"
    if max(ns) == 1:
        return "one seed per line: no band"
    return "mean ± 1 s.e. over seeds where a line has several; lines of one seed have no band"


def _lines(data: pd.DataFrame, row: str, col: Optional[str]) -> tuple[dict, int]:
    """{(row, col, line): (x, mean, se, n)} of the lines with two points or
    more, and how many had fewer."""
    out, short = {}, 0
    data = data[np.isfinite(data["x"].to_numpy(float)) & np.isfinite(data["y"].to_numpy(float))]
    for keys, g in data.groupby([row, col or row, "line"], sort=True):
        per = [(s["x"].to_numpy(float), s["y"].to_numpy(float))
               for _, s in g.sort_values("x").groupby("series", sort=True)]
        x, mean, se = mean_line(per)
        if len(x) < 2:
            short += 1
            continue
        out[keys] = (x, mean, se, len(per))
    return out, short


def draw_panels(data: pd.DataFrame, colours: dict, *, hue: str, legend: str, row: str,
                col: Optional[str], x_label: str, y_label, title: str, path: Path,
                log_x: bool = False, grid: str = "", subtitle: str = "",
                titles=None) -> tuple[Optional[Path], str]:
    """One panel per value of row (and col); y_label is a str or {col value: str};
    titles(row value, col value) -> panel title; the title's second line is
    subtitle, then the band note (grid: how lines of several series are formed).
    Returns (path or None, status)."""
    lines, short = _lines(data, row, col)
    if not lines:
        return None, (f"no line has two points (evaluations) after step 0 ({short} line(s) "
                      f"with one): no curve to draw")
    rows = sorted(data[row].astype(str).unique())
    cols = sorted(data[col].astype(str).unique()) if col else [None]
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                             figsize=(4.6 * len(cols), 3.4 * len(rows) + 0.9))
    info = data.drop_duplicates("line").set_index("line")
    rests = sorted(info["rest"].astype(str).unique())
    style = {n: (colours.get(str(r[hue])), DASHES[rests.index(str(r["rest"])) % len(DASHES)])
             for n, r in info.iterrows()}
    for (i, r), (j, c) in ((a, b) for a in enumerate(rows) for b in enumerate(cols)):
        ax = axes[i][j]
        mine = {k[2]: v for k, v in lines.items()
                if str(k[0]) == r and (col is None or str(k[1]) == c)}
        if not mine:
            ax.set_axis_off()
            continue
        for name, (x, mean, se, _) in mine.items():
            colour, dash = style[name]
            ax.plot(x, mean, color=colour, ls=dash, lw=1.8, label=name, ms=3.5,
                    marker="o" if len(x) <= MARKERS_UP_TO else None)
            if se is not None and np.isfinite(se).all():
                ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.22, lw=0)
        ylab = y_label if isinstance(y_label, str) else y_label[c]
        # wrapped to the panel's height: a longer label runs into the title above
        ax.set(title=titles(r, c) if titles else r, xlabel=x_label,
               ylabel=textwrap.fill(ylab, Y_LABEL_CHARS))
        if log_x:
            ax.set_xscale("log")
    shown = sorted({k[2] for k in lines})
    handles = [plt.Line2D([], [], color=style[n][0], ls=style[n][1], lw=2.5, label=n)
               for n in shown]
    fig.legend(handles=handles, title=legend, loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)
    width = int(4.6 * len(cols) * DPI / 7.5)  # characters of 11 points across the panels
    ns = [v[3] for v in lines.values()]
    text = [t for t in (title, subtitle, band_note(ns, grid)) if t]     # a line each
    fig.suptitle("\n".join(textwrap.fill(t, max(width, 70)) for t in text), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)
    status = "drawn" + (f"; {short} line(s) with fewer than two points left out" if short else "")
    return path, status
