"""Figures for `bench.tables`: seaborn on the Agg backend, written as PNG.

Contract: `write_figures(runs, curves, folder)` takes the FINISHED job runs (one
row per run: tags and final metrics, as `bench.results.store` builds them) and
their long-format histories (run_id, key, step, value) for `CURVE_KEYS`, and
writes, where the data exist:

    elbo_curves.png          val/elbo against step, one line per estimator
    grad_log10_var.png       grad/log10_var against step, one line per estimator
    heatmap_val_elbo.png     estimator × conditioning, mean final val/elbo
    collapse_free_bits.png   active units and mutual information against free bits

Lines are means over runs with a ± one standard error band (errorbar="se":
bootstrapped intervals would dominate the run time over 1,000 runs); one panel
per task. Figures a study cannot fill (no free_bits tag, say) are not written,
and stale copies are removed. PNG metadata carries no software version or date.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

CURVE_KEYS = ("val/elbo", "grad/log10_var")
FIGURES = ("elbo_curves", "grad_log10_var", "heatmap_val_elbo", "collapse_free_bits")
PNG_META = {"Software": None}  # None drops the key: no matplotlib version in the file
DPI = 110


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)
    return path


def _labels(runs: pd.DataFrame) -> tuple[str, str]:
    """(hue, panel) columns: the variant labels of bench.tables.add_variants where
    present (reinforce(baseline=ema), toy(t=0.499)), else estimator and task."""
    return ("variant" if "variant" in runs else "estimator",
            "task_variant" if "task_variant" in runs else "task")


def _curve(runs: pd.DataFrame, curves: pd.DataFrame, key: str, path: Path):
    hue, col = _labels(runs)
    data = curves[curves["key"] == key].merge(runs[list(dict.fromkeys(["run_id", hue, col]))], on="run_id")
    if data.empty:
        return None
    data = data.rename(columns={"value": key})
    grid = sns.relplot(
        data=data, x="step", y=key, hue=hue, col=col, kind="line",
        errorbar="se", hue_order=sorted(data[hue].unique()),
        col_order=sorted(data[col].unique()), facet_kws={"sharey": False},
        height=3.2, aspect=1.3,
    )
    grid.figure.suptitle(f"{key} (mean ± s.e. over runs)", y=1.03)
    return _save(grid.figure, path)


def _heatmap(runs: pd.DataFrame, path: Path):
    if "val/elbo" not in runs or runs["val/elbo"].notna().sum() == 0:
        return None
    hue, _ = _labels(runs)
    tasks = sorted(runs["task"].unique())
    rows, cols = runs[hue].nunique(), runs["conditioning"].nunique()
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(len(tasks) * (2.5 + 0.9 * cols), 1.5 + 0.45 * rows))
    for ax, task in zip(axes[0], tasks):
        table = (runs[runs["task"] == task]
                 .pivot_table(index=hue, columns="conditioning", values="val/elbo",
                              aggfunc="mean")
                 .sort_index().sort_index(axis=1))
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax,
                    cbar_kws={"label": "final val/elbo"})
        ax.set_title(f"task={task}")
        ax.tick_params(axis="y", rotation=0)  # estimator names read horizontally
    fig.suptitle("final val/elbo, mean over seeds and other settings")
    fig.tight_layout()
    return _save(fig, path)


def _collapse(runs: pd.DataFrame, path: Path):
    metrics = [m for m in ("collapse/active_units", "collapse/mutual_info") if m in runs]
    fb = pd.to_numeric(runs.get("free_bits"), errors="coerce") if "free_bits" in runs else None
    if not metrics or fb is None or fb.notna().sum() == 0:
        return None
    hue, _ = _labels(runs)
    data = runs.assign(free_bits=fb).dropna(subset=["free_bits"])
    data = data.melt(id_vars=list(dict.fromkeys(["task", hue, "free_bits"])), value_vars=metrics,
                     var_name="metric", value_name="value").dropna(subset=["value"])
    if data.empty:
        return None
    grid = sns.relplot(
        data=data, x="free_bits", y="value", hue=hue, col="metric", row="task",
        kind="line", marker="o", errorbar="se", hue_order=sorted(data[hue].unique()),
        col_order=metrics, row_order=sorted(data["task"].unique()),
        facet_kws={"sharey": False}, height=3.0, aspect=1.3,
    )
    grid.set_axis_labels("free bits (nats)", "")
    return _save(grid.figure, path)


def write_figures(runs: pd.DataFrame, curves: pd.DataFrame, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        (folder / f"{name}.png").unlink(missing_ok=True)
    if runs.empty:
        return []
    with sns.axes_style("whitegrid"):
        made = [
            _curve(runs, curves, "val/elbo", folder / "elbo_curves.png"),
            _curve(runs, curves, "grad/log10_var", folder / "grad_log10_var.png"),
            _heatmap(runs, folder / "heatmap_val_elbo.png"),
            _collapse(runs, folder / "collapse_free_bits.png"),
        ]
    return [p for p in made if p is not None]
