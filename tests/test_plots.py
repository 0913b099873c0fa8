"""The figures of `bench.tables`, rendered from small synthetic studies:
written where the study fills them, skipped with a reason where it does
not, one colour per estimator variant everywhere, bands only where there
are several runs."""
from __future__ import annotations

import itertools

import matplotlib.image as mpimg
import pandas as pd
import pytest

from bench.results import grids, plots


def study(estimators=("gumbel", "reinforce"), seeds=(0, 1), free_bits=(0.0, 0.5),
          conditionings=("concat", "film")):
    runs, curves = [], []
    for i, (est, seed, fb, cond) in enumerate(itertools.product(estimators, seeds, free_bits,
                                                                conditionings)):
        rid = f"r{i}"
        runs.append({"run_id": rid, "estimator": est, "task": "digits", "conditioning": cond,
                     "free_bits": str(fb), "seed": str(seed), "val/elbo": -20.0 - i * 0.1,
                     "collapse/active_units": 3.0 + fb, "collapse/mutual_info": 0.5 + fb})
        for step in (0, 50, 100):
            curves.append({"run_id": rid, "key": "val/elbo", "step": step, "value": -46.0 + step / 5})
            curves.append({"run_id": rid, "key": "grad/log10_var", "step": step, "value": 1.0 - step / 100})
            curves.append({"run_id": rid, "key": "perf/wall_seconds", "step": step,
                           "value": 0.5 + step / 40})
            curves.append({"run_id": rid, "key": "perf/eval_seconds", "step": step, "value": 0.5})
            if step:   # step 0 logs no cost: there is no interval yet
                curves.append({"run_id": rid, "key": "cost/f_evals", "step": step,
                               "value": float(step * (4 if est == "reinforce" else 1))})
    return pd.DataFrame(runs), pd.DataFrame(curves)


SAMPLE_GRIDS = grids.FIGURES      # run artifacts (bench.results.grids)


def test_every_figure_is_written_when_the_study_fills_it(tmp_path):
    runs, curves = study()
    written = plots.write_figures(runs, curves, tmp_path)
    # the sample grids are run artifacts: without a client they are skipped (test_plots_grids)
    drawn = [n for n in plots.FIGURES if n not in SAMPLE_GRIDS]
    assert sorted(p.name for p in written) == sorted([f"{n}.png" for n in drawn] + ["README.md"])
    for name in drawn:
        img = mpimg.imread(tmp_path / f"{name}.png")
        assert img.shape[0] > 200 and img.shape[1] > 300      # readable, not a thumbnail
    readme = (tmp_path / "README.md").read_text()
    assert all("not drawn" not in line for line in readme.splitlines()
               if not any(g in line for g in SAMPLE_GRIDS))


def test_degenerate_studies_skip_with_a_reason(tmp_path):
    runs, curves = study(estimators=("gumbel",), seeds=(0,), free_bits=(0.0,), conditionings=("concat",))
    written = {p.name for p in plots.write_figures(runs, curves, tmp_path)}
    assert written == {"elbo_curves.png", "grad_log10_var.png", "elbo_vs_f_evals.png",
                       "elbo_vs_seconds.png", "README.md"}
    readme = (tmp_path / "README.md").read_text()
    assert "`collapse_free_bits.png` | not drawn: one free-bits value (0)" in readme
    assert "`heatmap_val_elbo.png` | not drawn: one estimator and one conditioning" in readme


def test_stale_figures_are_removed(tmp_path):
    runs, curves = study()
    plots.write_figures(runs, curves, tmp_path)
    runs, curves = study(free_bits=(0.0,))
    plots.write_figures(runs, curves, tmp_path)
    assert not (tmp_path / "collapse_free_bits.png").exists()


def test_one_colour_per_variant_fixed_by_name():
    runs, _ = study(estimators=("vimco", "gumbel", "reinforce"))
    colours = plots.palette(runs)
    assert list(colours) == ["gumbel", "reinforce", "vimco"]
    assert len(set(colours.values())) == 3
    # a sub-selection keeps each name's colour only if the same names are present:
    # figures of one study share the palette made once from all its runs
    assert plots.palette(runs) == colours



@pytest.mark.parametrize("seeds, words", [((0, 1), "mean ± 1 s.e. over seeds (n = 2 per line)"),
                                          ((0,), "one seed per line: no band")])
def test_the_title_says_whether_there_is_a_band(tmp_path, figures, seeds, words):
    runs, curves = study(seeds=seeds, free_bits=(0.0,), conditionings=("concat",))
    plots.write_figures(runs, curves, tmp_path)
    assert words in " ".join(figures["elbo_curves.png"].get_suptitle().split())


def test_curves_start_after_step_zero(tmp_path, figures):
    runs, curves = study()
    plots.write_figures(runs, curves, tmp_path)
    for name in ("elbo_curves.png", "grad_log10_var.png"):
        lines = figures[name].axes[0].lines
        # estimator x free bits x conditioning, the seeds of each averaged
        assert len(lines) == 8
        assert {tuple(line.get_xdata()) for line in lines} == {(50, 100)}
