"""Image tasks: `digits` (embedded), `mnist`, `fashion_mnist` (IDX files; Fashion-MNIST
found where Debian's `dataset-fashion-mnist` puts it unless `data_dir` says otherwise).

Batch: x (B, P) float pixels in {0, 1} (binarised) or [0, 1] (binarize=none);
c (B,) long class label; truth None.
spec:  n_pixels P, shape (H, W), n_classes, class_names (figure labels; indices where unnamed).

Binarisation (grey levels scaled to [0, 1] first):
  static  + threshold t   x = 1[p > t]                       (deterministic)
  static  + threshold None one Bernoulli(p) draw, made once with the seed
  dynamic                 a fresh Bernoulli(p) draw per minibatch (Salakhutdinov &
                          Murray 2008 style stochastic binarisation as augmentation);
                          `split()` returns one seeded draw so evaluation is fixed
  none                    the grey levels themselves, for a Gaussian likelihood
                          (`model.family=conv model.likelihood=gaussian`); under
                          a Bernoulli likelihood the "log-likelihood" of grey
                          levels is a cross-entropy, not a bound on anything
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..data import Batch
from ..registry import check_choice, check_range
from .base import Task, register, split_indices
from .idx import read_idx

BINARIZE = ("static", "dynamic", "none")

# where a data set's IDX files are when the user names no folder: Debian's
# `dataset-fashion-mnist` package installs Fashion-MNIST there (nothing ships
# full MNIST, so `mnist` keeps a project-relative default)
DEFAULT_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "data/mnist"}
INSTALL = {"fashion_mnist": "apt-get install dataset-fashion-mnist"}
# label names for figures (spec["class_names"]); a task without them is labelled by index
CLASS_NAMES = {"fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")}

# the standard file names; each may also be present gzipped (name + ".gz")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def check_binarize(binarize: str, threshold: Optional[float]) -> None:
    check_choice("binarize", binarize, BINARIZE)
    if threshold is not None:
        check_range("threshold", threshold, 0.0, 1.0)


def _bernoulli(batch: Batch, generator: Optional[torch.Generator]) -> Batch:
    u = torch.rand(batch.x.shape, generator=generator, device=batch.x.device, dtype=batch.x.dtype)
    return Batch((u < batch.x).to(batch.x.dtype), batch.c, batch.truth)


def image_task(name: str, pixels: Tensor, labels: Tensor, splits: dict[str, Tensor], shape: tuple,
               binarize: str, threshold: Optional[float], device, seed: int, n_classes: int,
               class_names: Optional[tuple] = None) -> Task:
    """Assemble a Task from grey levels (N, P) in [0, 1] and labels (N,), split by index."""
    check_binarize(binarize, threshold)
    transform = None
    if binarize == "static" and threshold is not None:
        pixels = (pixels > threshold).float()
    elif binarize == "static":
        g = torch.Generator().manual_seed(seed)
        pixels = (torch.rand(pixels.shape, generator=g) < pixels).float()
    elif binarize == "dynamic":
        transform = _bernoulli
    data = {k: Batch(pixels[idx], labels[idx], None) for k, idx in splits.items()}
    spec = {"n_pixels": pixels.shape[1], "shape": tuple(shape),
            "n_classes": n_classes, "binarize": binarize,
            "class_names": tuple(class_names or (str(i) for i in range(n_classes)))}
    return Task(name, "image", spec, data, device=device, seed=seed, transform=transform)


def read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(grey levels (1797, 64) in 0..16, labels (1797,)) from the csv that
    scikit-learn bundles, read directly: importing sklearn.datasets (and scipy
    with it) costs ~0.7 s, paid again by every job process of a submitit or
    Ray sweep. Falls back to sklearn's own loader if the file ever moves."""
    spec = importlib.util.find_spec("sklearn")          # locates, does not import
    roots = spec.submodule_search_locations if spec is not None else None
    path = Path(roots[0]) / "datasets" / "data" / "digits.csv.gz" if roots else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sk_digits
        d = sk_digits()
        return d.data, d.target
    table = np.loadtxt(path, delimiter=",")             # (1797, 65): 64 pixels, label
    return table[:, :-1], table[:, -1].astype(np.int64)


