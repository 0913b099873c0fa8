"""Option checks shared by tasks, conditioning types and model families, and
the registry they are looked up in (`estimators.registry.Registry`, the one
implementation for every kind of component).

Every user-facing choice in `models` is a string looked up in a registry, so
an unknown name or option fails at build time with a ValueError that lists
the valid ones (the same contract as `estimators.build`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, TypeVar

from estimators.registry import Registry  # noqa: F401  (the one registry implementation)

T = TypeVar("T")


def check_options(where: str, given: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Refuse option names that `where` does not know, naming the valid ones."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid options are {valid}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {choices}")


def check_range(key: str, value: Any, lo: float | None = None, hi: float | None = None,
                integer: bool = False, lo_strict: bool = False, hi_strict: bool = False) -> None:
    """value in [lo, hi] (strict ends on request); `integer` also refuses floats and bools."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}={value!r} is not valid; it must be an integer")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{key}={value!r} is not valid; it must be a number")
    bad_lo = lo is not None and (value <= lo if lo_strict else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_strict else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_strict else "["
        right = ")" if hi_strict else "]"
        raise ValueError(f"{key}={value!r} is not valid; it must lie in "
                         f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}")


def check_latent_options(cfg: Any) -> None:
    """The options every latent-variable model family shares."""
    check_range("latent_dropout", cfg.latent_dropout, 0.0, 1.0)
    for key in ("encoder_conditioned", "learned_prior"):
        if not isinstance(getattr(cfg, key), bool):
            raise ValueError(f"{key}={getattr(cfg, key)!r} is not valid; it must be true or false")


def config_from(cls: type[T], where: str, options: Mapping[str, Any]) -> T:
    """Build a config dataclass from keyword options, refusing unknown keys."""
    fields = [f.name for f in dataclasses.fields(cls)]
    check_options(where, options, fields)
    return cls(**options)


def defaults(cls: type) -> dict[str, Any]:
    """A config dataclass's options with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls)}
