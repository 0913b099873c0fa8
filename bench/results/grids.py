"""Sample grids of a study side by side, for `bench.results.plots.write_figures`.

Contract: `write_grid_figures(client, runs, folder)` returns {figure name:
(path or None, status)} and writes one PNG per grid kind that image runs with
`eval.samples=true` logged as artifacts (`models.samples.write_grids`, logged
under `samples/` as `step<7 digits>_<kind>.png` at every evaluation):

    samples_class.png            per-class samples (rows: classes; columns: draws of z)
    samples_vary_class.png       fix z, vary the class (rows: one z each; columns: classes)
    samples_reconstructions.png  validation inputs above their reconstructions

and, from the final evaluation (models.pictures, titled and labelled with
class names): samples_named_class.png, samples_named_vary_class.png,
samples_interpolation.png, samples_class_blend.png, latent_tsne.png

one panel per run holding its last grid of that kind (highest step), labelled
with estimator variant, conditioning, seed and step. Where the runs span
several tasks, each kind is one figure per task, `samples_class_<task>.png`
and so on (8x8 and 28x28 grids would not share a canvas, and each task gets
its own `max_runs` panels).
Candidates are the runs with a final gen/class_accuracy (those evaluations
also write the grids), so other runs cost no store request; each candidate
costs one artifact listing until `max_runs` (12) runs with grids are found,
taken in the order seed rank, task, variant, conditioning, so that the panels
cover every setting at its first seed before a second seed of any; the status
names the candidates left out. Only the shown grids are downloaded, into a
temporary folder.

Pixels are kept: each grid is magnified by an integer factor (a cell of 8x8
digits stays sharp, the 1-pixel pads stay 1 line) and placed with `figimage`,
so the PNG is exactly `canvas_size(...)` pixels. Not drawn, with the reason:
no client, no candidate, or no candidate with that grid kind.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..tracking.store import retrying
from .plots import DPI, PNG_META, labels, plt

FOLDER = "samples"                  # artifact folder of the grids (bench.job.evaluate)
NAME = re.compile(r"step(\d+)_(\w+)\.png$")
MARKER = "gen/class_accuracy"       # logged by every evaluation that writes grids
# grid kind -> (figure name, title, how to read a panel)
KINDS = {
    "class_samples": ("samples_class", "Samples per class",
                      "rows: classes 0, 1, ...; columns: independent draws z ~ p(z | class), "
                      "shown as mean images"),
    "vary_class": ("samples_vary_class", "Fix z, vary the class",
                   "rows: one latent z each; columns: classes 0, 1, ..., decoded with that z "
                   "(what the label controls is read along a row)"),
    "reconstructions": ("samples_reconstructions", "Reconstructions",
                        "top row: validation inputs; bottom row: their reconstructions "
                        "(z ~ q(z | x, class), mean images)"),
    # the final evaluation's labelled pictures (models.pictures), one per run
    "named_class_samples": ("samples_named_class", "Samples per class (fix the class, vary z)",
                            "rows: classes by name; columns: independent draws z ~ p(z | class)"),
    "named_vary_class": ("samples_named_vary_class", "Fix z, vary the class",
                         "columns: one latent z each; rows: classes by name, decoded with that z"),
    "interpolation": ("samples_interpolation", "Interpolation within a class",
                      "rows: classes; a row decodes the straight line between the posterior means "
                      "of two held-out images of that class"),
    "class_blend": ("samples_class_blend", "Class blending",
                    "rows: class pairs A -> B, one z per row; columns: label embedding "
                    "(1 - alpha) e_A + alpha e_B"),
    "latent_tsne": ("latent_tsne", "t-SNE of the posterior means",
                    "held-out images coloured by class: mixed classes = z carries style, not class"),
}
FIGURES = tuple(name for name, _, _ in KINDS.values())
MAX_RUNS, COLS = 12, 4
# magnify a grid to at least this width, by at most MAX_MAG: 28x28 MNIST grids
# double; grids of 8x8 digits are already scaled up by models.samples
MIN_PANEL_PX, MAX_MAG = 240, 4
# px: label = three 9-point lines (variant on up to two); header = the title and
# up to HEADER_LINES 9-point lines (how to read a panel on up to two, the note);
# MIN_WIDTH fits the header lines
GAP, LABEL_PX, MIN_WIDTH = 16, 54, 760
TITLE_PX, LINE_PX, HEADER_LINES = 32, 17, 3
HEADER_PX = TITLE_PX + LINE_PX * HEADER_LINES + 16
CHAR_PX = 6.5                       # about the width of one 9-point character at DPI
# the header's lines are wrapped at a wider estimate: a line that runs past the
# canvas is clipped, one a little short costs nothing
HEADER_CHAR_PX = 7.5
LISTED = 10                         # left-out runs named in the status, then a count


def magnification(width: int) -> int:
    return int(min(MAX_MAG, max(1, math.ceil(MIN_PANEL_PX / width))))


def canvas_size(n: int, cell: tuple[int, int]) -> tuple[int, int]:
    """(height, width) in pixels of a figure of n panels whose largest grid,
    magnified, is cell = (height, width) pixels."""
    cols, rows = min(n, COLS), math.ceil(n / COLS)
    return (HEADER_PX + rows * (LABEL_PX + cell[0] + GAP),
            max(MIN_WIDTH, cols * cell[1] + (cols + 1) * GAP))


def _order(runs: pd.DataFrame) -> pd.DataFrame:
    """Every setting at its first seed, then every setting at its second, ..."""
    hue, task = labels(runs)
    keys = list(dict.fromkeys([task, hue, "conditioning"]))
    seed = pd.to_numeric(runs["seed"], errors="coerce") if "seed" in runs else 0
    runs = runs.assign(_seed=seed).sort_values(keys + ["_seed", "run_id"], kind="mergesort")
    runs["_rank"] = runs.groupby(keys, sort=False).cumcount()
    return runs.sort_values(["_rank"] + keys + ["_seed", "run_id"], kind="mergesort")


def _label(run, hue: str, step: Optional[int] = None, width: Optional[int] = None) -> str:
    """The variant (wrapped at its commas to `width` pixels, at most two lines),
    then conditioning, seed and step; one line without step. (A figure holds one
    task: its title names it.)"""
    rest = f"{run['conditioning']} · seed {run.get('seed', '?')}"
    if step is None:
        return f"{run[hue]} · {rest}"
    variant = str(run[hue]).replace(",", ", ")     # break points inside variant options
    lines = textwrap.wrap(variant, max(8, int(width / CHAR_PX)), max_lines=2, placeholder=" …")
    return "\n".join([line.replace(", ", ",") for line in lines] + [f"{rest} · step {step}"])


def latest_grids(client, run_id: str) -> dict[str, tuple[int, str]]:
    """kind -> (step, artifact path) of the run's last grid of each kind."""
    out: dict[str, tuple[int, str]] = {}
    for f in retrying(client.list_artifacts, run_id, FOLDER):
        m = NAME.search(f.path)
        if m and not f.is_dir and int(m.group(1)) >= out.get(m.group(2), (-1, ""))[0]:
            out[m.group(2)] = (int(m.group(1)), f.path)
    return out


