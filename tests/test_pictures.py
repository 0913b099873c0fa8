"""The tutorial's pictures (models.pictures): every picture is written, at the
size its layout gives, for spatial_concat and adaln and for a Gaussian and a
categorical latent; the t-SNE runs on a handful of points; class blending is
exactly the pure class at both ends; interpolation starts and ends at the two
posterior means; the evaluator writes the pictures at the final evaluation only;
the conv family's `widths` option is validated and leaves the default network
unchanged."""
import pytest
import torch
from PIL import Image

import models
from models import pictures
from models.data import Batch
from models.tasks.images import image_task

SMALL = dict(width=4, d_cond=4, groups=2)


@pytest.fixture(scope="module")
def task():
    """28x28 grey levels, 10 named classes, 60 images: the shape of Fashion-MNIST, tiny."""
    g = torch.Generator().manual_seed(0)
    px, lab = torch.rand(60, 28 * 28, generator=g), torch.arange(60) % 10
    i = torch.arange(60)
    names = tuple(f"class {c}" for c in range(10))
    return image_task("synth28", px, lab, {"train": i[:30], "val": i[30:50], "test": i[50:]},
                      (28, 28), "none", None, "cpu", 0, n_classes=10, class_names=names)


def _model(task, latent, conditioning):
    torch.manual_seed(0)
    return models.build(task, latent, conditioning, family="conv", **SMALL)


def _px(figsize):
    return tuple(int(v * pictures.DPI + 1e-6) for v in figsize)    # matplotlib truncates the exact size


@pytest.mark.parametrize("latent, conditioning", [("gaussian", "spatial_concat"), ("gaussian", "adaln"),
                                                  ("categorical", "adaln")])
def test_every_picture_is_written_at_its_size(tmp_path, task, latent, conditioning):
    model = _model(task, latent, conditioning)
    n = 3
    paths = pictures.write_pictures(model, task.split("val"), task.split("train").index(torch.arange(12)),
                                    tmp_path, step=7, n=n)
    longest = max(len(name) for name in task.spec["class_names"])
    pairs = [f"{task.spec['class_names'][a]} -> {task.spec['class_names'][b]}" for a, b in pictures.BLEND_PAIRS]
    want = {"step0000007_named_class_samples.png": _px(pictures.grid_figsize(10, n, longest)),
            "step0000007_named_vary_class.png": _px(pictures.grid_figsize(10, n, longest)),
            "step0000007_interpolation.png": _px(pictures.grid_figsize(pictures.ROWS, pictures.STEPS, longest)),
            "step0000007_class_blend.png": _px(pictures.grid_figsize(len(pairs), pictures.STEPS,
                                                                     max(map(len, pairs)))),
            "step0000007_latent_tsne.png": _px(pictures.TSNE_FIGSIZE)}
    assert {p.name: Image.open(p).size for p in paths} == want
    assert model.training                               # left in its mode


def test_tsne_of_a_handful_of_points_is_seeded(task):
    model = _model(task, "gaussian", "adaln")
    batch = task.split("train").index(torch.arange(8))
    a = pictures.latent_tsne(model, batch, seed=3)
    assert a.shape == (8, 2) and (a == a).all()
    assert (pictures.latent_tsne(model, batch, seed=3) == a).all()


def _perturb(model):
    with torch.no_grad():                               # adaLN starts at zero: make the label matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("latent, conditioning", [("gaussian", "spatial_concat"), ("gaussian", "adaln"),
                                                  ("categorical", "spatial_concat")])
def test_blending_is_the_pure_class_at_both_ends(task, latent, conditioning):
    model = _model(task, latent, conditioning).eval()
    _perturb(model)
    pairs = [(7, 9), (0, 6)]
    grid, got = pictures.blend_grid(model, pairs, steps=5, generator=torch.Generator().manual_seed(1))
    assert got == pairs and grid.shape == (2, 5, 28 * 28)
    # the same z, drawn as blend_grid draws it, decoded with the plain labels
    probe = Batch(torch.zeros(2, 28 * 28), torch.tensor([7, 0]), None)
    z = model.latent.sample(model.prior(probe), 1, torch.Generator().manual_seed(1))
    for col, labels in ((0, [7, 0]), (-1, [9, 6])):
        pure = model.decode_mean(Batch(torch.zeros(2, 28 * 28), torch.tensor(labels), None), z)[0]
        assert torch.allclose(grid[:, col], pure, atol=1e-6)
    # the middle is neither class: the blend does something
    ends = torch.stack([grid[:, 0], grid[:, -1]])
    assert (grid[:, 2][None] - ends).abs().amax(-1).min() > 1e-4


def test_interpolation_runs_between_the_two_posterior_means(task):
    model = _model(task, "gaussian", "spatial_concat").eval()
    _perturb(model)
    batch = task.split("val")
    grid, classes = pictures.interpolation_grid(model, batch, steps=4, rows=2)
    assert classes == [0, 1] and grid.shape == (2, 4, 28 * 28)
    for r, c in enumerate(classes):
        two = batch.index((batch.c == c).nonzero()[:2, 0])
        mu = pictures.posterior_means(model, two)                        # (2, D)
        ends = model.decode_mean(two, mu[None])[0]                       # their own class, both
        assert torch.allclose(grid[r, 0], ends[0], atol=1e-6)
        assert torch.allclose(grid[r, -1], ends[1], atol=1e-6)


@pytest.mark.parametrize("bad", [[32, 64], [32, 64, 0], "32,64,128", [32, 64.0, 128]])
def test_widths_are_validated(task, bad):
    with pytest.raises(ValueError, match="widths="):
        models.build(task, "gaussian", "adaln", family="conv", widths=bad)


def test_default_widths_build_the_same_network(task):
    torch.manual_seed(0)
    a = models.build(task, "gaussian", "adaln", family="conv", width=4)
    torch.manual_seed(0)
    b = models.build(task, "gaussian", "adaln", family="conv", width=4, widths=[4, 8, 8])
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_evaluator_writes_the_pictures_at_the_final_evaluation_only():
    from bench.job.build import build
    from bench.job.evaluate import Evaluator
    from tests.compose import compose_config
    cfg = compose_config(["device=cpu", "eval.classifier_steps=20", "eval.samples_per_class=2",
                          "eval.batch_size=20", "eval.iwae_samples=2", "eval.samples=true",
                          "eval.tsne_points=12", "conditioning=adaln", "model.family=conv",
                          "+model.width=4", "latent.D=4"])
    task, model, est = build(cfg, torch.device("cpu"))
    names = []
    ev = Evaluator(cfg, task, model, est, 0.0, "batch", artifact=lambda path, folder: names.append(path.name))
    ev.generated(3)
    assert sorted(names) == ["step0000003_class_samples.png", "step0000003_reconstructions.png",
                             "step0000003_vary_class.png"]
    names.clear()
    ev.generated(5, final=True)
    assert len(names) == 8 and "step0000005_latent_tsne.png" in names and "step0000005_class_blend.png" in names


def test_tsne_points_is_not_part_of_a_runs_identity():
    """How many images the final t-SNE draws changes a picture, not what a run
    computes: config_hash is the same at any eval.tsne_points."""
    from omegaconf import OmegaConf
    from bench.tracking.identity import config_hash
    from tests.compose import compose_config
    hashes = {config_hash(OmegaConf.to_container(compose_config([f"eval.tsne_points={n}"])))
              for n in (12, 1000, 5000)}
    assert len(hashes) == 1
