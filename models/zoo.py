"""`models.build`: one entry point for every model family.

    task = models.tasks.load("digits")
    latent = models.latents.build("categorical", D=8, K=10)
    model = models.build(task, latent, conditioning="film", learned_prior=True)

    model = models.build(task, latent, conditioning="adaln", family="conv")

The family: `family=None` is the task's own (`Task.family`: "image" tasks get
the MLP family, whose public name is "mlp"); an image task also takes
`family="conv"` (models.conv). A family declares the task families it takes
(`task_families` besides its own name); any other pair is refused naming
the valid ones. `latent` may also be a name ("categorical" | "gaussian"): the
family's default sizes are used (`default_latent`; a family may define its
own, as the conv family does for its spatial latent). Options are the fields
of the family's config dataclass (`models.options(task, family)` lists them
with defaults); unknown options, bad values and unsupported conditioning
types raise ValueError before anything is built.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from . import conditioning as cond_types
from .base import FAMILIES, LatentModel
from .latents import Latent
from .registry import config_from, defaults


# public family name -> registered name: the MLP family is registered under
# its task family ("image"), which conditioning types declare
ALIASES = {"mlp": "image"}
_PUBLIC = {v: k for k, v in ALIASES.items()}


def task_families(task) -> list[str]:
    """Public names of the model families that take this task (`family=` values)."""
    return sorted(_PUBLIC.get(n, n) for n in FAMILIES.names() if FAMILIES.get(n).takes(task.family))


def _family(task_or_family, family: Optional[str] = None) -> type[LatentModel]:
    if isinstance(task_or_family, str):
        return FAMILIES.get(ALIASES.get(task_or_family, task_or_family))
    task = task_or_family
    if family is None:
        return FAMILIES.get(task.family)
    valid = task_families(task)
    family = _PUBLIC.get(family, family) if isinstance(family, str) else family   # "image" = "mlp"
    if not isinstance(family, str) or family not in valid:
        raise ValueError(f"family={family!r} is not valid for task {task.name!r}; valid values: {valid}")
    return FAMILIES.get(ALIASES.get(family, family))


def families() -> list[str]:
    return FAMILIES.names()


def options(task_or_family, family: Optional[str] = None) -> dict[str, Any]:
    """The options `build` accepts for this task (or family name), with defaults."""
    return defaults(_family(task_or_family, family).Config)


def default_latent(task, kind: str = "categorical", family: Optional[str] = None) -> Latent:
    """Latent sizes that suit the task (and model family) when only a latent name is given."""
    return _family(task, family).default_latent(task, kind)


def build(task, latent: Union[Latent, str] = "categorical", conditioning: Optional[str] = "film",
          family: Optional[str] = None, **opts) -> LatentModel:
    """The model for `task` with latent `latent` and conditioning type `conditioning`.

    `family`: None for the task's own, or one of `task_families(task)`.
    Families without a condition (`conditioned = False`: the toy) ignore
    `conditioning`. Returns an
    nn.Module (float32) already on the task's device.
    """
    cls = _family(task, family)
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
        latent = default_latent(task, latent, family)
    return cls(task, latent, conditioning, config).to(task.device)