def _compose(panels: list[tuple[object, int, np.ndarray]], label, title: str, how: str,
             note: str, path: Path) -> Path:
    """panels: (run, step, RGB image); label(run, step, width) -> panel caption."""
    h = max(img.shape[0] for _, _, img in panels)
    w = max(img.shape[1] for _, _, img in panels)
    mag = magnification(w)
    cell = (h * mag, w * mag)
    H, W = canvas_size(len(panels), cell)
    cols = min(len(panels), COLS)
    left = (W - (cols * cell[1] + (cols + 1) * GAP)) // 2   # centre the panels
    fig = plt.figure(figsize=(W / DPI, H / DPI), dpi=DPI, facecolor="white")
    chars = int((W - 2 * GAP) / HEADER_CHAR_PX)
    fig.text(0.5, 1 - 8 / H, title, ha="center", va="top", fontsize=12, weight="bold")
    how = textwrap.wrap(how, chars, max_lines=HEADER_LINES - 1, placeholder=" ...")
    for i, line in enumerate(how + [textwrap.shorten(note, chars, placeholder=" ...")]):
        fig.text(0.5, 1 - (TITLE_PX + i * LINE_PX) / H, line, ha="center", va="top",
                 fontsize=9, color="0.3" if i == len(how) else "black")
    for i, (run, step, img) in enumerate(panels):
        r, c = divmod(i, COLS)
        x0 = left + GAP + c * (cell[1] + GAP)
        y0 = HEADER_PX + r * (LABEL_PX + cell[0] + GAP)          # from the top
        big = np.kron(img, np.ones((mag, mag, 1), dtype=img.dtype))           # (ih, iw, 3)
        ih, iw = big.shape[:2]
        xo, yo = x0 + (cell[1] - iw) // 2, y0 + LABEL_PX + (cell[0] - ih) // 2
        fig.figimage(big, xo=xo, yo=H - yo - ih, origin="upper")
        # bottom-anchored: a two-line caption sits on its grid like a three-line one
        fig.text((x0 + cell[1] / 2) / W, 1 - (y0 + LABEL_PX - 3) / H,
                 label(run, step, cell[1] + GAP), ha="center", va="bottom", fontsize=9,
                 linespacing=1.2)
    fig.savefig(path, dpi=DPI, metadata=PNG_META, facecolor="white")
    plt.close(fig)
    return path


