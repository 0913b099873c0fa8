"""Sample grids side by side (bench.results.grids), from a real sqlite MLflow
store whose runs carry PNG grids made with Pillow: each run's last grid of a
kind in one panel, the pixels kept (the figure's size follows from the grids'),
and a reason wherever a figure is not drawn."""
from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from bench.results import grids, plots, tables
from bench.results.store import load_study
from tests.stores import empty_db

H, W = 41, 51   # a grid of cells; small, so the module magnifies it


def grid_png(path, level: int, shape=(H, W)):
    Image.fromarray(np.full(shape, level, dtype=np.uint8), mode="L").save(path)
    return path


def make_store(tmp_path, runs=(("gumbel", "concat", 0), ("reinforce", "film", 1)),
               kinds=("class_samples", "vary_class"), with_grids=True, samples=True):
    """A store with one job run per (estimator, conditioning, seed); each logs
    grids at step 0 (black) and step 100 (white) as an image run with
    eval.samples=true does."""
    client = MlflowClient(empty_db(tmp_path / "store"))
    exp = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    src = tmp_path / "src"
    src.mkdir()
    for est, cond, seed, *task in runs:        # (estimator, conditioning, seed[, task])
        tags = {"estimator": est, "conditioning": cond, "task": (task or ["digits"])[0], "seed": str(seed),
                "latent": "categorical", "kl": "constant", "free_bits": "0.0",
                "free_bits_mode": "batch"}
        rid = client.create_run(exp, tags=tags).info.run_id
        client.log_metric(rid, "val/elbo", -22.0, step=100)
        if samples:
            client.log_metric(rid, "gen/class_accuracy", 0.9, step=100)
        if with_grids:
            for step, level in ((0, 0), (100, 255)):
                for kind in kinds:
                    folder = src / rid
                    folder.mkdir(exist_ok=True)
                    client.log_artifact(rid, str(grid_png(folder / f"step{step:07d}_{kind}.png",
                                                          level)), "samples")
        client.set_terminated(rid)
    study = load_study(client, "e")
    return client, tables.add_variants(study.jobs)


def test_one_panel_per_run_at_its_last_step_with_the_pixels_kept(tmp_path):
    client, runs = make_store(tmp_path)
    out = tmp_path / "fig"
    out.mkdir()
    made = grids.write_grid_figures(client, runs, out)
    mag = grids.magnification(W)
    assert mag == 4                                   # ceil(240 / 51) = 5, at most 4
    cell = (H * mag, W * mag)
    for name in ("samples_class", "samples_vary_class"):
        path, status = made[name]
        assert path == out / f"{name}.png" and status == "drawn: 2 run(s)"
        img = np.asarray(Image.open(path).convert("L"))
        # two panels side by side: HEADER + LABEL + cell + GAP high; the header's minimum width
        assert img.shape == (grids.HEADER_PX + grids.LABEL_PX + cell[0] + grids.GAP,
                             max(grids.MIN_WIDTH, 2 * cell[1] + 3 * grids.GAP))
        assert img.shape == grids.canvas_size(2, cell)
        # the step-100 grids (white) are shown, not the step-0 ones (black): a panel's
        # centre, on a canvas whose panels are centred
        left = (img.shape[1] - (2 * cell[1] + 3 * grids.GAP)) // 2
        y = grids.HEADER_PX + grids.LABEL_PX + cell[0] // 2
        for col in range(2):
            x = left + grids.GAP + col * (cell[1] + grids.GAP) + cell[1] // 2
            assert img[y, x] == 255
    assert made["samples_reconstructions"] == (None, "no run logged a reconstructions grid")


def test_panels_are_labelled_by_variant_conditioning_and_seed(tmp_path, monkeypatch):
    client, runs = make_store(tmp_path)
    texts = []
    real = grids.plt.Figure.text

    def spy(fig, x, y, s, *a, **kw):
        texts.append(s)
        return real(fig, x, y, s, *a, **kw)
    monkeypatch.setattr(grids.plt.Figure, "text", spy)
    grids.write_grid_figures(client, runs, tmp_path)
    assert "gumbel\nconcat · seed 0 · step 100" in texts
    assert "reinforce\nfilm · seed 1 · step 100" in texts


def test_a_long_variant_wraps_at_its_commas_to_the_panel():
    run = {"variant": "reinforce(baseline=ema,n_samples=4)", "conditioning": "film",
           "task": "digits", "seed": "0"}
    label = grids._label(run, "variant", step=300, width=160)
    assert label == "reinforce(baseline=ema,\nn_samples=4)\nfilm · seed 0 · step 300"
    assert max(len(line) for line in label.splitlines()) * grids.CHAR_PX <= 160


