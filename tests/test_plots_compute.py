"""The validation bound against compute (bench.results.compute_plots), from
small synthetic studies: x joined from the cost and time metrics at the
evaluation steps as the equal-compute tables join them (interpolated where
an evaluation step logged no cost),
seeds averaged on a common x grid up to the shortest run, the palette of
the other figures, and the degenerate studies skipped with a reason."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from bench.results import compute_plots as cp
from bench.results import lines, plots

F_PER_STEP = {"gumbel": 1, "reinforce": 4, "exact": 64}


def study(estimators=("gumbel", "reinforce"), seeds=(0, 1), conditionings=("concat",),
          evals=(0, 100, 200, 300), log_every=100, cost=True, eval_seconds=True):
    """Runs as write_figures receives them; each seed a little slower than the last."""
    runs, curves = [], []
    steps = sorted(set(evals) | set(range(0, max(evals) + 1, log_every)))
    for i, (est, seed, cond) in enumerate((e, s, c) for e in estimators for s in seeds
                                          for c in conditionings):
        rid = f"r{i}"
        runs.append({"run_id": rid, "estimator": est, "task": "digits", "conditioning": cond,
                     "seed": str(seed), "free_bits": "0.0", "val/elbo": -22.0})
        for step in steps:
            def add(key, value):
                curves.append({"run_id": rid, "key": key, "step": step, "value": float(value)})
            if step in evals:
                add("val/elbo", -40.0 + step / 20 + seed)
            add("perf/wall_seconds", (1 + seed) * step / 100 + 0.3 * (step in evals))
            if eval_seconds:
                add("perf/eval_seconds", 0.3 * (step in evals))
            if cost and step % log_every == 0 and step > 0:
                add("cost/f_evals", step * F_PER_STEP[est])
    return pd.DataFrame(runs), pd.DataFrame(curves)


def draw(runs, curves, folder):
    return cp.write_compute_figures(runs, curves, folder, plots.palette(runs))



def test_both_figures_are_written_and_readable(tmp_path):
    made = draw(*study(), tmp_path)
    assert set(made) == set(cp.FIGURES)
    for name, (path, status) in made.items():
        assert path == tmp_path / f"{name}.png" and status.startswith("drawn")
        img = mpimg.imread(path)
        assert img.shape[0] > 250 and img.shape[1] > 400


def test_one_colour_per_variant_the_palette_of_every_figure(tmp_path, figures):
    runs, curves = study(estimators=("reinforce", "gumbel", "exact"))
    draw(runs, curves, tmp_path)
    colours = plots.palette(runs)
    ax = figures["elbo_vs_f_evals.png"].axes[0]
    drawn = {line.get_label(): line.get_color() for line in ax.lines}
    assert drawn == {name: colours[name] for name in ("exact", "gumbel", "reinforce")}
    # exact takes 64 f-evaluations per step, gumbel 1: the x-axis turns logarithmic
    assert ax.get_xscale() == "log"
    legend = figures["elbo_vs_f_evals.png"].legends[0]
    assert legend.get_title().get_text() == "estimator variant"
    assert [t.get_text() for t in legend.get_texts()] == ["exact", "gumbel", "reinforce"]


def test_points_start_after_step_zero_at_the_logged_x(tmp_path, figures):
    draw(*study(estimators=("reinforce",), seeds=(0,)), tmp_path)
    line = figures["elbo_vs_f_evals.png"].axes[0].lines[0]
    assert list(line.get_xdata()) == [400, 800, 1200]           # steps 100-300 x 4 per step
    assert list(line.get_ydata()) == [-35.0, -30.0, -25.0]
    # one run: its own points, no band
    assert not figures["elbo_vs_f_evals.png"].axes[0].collections
    title = " ".join(figures["elbo_vs_f_evals.png"].get_suptitle().split())
    assert "one seed per line: no band" in title


def test_seconds_leave_evaluation_out(tmp_path, figures):
    made = draw(*study(estimators=("gumbel",), seeds=(0,)), tmp_path)
    ax = figures["elbo_vs_seconds.png"].axes[0]
    assert list(ax.lines[0].get_xdata()) == pytest.approx([1.0, 2.0, 3.0])  # wall minus eval
    assert "evaluation excluded" in ax.get_xlabel()
    assert made["elbo_vs_seconds"][1] == "drawn"


def test_seconds_need_the_evaluation_time_to_take_it_out(tmp_path):
    path, why = draw(*study(eval_seconds=False), tmp_path)["elbo_vs_seconds"]
    assert path is None and why == "no perf/eval_seconds logged (runs older than that metric)"


def test_seeds_are_averaged_on_a_common_grid_up_to_the_shortest_run(tmp_path, figures):
    draw(*study(estimators=("gumbel",), seeds=(0, 1)), tmp_path)
    fig = figures["elbo_vs_seconds.png"]
    ax = fig.axes[0]
    x = ax.lines[0].get_xdata()
    # seed 0 reaches 3 s, seed 1 (twice as slow) 6 s; seed 1's first evaluation is at 2 s
    assert x.min() == pytest.approx(2.0) and x.max() == pytest.approx(3.0)
    assert len(ax.collections) == 1                             # the band
    assert "n = 2 per line" in " ".join(fig.get_suptitle().split())   # wrapped to the width


def test_mean_line_interpolates_each_run_and_gives_the_standard_error():
    a = (np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([1.5, 2.5, 4.0]), np.array([1.0, 2.0, 3.0]))
    x, mean, se = lines.mean_line([a, b])
    assert list(x) == [1.5, 2.0, 2.5, 3.0]
    ya, yb = np.interp(x, *a), np.interp(x, *b)
    assert mean == pytest.approx((ya + yb) / 2)
    assert se == pytest.approx(np.abs(ya - yb) / 2)            # s.d. / sqrt(2) of two values
    x, mean, se = lines.mean_line([a])
    assert se is None and list(mean) == [0.0, 1.0, 2.0]


def test_evaluations_between_logging_steps_are_interpolated(tmp_path, figures):
    runs, curves = study(estimators=("reinforce",), seeds=(0,), evals=(0, 50, 100, 150, 200))
    made = draw(runs, curves, tmp_path)
    line = figures["elbo_vs_f_evals.png"].axes[0].lines[0]
    # steps 50 and 150 logged no cost: 4 f per step, interpolated exactly (0 at step 0)
    assert list(line.get_xdata()) == [200, 400, 600, 800]
    assert "x interpolated in step at 2 evaluation(s)" in made["elbo_vs_f_evals"][1]


def test_conditioning_types_get_their_own_panels(tmp_path, figures):
    draw(*study(conditionings=("concat", "film")), tmp_path)
    titles = [ax.get_title() for ax in figures["elbo_vs_f_evals.png"].axes if ax.axison]
    assert titles == ["digits · concat", "digits · film"]
    # the panels say the conditioning: the legend names the estimators alone
    legend = figures["elbo_vs_f_evals.png"].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["gumbel", "reinforce"]


@pytest.mark.parametrize("kw, name, words", [
    (dict(cost=False), "elbo_vs_f_evals", "no cost/f_evals logged (runs older than that metric)"),
    (dict(evals=(0, 100), cost=False), "elbo_vs_f_evals", "no cost/f_evals logged"),
    (dict(evals=(0, 100)), "elbo_vs_f_evals", "no run has two evaluations after step 0"),
    (dict(evals=(0, 100)), "elbo_vs_seconds", "no run has two evaluations after step 0"),
    (dict(evals=(0,)), "elbo_vs_seconds", "no val/elbo logged after step 0"),
])
def test_degenerate_studies_are_skipped_with_a_reason(tmp_path, kw, name, words):
    path, why = draw(*study(**kw), tmp_path)[name]
    assert path is None and why.startswith(words)
    assert not (tmp_path / f"{name}.png").exists()


def test_old_runs_without_cost_are_left_out_and_counted(tmp_path):
    runs, curves = study(estimators=("gumbel", "reinforce"), seeds=(0,))
    old = runs["run_id"][runs["estimator"] == "gumbel"].iloc[0]
    curves = curves[~((curves["run_id"] == old) & (curves["key"] == "cost/f_evals"))]
    path, why = draw(runs, curves, tmp_path)["elbo_vs_f_evals"]
    assert path is not None and "1 run(s) without cost/f_evals at two evaluations" in why


def test_write_figures_lists_them_in_the_readme(tmp_path):
    runs, curves = study(cost=False)
    plots.write_figures(runs, curves, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "| `elbo_vs_f_evals.png` | not drawn: no cost/f_evals logged" in readme
    assert "| `elbo_vs_seconds.png` | drawn |" in readme
    assert set(cp.KEYS) <= set(plots.CURVE_KEYS)