def _names(labels_: list[str]) -> str:
    shown = ", ".join(labels_[:LISTED])
    return shown + (f" and {len(labels_) - LISTED} more" if len(labels_) > LISTED else "")


def write_grid_figures(client, runs: pd.DataFrame, folder: Path,
                       max_runs: int = MAX_RUNS) -> dict[str, tuple[Optional[Path], str]]:
    def every(why: str) -> dict:
        return {name: (None, why) for name in FIGURES}

    if client is None:
        return every("no MLflow client given to write_figures: the grids are run artifacts")
    if MARKER not in runs or runs[MARKER].notna().sum() == 0:
        return every(f"no run with eval.samples=true ({MARKER} never logged): no sample grids")
    _, task = labels(runs)
    with_grids = runs[runs[MARKER].notna()]
    tasks = sorted(with_grids[task].astype(str).unique())
    if len(tasks) == 1:
        return _write_grids(client, with_grids, folder, max_runs, "")
    out = {}    # one figure per task and kind: images of different sizes do not share a canvas
    for t in tasks:
        out.update(_write_grids(client, with_grids[with_grids[task].astype(str) == t], folder,
                                max_runs, f"_{t}"))
    return out


def _write_grids(client, runs: pd.DataFrame, folder: Path, max_runs: int,
                 suffix: str) -> dict[str, tuple[Optional[Path], str]]:
    hue, _ = labels(runs)
    candidates = _order(runs)
    found, unchecked, bare = [], [], 0
    for _, run in candidates.iterrows():
        if len(found) == max_runs:
            unchecked.append(run)
            continue
        grids = latest_grids(client, run["run_id"])
        if grids:
            found.append((run, grids))
        else:
            bare += 1
    if not found:
        return {name + suffix: (None, f"the {len(candidates)} run(s) with {MARKER} logged no "
                                      f"grids under {FOLDER}/") for name in FIGURES}
    left_out = [_label(r, hue) for r in unchecked]
    label = lambda run, step, width: _label(run, hue, step, width)  # noqa: E731
    out = {}
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        from PIL import Image
        for kind, (name, title, how) in KINDS.items():
            have = [(run, grids[kind]) for run, grids in found if kind in grids]
            if not have:
                out[name + suffix] = (None, f"no run logged a {kind} grid")
                continue
            panels = []
            for run, (step, art) in have:
                dst = Path(tmp) / run["run_id"]
                dst.mkdir(exist_ok=True)
                local = retrying(client.download_artifacts, run["run_id"], art, str(dst))
                panels.append((run, step, np.asarray(Image.open(local).convert("RGB"))))
            note = f"{len(panels)} of the {len(candidates)} run(s) with {MARKER} shown"
            status = f"drawn: {len(panels)} run(s)"
            if bare:
                note += f"; {bare} of them logged no grids"
                status += f"; {bare} run(s) with {MARKER} logged no grids"
            if unchecked:
                note += f"; {len(unchecked)} left out (at most {max_runs} panels)"
                status += f"; left out (at most {max_runs} panels): {_names(left_out)}"
            where = f" · {suffix[1:]}" if suffix else ""
            out[name + suffix] = (_compose(panels, label, title + where + " (last evaluation of "
                                           "each run)", how, note, folder / f"{name}{suffix}.png"),
                                  status)
    return out


@contextlib.contextmanager
def _quiet_downloads():
    """MLflow draws a progress bar per download (on stderr, one per panel); off
    while composing, the caller's setting restored afterwards."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
