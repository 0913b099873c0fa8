"""Conditioning adherence: does a sample follow the class it was asked for?

    clf = load_classifier(task, seed=0)              # trained once, cached on disk
    class_accuracy(model, clf, n_per_class=8)        # gen/class_accuracy
    clf.accuracy                                     # gen/classifier_accuracy (the ceiling)

A small MLP classifier is trained on the task's real training split (the
split's fixed binarisation) and scored on the held-out split. It is cached
in `$BENCH_CACHE_DIR` (else ~/.cache/discrete-latent-bench) under a key that
hashes the training and held-out tensors and the classifier's settings, so a
change of data (another seed, binarisation, subset) or of settings trains a
new one and an unchanged task reuses it. The metric is the classification
score of generated images (the analogue of the "classification accuracy
score" idea of Ravuri & Vinyals 2019, here with a real-data classifier
labelling samples): for each class, `n_per_class` latents drawn from the
prior p(z | y), decoded to their mean images E[x | z, y] (Bernoulli means),
and the fraction the classifier labels as the requested class. A decoder that
ignores y scores about 1 / n_classes; one that draws real images of class y
scores about the classifier's accuracy.

Training runs under a forked RNG with its own seed, so loading (or training)
the classifier never changes a run's trajectory.

Axis legend: N images, P pixels, K classes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Batch

CACHE_ENV = "BENCH_CACHE_DIR"


@dataclass(frozen=True)
class ClassifierSettings:
    hidden: int = 256
    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "discrete-latent-bench"


def cache_key(train: Batch, heldout: Batch, n_classes: int, settings: ClassifierSettings) -> str:
    """sha256 of the data tensors and the settings: any change of either gives a new key."""
    h = hashlib.sha256(repr((sorted(asdict(settings).items()), n_classes)).encode())
    for t in (train.x, train.c, heldout.x, heldout.c):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:24]


class Classifier(nn.Module):
    """P -> hidden -> hidden -> K, ReLU; `accuracy` on the held-out split."""

    def __init__(self, n_pixels: int, n_classes: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_pixels, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, n_classes))
        self.accuracy = float("nan")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.net[0].weight.dtype))                 # (N, K) logits

    @torch.no_grad()
    def predict(self, x: Tensor, chunk: int = 4096) -> Tensor:
        return torch.cat([self(x[i:i + chunk]).argmax(-1) for i in range(0, len(x), chunk)])


def train_classifier(train: Batch, heldout: Batch, n_classes: int,
                     settings: ClassifierSettings = ClassifierSettings()) -> Classifier:
    """Adam on minibatches of the training split (CPU, float32); deterministic given settings."""
    x, c = train.x.detach().float().cpu(), train.c.detach().cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        clf = Classifier(x.shape[1], n_classes, settings.hidden)
        g = torch.Generator().manual_seed(settings.seed)
        opt = torch.optim.AdamW(clf.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        for _ in range(settings.steps):
            idx = torch.randint(len(x), (settings.batch_size,), generator=g)
            loss = F.cross_entropy(clf(x[idx]), c[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    pred = clf.predict(heldout.x.detach().float().cpu())
    clf.accuracy = float((pred == heldout.c.cpu()).float().mean())
    return clf


def load_classifier(task, split: str = "train", heldout: str = "test", seed: int = 0,
                    settings: Optional[ClassifierSettings] = None,
                    folder: Optional[Path] = None) -> Classifier:
    """The classifier of (task, split, seed) from the cache, trained and stored on a miss.
    `clf.cache_path` is the file; `clf.from_cache` says whether it was reused."""
    settings = settings or ClassifierSettings(seed=seed)
    tr, ho = task.split(split), task.split(heldout)
    n_classes = task.spec["n_classes"]
    path = Path(folder or cache_dir()) / f"classifier-{task.name}-{cache_key(tr, ho, n_classes, settings)}.pt"
    from_cache = path.is_file()
    if from_cache:
        with torch.random.fork_rng(devices=[]):     # the shell's initial weights draw from the RNG
            clf = Classifier(tr.x.shape[1], n_classes, settings.hidden)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        clf.load_state_dict(saved["state"])
        clf.accuracy = float(saved["accuracy"])
    else:
        clf = train_classifier(tr, ho, n_classes, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        # write-then-rename: parallel jobs of a sweep never read a half-written file
        torch.save({"state": clf.state_dict(), "accuracy": clf.accuracy}, tmp)
        os.replace(tmp, path)
    clf.eval()
    clf.cache_path, clf.from_cache = path, from_cache
    return clf.to(task.device)


def prior_samples(model, labels: Tensor, generator: Optional[torch.Generator] = None,
                  z: Optional[Tensor] = None) -> Tensor:
    """Mean images E[x | z, y] (N, P) for labels (N,), z ~ p(z | y) unless given (1, N, ...)."""
    n_pixels = model.task_spec["n_pixels"]
    dtype = next(model.parameters()).dtype
    batch = Batch(torch.zeros(len(labels), n_pixels, dtype=dtype, device=labels.device), labels, None)
    if z is None:
        z = model.latent.sample(model.prior(batch), 1, generator)           # (1, N, ...)
    return model.decode_mean(batch, z)[0]                                   # (N, P)


@torch.no_grad()
def class_accuracy(model, classifier: Classifier, n_per_class: int = 8,
                   generator: Optional[torch.Generator] = None) -> float:
    """Fraction of generated images the classifier labels as the requested class."""
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        n_classes = model.task_spec["n_classes"]
        labels = torch.arange(n_classes, device=device).repeat_interleave(n_per_class)   # (N,)
        images = prior_samples(model, labels, generator)
        return float((classifier.predict(images.to(device)) == labels).float().mean())
    finally:
        model.train(was)
