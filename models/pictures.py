"""The class-conditional VAE tutorial's pictures of a trained image model, as
titled and labelled PNG files (matplotlib), beside the pixel grids of
models.samples:

    write_pictures(model, batch, tsne_batch, folder, step, n=8)
        -> [named_class_samples.png, named_vary_class.png, interpolation.png,
            class_blend.png (where the model can), latent_tsne.png]

- named class samples, named vary class   models.samples' grids (the tutorial's
                  "fix the class, vary z" and "fix z, vary the class") with the
                  class names beside the rows

- interpolation   rows = classes: two held-out images of that class are encoded
                  to their posterior means E_q[z] and the decoder reads
                  (1 - t) z_A + t z_B with the class fixed, t = 0 ... 1 along the row
                  (a categorical latent's mean is its probabilities: a soft code)
- class blend     rows = class pairs (a, b): one z from the prior per row, decoded
                  with the label embedding (1 - a) e_a + a e_b, a = 0 ... 1; the
                  ends are exactly the pure classes. Models that expose
                  `decode_embedded(z, emb)` and a decoder table `dec_label` only
                  (the conv family: spatial_concat and adaln read the same embedding)
- latent t-SNE    a 2-D t-SNE (scikit-learn, van der Maaten & Hinton 2008) of the
                  flattened posterior means of held-out images, coloured by class:
                  where the encoder is told the class, z need not carry it and
                  classes mix; clusters by class mean z still encodes the class.

Rows and columns are labelled with the task's class names (spec["class_names"]).
Axis legend: R rows, C columns, P pixels, D latent variables, K categories, E embedding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .data import Batch
from . import samples
from .samples import grid_image

# the tutorial's blended pairs (Fashion-MNIST: sneaker/ankle boot, sandal/sneaker,
# T-shirt/shirt, pullover/coat, trouser/dress); pairs beyond n_classes are dropped
BLEND_PAIRS = ((7, 9), (5, 7), (0, 6), (2, 4), (1, 3))
STEPS = 9                  # columns of an interpolation or blend: t = 0, 1/8, ..., 1
ROWS = 4                   # classes interpolated
DPI = 110
TSNE_FIGSIZE = (6.4, 4.6)  # inches
PNG_META = {"Software": None}


def class_names(model) -> list[str]:
    spec = model.task_spec
    return list(spec.get("class_names") or [str(i) for i in range(spec["n_classes"])])


def posterior_means(model, batch: Batch) -> Tensor:
    """E_q[z | x, y] (B, D) | (B, D, K): the Gaussian means or the categorical probabilities."""
    return model.latent.mean(model.posterior(batch))


@torch.no_grad()
def interpolation_grid(model, batch: Batch, steps: int = STEPS, rows: int = ROWS) -> tuple[Tensor, list[int]]:
    """(R, steps, P) and the R classes: per class, the first two images of `batch`
    of that class, their posterior means linearly interpolated, decoded with the class."""
    classes = [c for c in range(model.task_spec["n_classes"]) if int((batch.c == c).sum()) >= 2][:rows]
    if not classes:
        raise ValueError("interpolation needs two images of one class in the batch")
    idx = torch.cat([(batch.c == c).nonzero()[:2, 0] for c in classes])           # (2R,)
    mu = posterior_means(model, batch.index(idx))                                  # (2R, D[, K])
    a, b = mu[0::2], mu[1::2]                                                      # (R, D[, K]) each
    t = torch.linspace(0, 1, steps, dtype=mu.dtype, device=mu.device).view(1, steps, *[1] * (mu.dim() - 1))
    z = (1 - t) * a[:, None] + t * b[:, None]                                      # (R, steps, D[, K])
    z = z.reshape(1, len(classes) * steps, *mu.shape[1:])                          # (1, R*steps, ...)
    labels = torch.tensor(classes, device=batch.c.device).repeat_interleave(steps)
    probe = Batch(torch.zeros(len(labels), batch.x.shape[1], dtype=mu.dtype, device=mu.device), labels, None)
    return model.decode_mean(probe, z)[0].view(len(classes), steps, -1), classes


def can_blend(model) -> bool:
    return callable(getattr(model, "decode_embedded", None)) and getattr(model, "dec_label", None) is not None


@torch.no_grad()
def blend_grid(model, pairs: Optional[Sequence[tuple[int, int]]] = None, steps: int = STEPS,
               generator: Optional[torch.Generator] = None) -> tuple[Tensor, list[tuple[int, int]]]:
    """(R, steps, P) mean images and the R pairs: row (a, b) decodes one prior z
    with (1 - alpha) e_a + alpha e_b, alpha = 0 ... 1 (exactly e_a and e_b at the ends)."""
    n = model.task_spec["n_classes"]
    pairs = [p for p in (pairs or BLEND_PAIRS) if max(p) < n] or [(0, 1)]
    table = model.dec_label.weight                                                 # (n, E)
    a = table[[p[0] for p in pairs]]                                               # (R, E)
    b = table[[p[1] for p in pairs]]
    alpha = torch.linspace(0, 1, steps, dtype=table.dtype, device=table.device)[None, :, None]
    emb = ((1 - alpha) * a[:, None] + alpha * b[:, None]).reshape(len(pairs) * steps, -1)   # (R*steps, E)
    labels = torch.tensor([p[0] for p in pairs], device=table.device).repeat_interleave(steps)
    probe = Batch(torch.zeros(len(labels), model.task_spec["n_pixels"], dtype=table.dtype,
                              device=table.device), labels, None)
    z = model.latent.sample(model.prior(probe.index(torch.arange(0, len(labels), steps,
                                                                 device=table.device))), 1, generator)
    z = z.repeat_interleave(steps, 1)                                              # (1, R*steps, ...)
    images = torch.sigmoid(model.decode_embedded(z, emb))[0]                       # (R*steps, P)
    return images.view(len(pairs), steps, -1), pairs


@torch.no_grad()
def latent_tsne(model, batch: Batch, seed: int = 0) -> np.ndarray:
    """(B, 2) t-SNE coordinates of the flattened posterior means of `batch`."""
    from sklearn.manifold import TSNE
    mu = posterior_means(model, batch).flatten(1).double().cpu().numpy()          # (B, D | D*K)
    perplexity = min(30.0, (len(mu) - 1) / 3)    # scikit-learn needs perplexity < n
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(mu)


def grid_figsize(R: int, C: int, longest: int) -> tuple[float, float]:
    """Inches of a labelled grid of R x C cells whose longest row name has `longest` characters."""
    return (1.2 + 0.55 * C + 0.08 * longest, 0.9 + 0.55 * R)


def save_labelled_grid(path: Path, images: Tensor, shape: tuple[int, int], title: str,
                       rows: Sequence[str], cols: Sequence[str], xlabel: str) -> Path:
    """images (R, C, P) as one picture with a title, a name per row and per column."""
    from bench.results.plots import plt
    H, W = shape
    img = grid_image(images, shape, scale=1)
    R, C = images.shape[:2]
    fig, ax = plt.subplots(figsize=grid_figsize(R, C, max(map(len, rows))), dpi=DPI)
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([1 + c * (W + 1) + W / 2 for c in range(C)], list(cols), fontsize=7)
    ax.set_yticks([1 + r * (H + 1) + H / 2 for r in range(R)], list(rows), fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata=PNG_META)
    plt.close(fig)
    return path


def save_tsne(path: Path, coords: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str) -> Path:
    from bench.results.plots import plt
    fig, ax = plt.subplots(figsize=TSNE_FIGSIZE, dpi=DPI)
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for c, name in enumerate(names):
        m = labels == c
        ax.scatter(coords[m, 0], coords[m, 1], s=4, alpha=0.7, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata=PNG_META)
    plt.close(fig)
    return path


def write_pictures(model, batch: Batch, tsne_batch: Batch, folder: Path, step: int, n: int = 8,
                   generator: Optional[torch.Generator] = None, seed: int = 0) -> list[Path]:
    """The tutorial's pictures of `model` at `step` as PNG files in `folder`; model left in its mode."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = tuple(model.task_spec["shape"])
    names = class_names(model)
    ts = [f"{t:.2f}" for t in np.linspace(0, 1, STEPS)]
    was = model.training
    model.eval()
    out = []
    try:
        K = model.task_spec["n_classes"]
        out.append(save_labelled_grid(
            folder / f"step{step:07d}_named_class_samples.png", samples.class_grid(model, n, generator),
            shape, "Samples per class (fix the class, vary z): z ~ p(z | class), mean images",
            names, [str(i + 1) for i in range(n)], "independent draws of z"))
        out.append(save_labelled_grid(
            folder / f"step{step:07d}_named_vary_class.png",
            samples.vary_class_grid(model, n, generator).transpose(0, 1), shape,
            "Fix z, vary the class: each column decodes one z with every class",
            names, [f"z{i + 1}" for i in range(n)], "one latent z per column (what z controls: read down a column)"))
        grid, classes = interpolation_grid(model, batch)
        out.append(save_labelled_grid(
            folder / f"step{step:07d}_interpolation.png", grid, shape,
            "Interpolation within a class: two held-out images (left, right ends encoded to\n"
            "their posterior means) and the decoded straight line between them, class fixed",
            [names[c] for c in classes], ts, "t  (z = (1 - t) z_A + t z_B)"))
        if can_blend(model):
            grid, pairs = blend_grid(model, generator=generator)
            out.append(save_labelled_grid(
                folder / f"step{step:07d}_class_blend.png", grid, shape,
                "Class blending: one z per row, decoded with the label embedding\n"
                "(1 - alpha) e_A + alpha e_B (alpha = 0: class A, 1: class B)",
                [f"{names[a]} -> {names[b]}" for a, b in pairs], ts, "alpha"))
        coords = latent_tsne(model, tsne_batch, seed)
        out.append(save_tsne(folder / f"step{step:07d}_latent_tsne.png", coords,
                             tsne_batch.c.cpu().numpy(), names,
                             f"t-SNE of the posterior means E[z | x, class] of {tsne_batch.size} "
                             f"held-out images, coloured by class\n(classes mixed: z carries style, "
                             f"not class; clusters: z still encodes the class)"))
    finally:
        model.train(was)
    return out
