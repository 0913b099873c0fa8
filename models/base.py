"""`LatentModel`: the interface every model family implements (the contract in
`models/__init__.py`), and the registry of families keyed by `Task.family`.

A new family subclasses LatentModel, sets `family`, `Config` (a dataclass of
options with defaults) and `conditioned` (False: no condition, any
conditioning is ignored), implements the four methods, calls the hooks of its
conditioning class (models.conditioning.base) where the condition enters, and
registers with `@FAMILIES.register("<task family>")`. Which conditioning
types it takes is declared by each type (`families`), not here.
`models.build` validates options against `Config` before the constructor runs.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from .data import Batch
from .latents import Latent
from .latents import build as build_latent
from .registry import Registry

FAMILIES: Registry[type["LatentModel"]] = Registry(
    "model family", package=__name__.rsplit(".", 1)[0], entry_points="discrete_latent_bench.families")


class LatentModel(nn.Module):
    family: ClassVar[str] = ""
    Config: ClassVar[type] = object
    conditioned: ClassVar[bool] = True      # False: there is no condition (the toy)
    # task families it takes besides its own name (the conv family takes image tasks)
    task_families: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def takes(cls, task_family: str) -> bool:
        return task_family == cls.family or task_family in cls.task_families

    @classmethod
    def latent_sizes(cls, task) -> dict[str, dict]:
        """{latent kind: sizes} that suit `task` when only a latent name is given."""
        return {"categorical": dict(D=8, K=10), "bernoulli": dict(D=8), "gaussian": dict(D=8)}

    @classmethod
    def default_latent(cls, task, kind: str) -> Latent:
        sizes = cls.latent_sizes(task)
        if kind not in sizes:
            raise ValueError(f"unknown latent {kind!r} for the {cls.family} model; "
                             f"valid names are {sorted(sizes)}")
        return build_latent(kind, **sizes[kind])

    def __init__(self, task, latent: Latent, conditioning: Optional[str], config: Any = None):
        super().__init__()
        self.task_spec = dict(task.spec)
        self.latent = latent
        self.conditioning = conditioning
        self.config = self.Config() if config is None else config

    # -- the contract ------------------------------------------------------
    def posterior(self, batch: Batch) -> Tensor:
        """q(z | x, c): (B, D, K) logits or (B, D, 2) [mean, log_std]."""
        raise NotImplementedError

    def prior(self, batch: Batch) -> Optional[Tensor]:
        """p(z | c) parameters (B, D, K) / (B, D, 2), or None when there is no KL term."""
        raise NotImplementedError

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        """log p(x | z, c): z (S, B, D, K) float or (S, B, D) -> (S, B)."""
        raise NotImplementedError

    def context(self, batch: Batch) -> Tensor:
        """Detached (B, C) features for input-dependent baselines."""
        raise NotImplementedError

    def prior_parameters(self) -> list[nn.Parameter]:
        """The learned prior's parameters, which `train.prior_lr` trains by their
        own SGD; none for a fixed prior (the default)."""
        return []

    def posterior_parameter_names(self) -> list[str]:
        """Name prefixes of q(z | x, c)'s parameters (the default target of gradient
        statistics): every child module whose name starts with "enc"."""
        return [n + "." for n, _ in self.named_children() if n.startswith("enc")]

    # -- helpers -------------------------------------------------------------
    def fixed_prior(self, batch: Batch, like: Tensor) -> Tensor:
        return self.latent.fixed_prior(like).expand(batch.size, *self.latent.param_shape)

    def class_prior(self, batch: Batch, table: Optional[nn.Embedding], like: Tensor) -> Tensor:
        """p(z | y) from a learned table per class, or the fixed prior without one."""
        if table is None:
            return self.fixed_prior(batch, like)
        return self.latent.params(table(batch.c))

    def drop_latent(self, code: Tensor, null: Tensor, p: float) -> Tensor:
        """Latent dropout: each row of code (N, ...) becomes `null` (...) with
        probability p, in training mode only (global RNG, like the estimators)."""
        if not self.training or p <= 0:
            return code
        keep = torch.rand(code.shape[0], device=code.device) >= p
        keep = keep.view(-1, *([1] * (code.dim() - 1)))
        return torch.where(keep, code, null.to(code.dtype).expand_as(code))

    def check_z(self, batch: Batch, z: Tensor) -> None:
        want = (batch.size, *self.latent.param_shape[:-1]) + \
            ((self.latent.param_shape[-1],) if self.latent.estimator_kind == "categorical" else ())
        if z.dim() != len(want) + 1 or tuple(z.shape[1:]) != want:
            raise ValueError(f"{type(self).__name__}.log_likelihood: z must have shape "
                             f"(S, {', '.join(map(str, want))}), got {tuple(z.shape)}")
