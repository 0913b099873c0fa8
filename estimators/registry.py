"""Name -> component registries, filled by discovery: the one implementation
behind estimators, model families, tasks and conditioning types.

    ESTIMATORS = Registry("estimator", package="estimators",
                          entry_points="discrete_latent_bench.estimators")

    @ESTIMATORS.register("gumbel")
    class Gumbel(Estimator): ...

The first lookup (`names`, `get`, `in`) imports every module of `package`
(so a component is one file, with no import list to edit) and loads every
installed entry point of the group (so another package adds its own, with no
edit here); their `register` decorators fill the table. An entry point may
name a module, or a class with a `name` attribute, which is registered under
that name if its module did not register it. An unknown name is a ValueError
listing the valid ones.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, package: Optional[str] = None, entry_points: Optional[str] = None):
        self.what, self.package, self.group = what, package, entry_points
        self._items: dict[str, T] = {}
        self._discovered = package is None and entry_points is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True     # before importing: modules register while we import them
        if self.package is not None:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
        if self.group is not None:
            from importlib.metadata import entry_points
            for ep in entry_points(group=self.group):
                try:
                    obj = ep.load()
                except Exception as e:
                    raise ImportError(f"{self.what} entry point {ep.name!r} = {ep.value!r} "
                                      f"(group {self.group}) failed to load: {e}") from e
                name = getattr(obj, "name", None)
                if isinstance(obj, type) and isinstance(name, str) and name not in self._items:
                    self.register(name)(obj)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self.discover()
        if name not in self._items:
            raise ValueError(f"unknown {self.what} {name!r}; valid names are {self.names()}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._items
