"""Figures for `bench.tables`: seaborn on the Agg backend, written as PNG.

Contract: `write_figures(runs, curves, folder, client=None)` takes the FINISHED
job runs (one row per run: tags and final metrics, as `bench.results.store`
builds them), their long-format histories (run_id, key, step, value) for
`CURVE_KEYS`, and optionally the MlflowClient of the store (for the sample
grids, which are run artifacts), and writes, where the data can fill them:

    elbo_curves.png          validation ELBO against step, one line per setting
    grad_log10_var.png       log10 gradient variance against step, one line per setting
    heatmap_val_elbo.png     setting (but conditioning) x conditioning, mean final validation ELBO
    collapse_free_bits.png   active units and mutual information against free bits
    elbo_vs_f_evals.png      validation ELBO against evaluations of f (bench.results.compute_plots)
    elbo_vs_seconds.png      validation ELBO against training seconds (bench.results.compute_plots)
    samples_*.png            the last sample grids of image runs, one panel per
                             run (bench.results.grids; needs `client`)
    README.md                what each figure shows, and why any was not drawn

Lines (bench.results.lines): runs are split by every key the tables group
rows by that varies (estimator variant, conditioning, model options, latent,
KL schedule, free bits, ...), so a line's runs are its seeds; the legend
names each line by the settings that vary ("gumbel · film"). A band of one
standard error over seeds where a line has two seeds or more (the title says
when there is none); a line needs two points, and a figure none of whose
lines has them (one evaluation per run) is not drawn, with the reason.

Readable at the size written: axes in words with units; curves start at the
first evaluation after step 0 (the untrained model's value would set the
range and squash the differences that matter); one colour per estimator
variant from a colour-blind-safe palette, the same colour in every figure,
and one dash pattern per the rest of a line's settings. A figure whose
x-axis the study does not vary (one free-bits value; one estimator and one
conditioning) is not drawn, and README.md says so. Stale copies are removed.
PNG metadata carries no software version or date, so the same runs give the
same files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

# val/elbo and grad/log10_var for the curves; the cost and time keys for the
# bound against compute (compute_plots.KEYS, repeated here so that importing
# this module does not import that one)
CURVE_KEYS = ("val/elbo", "grad/log10_var", "cost/f_evals", "perf/wall_seconds",
              "perf/eval_seconds")
FIGURES = ("elbo_curves", "grad_log10_var", "heatmap_val_elbo", "collapse_free_bits",
           "elbo_vs_f_evals", "elbo_vs_seconds",
           "samples_class", "samples_vary_class", "samples_reconstructions",
           "samples_named_class", "samples_named_vary_class", "samples_interpolation",
           "samples_class_blend", "latent_tsne")
PNG_META = {"Software": None}  # None drops the key: no matplotlib version in the file
DPI = 110
# words and units for every axis a figure draws
AXIS = {"step": "training step (optimiser updates)",
        "val/elbo": "validation ELBO (nats, higher is better)",
        "grad/log10_var": "log10 gradient variance (sum over encoder parameters)",
        "collapse/active_units": "active units (count)",
        "collapse/mutual_info": "mutual information I(x; z) (nats)",
        "free_bits": "free bits λ (nats)"}
AFTER_0 = "from the first evaluation after step 0"
TITLE = {"val/elbo": "Validation ELBO during training",
         "grad/log10_var": "Gradient variance of the encoder during training"}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)
    return path


def labels(runs: pd.DataFrame) -> tuple[str, str]:
    """(hue, panel) columns: the variant labels of tables.add_variants where
    present (reinforce(baseline=ema), toy(t=0.499)), else estimator and task."""
    return ("variant" if "variant" in runs else "estimator",
            "task_variant" if "task_variant" in runs else "task")


def palette(runs: pd.DataFrame) -> dict[str, tuple]:
    """One colour per estimator variant, fixed by sorted name over the whole
    study, so a variant has the same colour in every figure."""
    hue, _ = labels(runs)
    names = sorted(runs[hue].astype(str).unique())
    colours = sns.color_palette("colorblind", max(len(names), 1))
    return dict(zip(names, colours))


def n_range(ns) -> str:
    """"3" or "2–4": the runs per line of a figure."""
    lo, hi = min(ns), max(ns)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _curve(runs, curves, key: str, path: Path, colours: dict) -> tuple[Optional[Path], str]:
    from .lines import add_lines, draw_panels  # it imports this module, as compute_plots does
    hue, col = labels(runs)
    data = curves[(curves["key"] == key) & (curves["step"] > 0)]
    if data.empty:
        return None, f"no {key} logged after step 0"
    runs, legend = add_lines(runs)
    data = data.merge(runs[list(dict.fromkeys(["run_id", hue, col, "line", "rest"]))],
                      on="run_id")
    data = data.rename(columns={"run_id": "series", "step": "x", "value": "y"})
    return draw_panels(data, colours, hue=hue, legend=legend, row=col, col=None,
                       x_label=AXIS["step"], y_label=AXIS[key],
                       title=TITLE[key], subtitle=AFTER_0, path=path)


def _heatmap(runs, path: Path) -> tuple[Optional[Path], str]:
    from .lines import add_lines
    if "val/elbo" not in runs or runs["val/elbo"].notna().sum() == 0:
        return None, "no final val/elbo"
    # rows: every setting that varies but the conditioning, the columns
    runs, legend = add_lines(runs, exclude=("conditioning",))
    rows, cols = runs["line"].nunique(), runs["conditioning"].nunique()
    if rows < 2 and cols < 2:
        return None, "one estimator and one conditioning type: nothing to compare"
    _, panel = labels(runs)
    tasks = sorted(runs[panel].astype(str).unique())
    width = 3.0 + 1.0 * cols + 0.06 * max(len(n) for n in runs["line"])
    fig, axes = plt.subplots(1, len(tasks), squeeze=False,
                             figsize=(len(tasks) * width, 1.8 + 0.45 * rows))
    for ax, task in zip(axes[0], tasks):
        table = (runs[runs[panel].astype(str) == task]
                 .pivot_table(index="line", columns="conditioning", values="val/elbo",
                              aggfunc="mean")
                 .sort_index().sort_index(axis=1))
        sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", ax=ax,
                    cbar_kws={"label": AXIS["val/elbo"]})
        ax.set(title=task, xlabel="conditioning type", ylabel=legend)
        ax.tick_params(axis="y", rotation=0)  # estimator names read horizontally
    fig.suptitle("Final validation ELBO (nats), mean over seeds")
    fig.tight_layout()
    return _save(fig, path), "drawn"


def _collapse(runs, path: Path, colours: dict) -> tuple[Optional[Path], str]:
    from .lines import add_lines, draw_panels
    metrics = [m for m in ("collapse/active_units", "collapse/mutual_info") if m in runs]
    fb = pd.to_numeric(runs["free_bits"], errors="coerce") if "free_bits" in runs else None
    if not metrics or fb is None or fb.notna().sum() == 0:
        return None, "no free_bits tag or collapse metrics"
    if fb.nunique() < 2:
        return None, f"one free-bits value ({fb.dropna().iloc[0]:g}) in the study: no x-axis to draw"
    hue, panel = labels(runs)
    runs, legend = add_lines(runs, exclude=("free_bits",))
    data = runs.assign(x=fb, series=runs["seed"].astype(str) if "seed" in runs else "0")
    data = data.dropna(subset=["x"]).melt(
        id_vars=list(dict.fromkeys([panel, hue, "line", "rest", "series", "x"])),
        value_vars=metrics, var_name="metric", value_name="y").dropna(subset=["y"])
    # a series is one seed of a line across free-bits values; runs the line pools
    # (settings the tables pool too) are averaged first
    data = data.groupby([panel, "metric", hue, "line", "rest", "series", "x"],
                        as_index=False)["y"].mean()
    return draw_panels(data, colours, hue=hue, legend=legend, row=panel, col="metric",
                       x_label=AXIS["free_bits"], y_label={m: AXIS[m] for m in metrics},
                       title="Latent use against free bits", path=path,
                       # each panel names its metric: no label read as its neighbour's
                       titles=lambda r, c: f"{r} · {c.split('/')[-1].replace('_', ' ')}")


def write_figures(runs: pd.DataFrame, curves: pd.DataFrame, folder: Path,
                  client=None) -> list[Path]:
    """Every figure the data fills, and README.md; `client` (an MlflowClient)
    is needed only for the sample grids, which are run artifacts."""
    from .compute_plots import write_compute_figures  # they import this module
    from .grids import write_grid_figures

    folder.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        (folder / f"{name}.png").unlink(missing_ok=True)
    if runs.empty:
        return []
    colours = palette(runs)
    with sns.axes_style("whitegrid"):
        made = {
            "elbo_curves": _curve(runs, curves, "val/elbo", folder / "elbo_curves.png", colours),
            "grad_log10_var": _curve(runs, curves, "grad/log10_var", folder / "grad_log10_var.png",
                                     colours),
            "heatmap_val_elbo": _heatmap(runs, folder / "heatmap_val_elbo.png"),
            "collapse_free_bits": _collapse(runs, folder / "collapse_free_bits.png", colours),
            **write_compute_figures(runs, curves, folder, colours),
        }
    made.update(write_grid_figures(client, runs, folder))
    lines = ["# Figures", "", "| figure | status |", "|---|---|"]
    lines += [f"| `{name}.png` | {why if path else 'not drawn: ' + why} |"
              for name, (path, why) in made.items()]
    readme = folder / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return [p for p, _ in made.values() if p is not None] + [readme]
