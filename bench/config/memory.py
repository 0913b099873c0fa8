"""Refusing a training step that cannot fit in memory, before any run opens.

`estimator=indecater latent.D=1000 latent.K=1000` or `train.batch_size=10^8`
used to pass validation and fail 15-40 s later in the first step. `check`
estimates the largest tensor of a training step and refuses the config when
that tensor and its gradient (the backward pass holds both) exceed the
machine's memory. The estimate is a lower bound, so that no config that
could run is refused:

    largest = B * S * max(D * K, P) float32 values

B = train.batch_size; S = Estimator.f_evaluations(D, K), the evaluations of
f per example (each one a decoder pass over its own copy of the latents);
D x K the latent sample of one evaluation (K = 1 for a Gaussian latent, 2 for
a Bernoulli one); P the decoder's output width where the task is known to
produce images (`PIXELS`), else 0. D and K left to the task's default
(null) count as D = 1, K = 2, the smallest latent there is.

The machine's memory is MemTotal of /proc/meminfo, else os.sysconf's
physical pages; on a GPU, its memory is smaller still, so the check stays a
lower bound there too. `check` raises ConfigError naming the key to change
(`train.batch_size`, with the largest that would pass, or the estimator when
one example alone does not fit), the estimate and the memory.
"""
from __future__ import annotations

import os
from typing import Optional

FLOAT_BYTES = 4
# decoder output width (pixels) of the image tasks; other tasks count 0
PIXELS = {"digits": 64, "mnist": 784, "fashion_mnist": 784, "mnist5k": 784}


def machine_bytes() -> Optional[int]:
    """Physical memory of this machine in bytes, None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check(cfg, est, kind: str, D: Optional[int], K: Optional[int],
          memory: Optional[int] = None) -> None:
    """ConfigError when a training step's largest tensor and its gradient
    cannot fit in `memory` bytes (default: this machine's)."""
    from .validate import ConfigError
    memory = machine_bytes() if memory is None else memory
    if not memory:
        return
    guessed = "" if D is not None and (K is not None or kind == "gaussian") else \
        " (the smallest latent: the task's default sizes are known only once it loads)"
    D = 1 if D is None else D
    K = 1 if kind == "gaussian" else (2 if K is None else K)
    S = est.f_evaluations(D, K)
    P = PIXELS.get(cfg.task.get("name"), 0)
    width = max(D * K, P)
    B = cfg.train.batch_size
    per_example = 2 * FLOAT_BYTES * S * width       # the tensor and its gradient
    if B * per_example <= memory:
        return
    what = (f"the largest tensor of a training step, B x S x max(D*K, P) = {B:,} x {S:,} x "
            f"{width:,} float32 values (S = {est.name}'s f-evaluations per example at "
            f"D={D}, K={K}{guessed}; P = the decoder's output width), with its gradient needs at least "
            f"{_gib(B * per_example)}; this machine has {_gib(memory)}")
    if per_example > memory:
        raise ConfigError("estimator", est.name, "", message=(
            f"estimator={est.name} with latent.D={D} latent.K={K} cannot fit in memory: {what}, "
            f"less than one example needs; use a smaller latent.D or latent.K, or an estimator "
            f"with fewer f-evaluations per example"))
    fits = memory // per_example
    raise ConfigError("train.batch_size", B, "", message=(
        f"train.batch_size={B!r} is not valid (it cannot fit in memory: {what}); "
        f"valid values: integers <= {fits:,} here"))