def test_runs_of_several_tasks_get_one_figure_per_task(tmp_path):
    client, runs = make_store(tmp_path, runs=(("gumbel", "concat", 0, "digits"),
                                              ("gumbel", "concat", 0, "mnist5k"),
                                              ("reinforce", "film", 0, "mnist5k")))
    out = tmp_path / "fig"
    out.mkdir()
    made = grids.write_grid_figures(client, runs, out, max_runs=2)
    assert "samples_class" not in made
    assert made["samples_class_digits"] == (out / "samples_class_digits.png", "drawn: 1 run(s)")
    assert made["samples_class_mnist5k"] == (out / "samples_class_mnist5k.png", "drawn: 2 run(s)")
    mag = grids.magnification(W)
    one, two = (np.asarray(Image.open(out / f"samples_class_{t}.png").convert("L")).shape
                for t in ("digits", "mnist5k"))
    assert one == grids.canvas_size(1, (H * mag, W * mag)) and two == grids.canvas_size(2, (H * mag, W * mag))
    assert made["samples_reconstructions_mnist5k"] == (None, "no run logged a reconstructions grid")


def test_more_runs_than_panels_names_those_left_out(tmp_path):
    client, runs = make_store(tmp_path, runs=(("gumbel", "concat", 0), ("gumbel", "concat", 1),
                                              ("reinforce", "concat", 0)))
    path, status = grids.write_grid_figures(client, runs, tmp_path, max_runs=2)["samples_class"]
    # every setting at its first seed before a second seed of any
    assert path is not None and status == ("drawn: 2 run(s); left out (at most 2 panels): "
                                           "gumbel · concat · seed 1")


def test_write_figures_draws_them_with_a_client_and_skips_them_without(tmp_path):
    client, runs = make_store(tmp_path)
    written = {p.name for p in plots.write_figures(runs, _curves(runs), tmp_path / "a",
                                                   client=client)}
    assert {"samples_class.png", "samples_vary_class.png"} <= written
    plots.write_figures(runs, _curves(runs), tmp_path / "b")
    readme = (tmp_path / "b" / "README.md").read_text()
    assert ("| `samples_class.png` | not drawn: no MLflow client given to write_figures"
            in readme)


@pytest.mark.parametrize("kw, words", [
    (dict(samples=False, with_grids=False), "no run with eval.samples=true"),
    (dict(with_grids=False), "the 2 run(s) with gen/class_accuracy logged no grids"),
])
def test_studies_without_grids_are_skipped_with_a_reason(tmp_path, kw, words):
    client, runs = make_store(tmp_path, **kw)
    made = grids.write_grid_figures(client, runs, tmp_path)
    assert set(made) == set(grids.FIGURES)
    for path, why in made.values():
        assert path is None and why.startswith(words)


def _curves(runs):
    import pandas as pd
    return pd.DataFrame([{"run_id": r, "key": "val/elbo", "step": s, "value": -30.0 + s / 10}
                         for r in runs["run_id"] for s in (0, 50, 100)])


def test_the_header_lines_fit_the_canvas(tmp_path, figures):
    """How to read a panel is wrapped, not clipped at the canvas's edges, even
    on the narrowest canvas (two small panels)."""
    client, runs = make_store(tmp_path)
    out = tmp_path / "fig"
    out.mkdir()
    grids.write_grid_figures(client, runs, out)
    fig = figures["samples_vary_class.png"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()           # a saved figure is closed
    width = fig.get_figwidth() * fig.dpi
    header = [t for t in fig.texts if "decoded with that z" in t.get_text()
              or "read along a row" in t.get_text()]
    assert len(header) == 2 and header[-1].get_text().endswith("along a row)")   # whole
    for t in fig.texts:
        box = t.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width, t.get_text()


def test_a_colour_picture_keeps_its_colours(tmp_path):
    """The final evaluation's t-SNE (models.pictures) is an RGB PNG: its panel is drawn in colour."""
    client, runs = make_store(tmp_path, kinds=("latent_tsne",))
    rid = runs["run_id"].iloc[0]
    red = tmp_path / "red" / "step0000200_latent_tsne.png"
    red.parent.mkdir()
    Image.fromarray(np.tile(np.array([200, 30, 40], dtype=np.uint8), (H, W, 1)), mode="RGB").save(red)
    client.log_artifact(rid, str(red), "samples")
    out = tmp_path / "fig"
    out.mkdir()
    path, status = grids.write_grid_figures(client, runs, out)["latent_tsne"]
    img = np.asarray(Image.open(path).convert("RGB"))
    cell = (H * grids.magnification(W), W * grids.magnification(W))
    left = (img.shape[1] - (2 * cell[1] + 3 * grids.GAP)) // 2
    y = grids.HEADER_PX + grids.LABEL_PX + cell[0] // 2
    panels = {tuple(img[y, left + grids.GAP + col * (cell[1] + grids.GAP) + cell[1] // 2]) for col in range(2)}
    assert (200, 30, 40) in panels and (255, 255, 255) in panels     # the red step-200 one, the other white
