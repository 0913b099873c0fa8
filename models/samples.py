"""Image grids of a conditional image model, as PNG files (Pillow).

    write_grids(model, val_batch, folder, step, n=8)   # -> [class_samples.png, vary_class.png, recon.png]

- class samples   rows = classes, n columns: mean images E[x | z, y] with z ~ p(z | y)
- vary class      rows = n latents, columns = classes: each row keeps one z (drawn
                  from the prior of class row mod n_classes) and changes only y,
                  so what the label controls is read along a row
- reconstructions two rows: n validation inputs above the mean images of
                  z ~ q(z | x, y) decoded with their own labels

Pixels are grey levels in [0, 1], white = 1; cells are separated by a pad of
grey 0.5 and scaled up by an integer factor so 8x8 digits stay visible
(`cell_scale`). A grid of R x C cells of H x W pixels is
(R * (H*s + pad) + pad) x (C * (W*s + pad) + pad) pixels.

Axis legend: R rows, C columns, P pixels, H, W image size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .adherence import prior_samples
from .data import Batch

PAD = 1


def cell_scale(shape: tuple[int, int], target: int = 28) -> int:
    """The integer factor that brings a cell to about `target` pixels (8x8 -> 3, 28x28 -> 1)."""
    return max(1, round(target / max(shape)))


def grid_image(images: Tensor, shape: tuple[int, int], scale: int = 1, pad: int = PAD) -> np.ndarray:
    """images (R, C, P) in [0, 1] -> uint8 array (R*(H*s+pad)+pad, C*(W*s+pad)+pad)."""
    R, C = images.shape[:2]
    H, W = shape
    cells = images.detach().float().cpu().clamp(0, 1).reshape(R, C, H, W)
    cells = cells.repeat_interleave(scale, 2).repeat_interleave(scale, 3)    # (R, C, Hs, Ws)
    hs, ws = H * scale + pad, W * scale + pad
    out = np.full((R * hs + pad, C * ws + pad), 0.5, dtype=np.float32)
    for r in range(R):
        for c in range(C):
            out[pad + r * hs: (r + 1) * hs, pad + c * ws: (c + 1) * ws] = cells[r, c].numpy()
    return (out * 255).round().astype(np.uint8)


def save_grid(path: Path, images: Tensor, shape: tuple[int, int], scale: Optional[int] = None) -> Path:
    from PIL import Image
    scale = cell_scale(shape) if scale is None else scale
    Image.fromarray(grid_image(images, shape, scale), mode="L").save(path)
    return path


@torch.no_grad()
def class_grid(model, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """(n_classes, n, P): n samples per class."""
    K = model.task_spec["n_classes"]
    device = next(model.parameters()).device
    labels = torch.arange(K, device=device).repeat_interleave(n)
    return prior_samples(model, labels, generator).view(K, n, -1)


@torch.no_grad()
def vary_class_grid(model, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """(n, n_classes, P): row i keeps one z and runs through every class."""
    K = model.task_spec["n_classes"]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    rows = torch.arange(n, device=device) % K
    probe = Batch(torch.zeros(n, model.task_spec["n_pixels"], dtype=dtype, device=device), rows, None)
    z = model.latent.sample(model.prior(probe), 1, generator)                  # (1, n, ...)
    z = z.repeat_interleave(K, 1)                                             # (1, n*K, ...)
    labels = torch.arange(K, device=device).repeat(n)                         # (n*K,)
    return prior_samples(model, labels, z=z).view(n, K, -1)


@torch.no_grad()
def reconstruction_grid(model, batch: Batch, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """(2, n, P): inputs above their reconstructions."""
    first = batch.index(torch.arange(min(n, batch.size), device=batch.c.device))
    z = model.latent.sample(model.posterior(first), 1, generator)             # (1, n, ...)
    recon = model.decode_mean(first, z)[0]
    return torch.stack([first.x.to(recon.dtype), recon])


def write_grids(model, batch: Batch, folder: Path, step: int, n: int = 8,
                generator: Optional[torch.Generator] = None) -> list[Path]:
    """The three grids of `model` at `step` as PNG files in `folder`; model left in its mode."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = tuple(model.task_spec["shape"])
    was = model.training
    model.eval()
    try:
        grids = {"class_samples": class_grid(model, n, generator),
                 "vary_class": vary_class_grid(model, n, generator),
                 "reconstructions": reconstruction_grid(model, batch, n, generator)}
    finally:
        model.train(was)
    return [save_grid(folder / f"step{step:07d}_{name}.png", g, shape) for name, g in grids.items()]
