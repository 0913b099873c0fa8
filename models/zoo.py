"""`models.build`: one entry point for every model family.

    task = models.tasks.load("digits")
    latent = models.latents.build("categorical", D=8, K=10)
    model = models.build(task, latent, conditioning="film", learned_prior=True)

`latent` may also be a name ("categorical" | "gaussian"): the family's default
sizes are used (`default_latent`). Options are the fields of the family's
config dataclass (`models.options(task)` lists them with defaults); unknown
options, bad values and unsupported conditioning types raise ValueError
before anything is built.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from . import conditioning as cond_types
from .base import FAMILIES, LatentModel
from .latents import Latent
from .latents import build as build_latent
from .registry import config_from, defaults


def _family(task_or_family) -> type[LatentModel]:
    family = task_or_family if isinstance(task_or_family, str) else task_or_family.family
    return FAMILIES.get(family)


def families() -> list[str]:
    return FAMILIES.names()


def options(task_or_family) -> dict[str, Any]:
    """The options `build` accepts for this task (or family name), with defaults."""
    return defaults(_family(task_or_family).Config)


def default_latent(task, kind: str = "categorical") -> Latent:
    """Latent sizes that suit the task when only a latent name is given."""
    if task.family == "toy":
        if kind != "categorical":
            raise ValueError(f"toy: latent {kind!r} is not valid; the toy latent is categorical (K=2)")
        return build_latent("categorical", D=task.spec["D"], K=2)
    if task.family == "sequence":
        sizes = {"categorical": dict(D=1, K=2 * task.spec["n_strategies"]), "gaussian": dict(D=8)}
    else:
        sizes = {"categorical": dict(D=8, K=10), "gaussian": dict(D=8)}
    if kind not in sizes:
        raise ValueError(f"unknown latent {kind!r}; valid names are {sorted(sizes)}")
    return build_latent(kind, **sizes[kind])


def build(task, latent: Union[Latent, str] = "categorical", conditioning: Optional[str] = "film",
          **opts) -> LatentModel:
    """The model for `task` with latent `latent` and conditioning type `conditioning`.

    Families without a condition (`conditioned = False`: the toy) ignore
    `conditioning`. Returns an
    nn.Module (float32) already on the task's device.
    """
    cls = _family(task)
    config = config_from(cls.Config, f"{cls.family} model", opts)
    if conditioning is not None:
        cond_types.get(conditioning)                 # an unknown name fails for every family
    if cls.conditioned:
        if conditioning is None:
            raise ValueError(f"the {cls.family} model needs a conditioning type; "
                             f"supported: {cond_types.supported(cls.family)}")
        cond_types.check(conditioning, cls.family)
    else:
        conditioning = None
    if isinstance(latent, str):
        latent = default_latent(task, latent)
    return cls(task, latent, conditioning, config).to(task.device)