@register("digits")
def load_digits(*, device="cpu", seed: int = 0, binarize: str = "dynamic",
                threshold: Optional[float] = 0.5, val_fraction: float = 0.1,
                test_fraction: float = 0.2) -> Task:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), no download.
    `threshold` only matters for binarize="static" (None: one seeded Bernoulli draw)."""
    check_binarize(binarize, threshold)
    check_range("val_fraction", val_fraction, 0.0, 1.0, hi_strict=True)
    check_range("test_fraction", test_fraction, 0.0, 1.0, hi_strict=True)
    grey, target = read_sklearn_digits()
    pixels = torch.tensor(grey / 16.0, dtype=torch.float32)      # (1797, 64) in [0, 1]
    labels = torch.tensor(target, dtype=torch.long)
    train, val, test = split_indices(len(labels), (val_fraction, test_fraction), seed)
    return image_task("digits", pixels, labels, {"train": train, "val": val, "test": test},
                      (8, 8), binarize, threshold if binarize == "static" else None,
                      device, seed, n_classes=10)


def find_idx(data_dir: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def read_mnist_dir(data_dir: str | Path | None, dataset: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images (N, H, W) uint8, labels (N,)), "test": ...} from `data_dir`
    (None: DEFAULT_DIRS[dataset]). Raises FileNotFoundError naming every missing
    file, the directory, the key `task.data_dir` and the package that installs them."""
    data_dir = Path(DEFAULT_DIRS[dataset] if data_dir is None else data_dir).expanduser()
    stems = [s for pair in IDX_FILES.values() for s in pair]
    missing = [s for s in stems if find_idx(data_dir, s) is None]
    if missing:
        install = f"install them with `{INSTALL[dataset]}`, or " if dataset in INSTALL else ""
        raise FileNotFoundError(
            f"{dataset}: missing IDX file(s) {missing} in {str(data_dir.resolve())!r}: "
            f"{install}set task.data_dir=<folder> to the folder holding the four standard files "
            f"(gzipped '.gz' or not); nothing is downloaded at run time")
    out = {}
    for split, (img, lab) in IDX_FILES.items():
        img_path, lab_path = find_idx(data_dir, img), find_idx(data_dir, lab)
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3:
            raise ValueError(f"{dataset}: {img_path} has shape {images.shape}; expected "
                             f"(N, H, W) images")
        if labels.ndim != 1:
            raise ValueError(f"{dataset}: {lab_path} has shape {labels.shape}; expected (N,) labels")
        if len(images) != len(labels):
            raise ValueError(f"{dataset}: {img_path} holds {len(images)} images but {lab_path} "
                             f"{len(labels)} labels; expected the same N in both")
        out[split] = (images, labels)
    return out


def _idx_task(dataset: str, data_dir, device, seed, binarize, threshold, val_size) -> Task:
    check_binarize(binarize, threshold)
    files = read_mnist_dir(data_dir, dataset)
    (tr_img, tr_lab), (te_img, te_lab) = files["train"], files["test"]
    shape = tr_img.shape[1:]
    pixels = torch.tensor(np.concatenate([tr_img, te_img]).reshape(-1, int(np.prod(shape))),
                          dtype=torch.float32) / 255.0                  # (N, P) in [0, 1]
    labels = torch.tensor(np.concatenate([tr_lab, te_lab]), dtype=torch.long)
    n_train = len(tr_lab)
    check_range("val_size", val_size, 0, n_train - 1, integer=True)
    test = torch.arange(n_train, len(labels))
    # val_size 0 (the default): the t10k files are the held-out split for both
    # validation and test, as the papers report it; val_size > 0 holds that many
    # training images out for model selection and keeps t10k for the test only
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    splits = {"train": perm[val_size:], "val": perm[:val_size] if val_size else test,
              "test": test}
    n_classes = int(labels.max()) + 1
    return image_task(dataset, pixels, labels, splits, shape, binarize,
                      threshold if binarize == "static" else None, device, seed, n_classes,
                      CLASS_NAMES.get(dataset))


def _idx_loader(dataset: str, doc: str):
    """The loader of an MNIST-format data set: the four standard IDX files in
    `data_dir` (None: DEFAULT_DIRS[dataset]). val_size=0: validation on the
    t10k files (the held-out split); > 0: that many training images held out
    for validation instead."""
    def load(*, device="cpu", seed: int = 0, data_dir: Optional[str] = DEFAULT_DIRS[dataset],
             binarize: str = "dynamic", threshold: Optional[float] = 0.5,
             val_size: int = 0) -> Task:
        return _idx_task(dataset, data_dir, device, seed, binarize, threshold, val_size)
    load.__doc__ = doc
    return load


load_mnist = register("mnist")(_idx_loader(
    "mnist", "MNIST from the four standard IDX files in `data_dir` (LeCun et al. 1998)."))
load_fashion_mnist = register("fashion_mnist")(_idx_loader(
    "fashion_mnist", "Fashion-MNIST (Xiao et al. 2017): same file names and format as MNIST."))
