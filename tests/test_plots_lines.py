"""Lines of the figures split by every setting the tables group by, spread over
seeds alone (bench.results.lines), from synthetic MLflow stores read by
`bench.tables`: one line per setting, a band only where a line has two seeds,
and a study of one evaluation per run skipped with the reason."""
from __future__ import annotations

import itertools

import pytest
from matplotlib.collections import PolyCollection

from bench.results import tables
from bench.results.store import load_study
from tests.test_tables_store import EXP, fresh_store, job, make_sweep



def sweep(tmp_path, settings: list[dict], seeds=(0,), steps=(0, 50, 100)):
    """bench.tables' output folder for a sweep: one run per setting and seed,
    val/elbo and grad/log10_var at `steps`, apart by setting and seed."""
    client, _, exp = fresh_store(tmp_path / "store")
    jobs = []
    for i, (setting, seed) in enumerate(itertools.product(settings, seeds)):
        j = job(setting.get("estimator", "gumbel"), setting.get("conditioning", "concat"), seed,
                val__elbo=-20.0 - i, collapse__active_units=3.0 + i, collapse__mutual_info=0.5)
        j["tags"].update({k: v for k, v in setting.items() if k not in ("estimator",)})
        j["tags"]["config_hash"] = f"h{i}"
        j["curves"] = {"val/elbo": [(s, -40.0 + s / 10 + i + seed) for s in steps],
                       "grad/log10_var": [(s, 1.0 - s / 100 + seed) for s in steps]}
        jobs.append(j)
    make_sweep(client, exp, "s", jobs)
    out = tmp_path / "out"
    tables.write_results(client, load_study(client, EXP), out)
    return out / "figures"


def lines_of(fig):
    ax = [a for a in fig.axes if a.axison]
    return ax, [line for a in ax for line in a.lines]


CONDITIONINGS = [{"estimator": e, "conditioning": c}
                 for e in ("gumbel", "reinforce") for c in ("add", "concat", "film")]


def test_a_conditioning_sweep_of_one_seed_draws_a_line_per_setting_without_bands(
        tmp_path, figures):
    sweep(tmp_path, CONDITIONINGS)
    for name in ("elbo_curves.png", "grad_log10_var.png"):
        fig = figures[name]
        axes, lines = lines_of(fig)
        assert len(axes) == 1 and len(lines) == 6
        assert not [c for c in axes[0].collections if isinstance(c, PolyCollection)]
        assert [t.get_text() for t in fig.legends[0].get_texts()] == [
            f"{e} · {c}" for e in ("gumbel", "reinforce") for c in ("add", "concat", "film")]
        assert fig.legends[0].get_title().get_text() == "estimator variant · conditioning"
        assert "one seed per line: no band" in " ".join(fig.get_suptitle().split())
        assert all(list(line.get_xdata()) == [50, 100] for line in lines)   # after step 0
    # one colour per estimator, one dash pattern per conditioning
    colours = {line.get_label(): line.get_color() for line in lines}
    assert colours["gumbel · add"] == colours["gumbel · film"] != colours["reinforce · add"]
    styles = {line.get_label(): line.get_linestyle() for line in lines}
    assert styles["gumbel · add"] == styles["reinforce · add"] != styles["gumbel · film"]
    # the heatmap's rows are the estimators, its columns the conditioning types
    heat = figures["heatmap_val_elbo.png"].axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["gumbel", "reinforce"]


def test_two_seeds_per_setting_draw_a_band_per_line(tmp_path, figures):
    sweep(tmp_path, CONDITIONINGS[:2], seeds=(0, 1))
    fig = figures["elbo_curves.png"]
    axes, lines = lines_of(fig)
    assert len(lines) == 2
    assert len([c for c in axes[0].collections if isinstance(c, PolyCollection)]) == 2
    assert "mean ± 1 s.e. over seeds (n = 2 per line)" in " ".join(fig.get_suptitle().split())
    # at step 50, the mean of gumbel · add's two seeds, -35 and -33 (the final
    # val/elbo is logged at step 100 over the curve's point)
    assert lines[0].get_label() == "gumbel · add"
    assert lines[0].get_ydata()[0] == pytest.approx(-34.0)


def test_one_evaluation_per_run_draws_no_curve_and_says_why(tmp_path, figures):
    settings = [{"kl": kl, "free_bits": fb} for kl in ("constant", "linear") for fb in (0, 0.5)]
    folder = sweep(tmp_path, settings, steps=(0, 100))
    readme = (folder / "README.md").read_text()
    for name in ("elbo_curves", "grad_log10_var"):
        assert not (folder / f"{name}.png").exists()
        assert (f"| `{name}.png` | not drawn: no line has two points (evaluations) after step 0 "
                f"(4 line(s) with one)" in readme)
    # the free-bits figure keeps the KL schedules apart: one line per schedule
    fig = figures["collapse_free_bits.png"]
    axes, lines = lines_of(fig)
    assert len(axes) == 2 and len(lines) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "gumbel · kl=constant", "gumbel · kl=linear"]
    assert not [c for a in axes for c in a.collections if isinstance(c, PolyCollection)]


def test_conditioning_panels_keep_the_other_settings_apart(tmp_path, figures):
    settings = [{"conditioning": c, "kl": kl} for c in ("concat", "film")
                for kl in ("constant", "linear")]
    sweep(tmp_path, settings, seeds=(0, 1))
    # curves of f-evaluations and seconds need the cost metrics; here the step curves:
    # one panel, a line per conditioning and KL schedule
    fig = figures["elbo_curves.png"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "gumbel · concat · kl=constant", "gumbel · concat · kl=linear",
        "gumbel · film · kl=constant", "gumbel · film · kl=linear"]
    heat = figures["heatmap_val_elbo.png"].axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == [
        "gumbel · kl=constant", "gumbel · kl=linear"]


def _extent(artist, fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    return artist.get_window_extent(canvas.get_renderer())   # a saved figure is closed


def test_axis_labels_stay_clear_of_the_title_and_of_the_next_panel(tmp_path, figures):
    """The long y-label of grad_log10_var is wrapped below the title; each
    panel of collapse_free_bits names its metric and has its label beside
    its own axis, clear of the panel to its left."""
    from bench.results.lines import Y_LABEL_CHARS
    sweep(tmp_path / "a", CONDITIONINGS[:2], seeds=(0, 1))
    fig = figures["grad_log10_var.png"]
    (ax,), _ = lines_of(fig)
    label = ax.yaxis.label
    assert all(len(line) <= Y_LABEL_CHARS for line in label.get_text().splitlines())
    assert _extent(label, fig).y1 < _extent(fig._suptitle, fig).y0
    assert len(fig.get_suptitle().splitlines()) == 3     # title, subtitle, band: a line each
    settings = [{"estimator": "gumbel", "free_bits": b, "kl": "constant",
                 "free_bits_mode": "batch"} for b in ("0.0", "0.5", "1.0")]
    sweep(tmp_path / "b", settings, seeds=(0, 1))
    fig = figures["collapse_free_bits.png"]
    (left, right), _ = lines_of(fig)
    assert left.get_title() == "digits · active units" and "active units" in left.get_ylabel()
    assert right.get_title() == "digits · mutual info"
    assert "mutual information" in right.get_ylabel()
    assert _extent(right.yaxis.label, fig).x0 > _extent(left, fig).x1
