"""Name -> constructor registries and option checks shared by tasks, conditioning
types and model families.

Every user-facing choice in `models` is a string looked up here, so an unknown
name or option fails at build time with a ValueError that lists the valid ones
(the same contract as `estimators.build`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors; `what` names the kind in error messages."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"unknown {self.what} {name!r}; valid names are {self.names()}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items


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
