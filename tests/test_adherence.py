"""Conditioning adherence (models.adherence) and sample grids (models.samples):
the classifier's disk cache is reused and invalidated when the data changes,
a label-blind decoder scores chance and a decoder that draws real images of
the requested class scores about the classifier's accuracy, and the PNG grids
have the pixel size their layout gives."""
import pytest
import torch
from PIL import Image
from torch import nn

import models
from models import adherence, samples
from models.tasks.images import image_task

FAST = adherence.ClassifierSettings(steps=150, hidden=64)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(adherence.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return models.tasks.load("digits", binarize="static")


@pytest.fixture(scope="module")
def clf(digits, tmp_path_factory):
    return adherence.load_classifier(digits, settings=FAST, folder=tmp_path_factory.mktemp("clf"))


def _task(pixels, labels, name="tiny"):
    n = len(labels)
    idx = torch.arange(n)
    splits = {"train": idx[: n // 2], "val": idx[n // 2:], "test": idx[n // 2:]}
    return image_task(name, pixels, labels, splits, (8, 8), "static", 0.5, "cpu", 0, n_classes=10)


def test_the_cache_is_reused_and_invalidated_when_the_data_changes(tmp_path):
    g = torch.Generator().manual_seed(0)
    pixels, labels = torch.rand(80, 64, generator=g), torch.arange(80) % 10
    settings = adherence.ClassifierSettings(steps=5, hidden=8)
    first = adherence.load_classifier(_task(pixels, labels), settings=settings)
    assert not first.from_cache and first.cache_path.is_file()
    assert first.cache_path.parent == tmp_path / "cache"          # $BENCH_CACHE_DIR
    again = adherence.load_classifier(_task(pixels, labels), settings=settings)
    assert again.from_cache and again.cache_path == first.cache_path
    assert again.accuracy == first.accuracy
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    changed = pixels.clone()
    changed[0, 0] = 1.0 - (changed[0, 0] > 0.5).float()            # one training pixel flips
    other = adherence.load_classifier(_task(changed, labels), settings=settings)
    assert not other.from_cache and other.cache_path != first.cache_path
    longer = adherence.load_classifier(_task(pixels, labels),
                                       settings=adherence.ClassifierSettings(steps=6, hidden=8))
    assert not longer.from_cache                                    # the settings are in the key too


def test_loading_the_classifier_leaves_the_global_rng_alone(digits):
    torch.manual_seed(3)
    want = torch.rand(3)
    torch.manual_seed(3)
    adherence.load_classifier(digits, settings=adherence.ClassifierSettings(steps=3, hidden=8))
    assert torch.equal(torch.rand(3), want)


class RealImages(nn.Module):
    """A hand-built 'decoder': for each requested class it returns a held-out
    image of that class (copy_class) or of a random class (label-blind)."""

    def __init__(self, task, copy_class: bool):
        super().__init__()
        self.task_spec = dict(task.spec)
        self.latent = models.latents.build("gaussian", D=1)
        self.real = task.split("test")
        self.copy_class = copy_class
        self.w = nn.Parameter(torch.zeros(()))

    def prior(self, batch):
        return torch.zeros(batch.size, 1, 2)

    def decode_mean(self, batch, z):
        # z ~ N(0, 1) picks the image, so draws are random but reproducible
        u = torch.special.ndtr(z[0, :, 0])
        if self.copy_class:
            pools = [torch.nonzero(self.real.c == k).squeeze(1) for k in range(10)]
            idx = torch.stack([pools[k][int(v * len(pools[k]))] for k, v in zip(batch.c.tolist(), u)])
        else:
            idx = (u * self.real.size).long()
        return self.real.x[idx].unsqueeze(0)


def test_a_label_blind_decoder_scores_chance(digits, clf):
    torch.manual_seed(0)
    acc = adherence.class_accuracy(RealImages(digits, copy_class=False), clf, n_per_class=60)
    assert abs(acc - 0.1) < 0.05
    # a real model that ignores the label: zero-initialised adaLN with a label-blind encoder
    torch.manual_seed(0)
    model = models.build(digits, "gaussian", "adaln", family="conv", width=8, encoder_conditioned=False)
    acc = adherence.class_accuracy(model, clf, n_per_class=20)
    assert abs(acc - 0.1) < 0.06


def test_a_decoder_that_copies_the_class_scores_the_classifier_accuracy(digits, clf):
    assert 0.7 < clf.accuracy <= 1.0
    torch.manual_seed(0)
    acc = adherence.class_accuracy(RealImages(digits, copy_class=True), clf, n_per_class=60)
    assert abs(acc - clf.accuracy) < 0.07


@pytest.mark.parametrize("H, family, conditioning", [(8, "conv", "spatial_concat"), (8, "mlp", "film"),
                                                     (28, "conv", "adaln")])
def test_the_grids_are_written_with_the_expected_pixel_size(tmp_path, digits, H, family, conditioning):
    if H == 8:
        task = digits
    else:
        g = torch.Generator().manual_seed(0)
        px, lab = torch.rand(40, H * H, generator=g), torch.arange(40) % 10
        i = torch.arange(40)
        task = image_task("synth28", px, lab, {"train": i[:20], "val": i[20:30], "test": i[30:]},
                          (H, H), "static", 0.5, "cpu", 0, n_classes=10)
    opts = dict(width=8) if family == "conv" else {}
    model = models.build(task, "categorical", conditioning, family=family, **opts)
    paths = samples.write_grids(model, task.split("val"), tmp_path, step=12, n=3)
    s = samples.cell_scale((H, H))
    assert s == {8: 4, 28: 1}[H]
    cell = H * s + samples.PAD
    size = lambda rows, cols: (cols * cell + samples.PAD, rows * cell + samples.PAD)   # noqa: E731  (W, H)
    want = {"step0000012_class_samples.png": size(10, 3), "step0000012_vary_class.png": size(3, 10),
            "step0000012_reconstructions.png": size(2, 3)}
    assert {p.name: Image.open(p).size for p in paths} == want
    img = Image.open(paths[2])
    assert img.mode == "L"


def test_vary_class_keeps_z_along_a_row(digits):
    """A label-blind decoder draws the same image across a row of the vary-class grid."""
    torch.manual_seed(0)
    model = models.build(digits, "gaussian", "adaln", family="conv", width=8)
    grid = samples.vary_class_grid(model, 4)                         # (4, 10, P)
    assert grid.shape == (4, 10, 64)
    assert torch.allclose(grid, grid[:, :1].expand_as(grid))
    assert not torch.allclose(grid[0], grid[1])


@pytest.mark.parametrize("overrides", [[], ["eval.samples=true", "conditioning=film"],
                                       ["eval.samples=true", "conditioning=spatial_concat",
                                        "model.family=conv", "+model.width=8", "latent.D=4"]])
def test_the_evaluator_logs_gen_metrics_only_when_asked(overrides):
    from bench.job.build import build
    from bench.job.evaluate import Evaluator
    from tests.compose import compose_config
    cfg = compose_config(["device=cpu", "eval.classifier_steps=20", "eval.samples_per_class=2",
                          "eval.batch_size=16", "eval.iwae_samples=2", *overrides])
    task, model, est = build(cfg, torch.device("cpu"))
    files = []
    ev = Evaluator(cfg, task, model, est, 0.0, "batch", artifact=lambda path, folder: files.append(folder))
    out = ev.metrics()
    if ev.samples:
        out.update(ev.generated(0))
    gen = sorted(k for k in out if k.startswith("gen/"))
    assert gen == ([] if not overrides else ["gen/class_accuracy", "gen/classifier_accuracy"])
    assert files == ([] if not overrides else ["samples"] * 3)
