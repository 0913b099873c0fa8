"""Our top-level sibling packages, whatever the working directory holds.

The package installs `bench`, `models` and `estimators` side by side at the
top level (users asked for that layout). `python -m bench.run` puts the
working directory first on sys.path, and most ML repositories hold a
`models/` (or `estimators/`) package of their own, which would then be
imported instead of ours (`AttributeError: module 'models' has no attribute
'conditioning'`). `pin()`, called by `bench/__init__.py` before anything
imports them, makes `import models` / `import estimators` resolve to the
folders beside this `bench` package:

- a finder first on sys.meta_path answers for those two names only, from the
  folder holding our `bench/` (the checkout, or site-packages). sys.path is
  left alone, so the working directory's other modules (and its `tests`,
  `conf`, `results`) are found as before;
- a name the process ALREADY imported from elsewhere (a notebook imported its
  own `models` first) cannot be swapped under its users: one line names the
  module, the path it came from and what to do; under `python -m` the command
  exits 2 before anything is created, imported as a library it raises
  `ShadowedError` (an ImportError).

A working directory holding its own regular `bench` package hides this one
before any of our code runs; only renaming it (or starting elsewhere) helps.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent   # the folder holding our bench/
SIBLINGS = ("models", "estimators")
EXIT_CONFIG = 2     # = bench.tracking.summary.EXIT_CONFIG, not imported here: this runs first


class ShadowedError(ImportError):
    pass


class _SiblingFinder(importlib.abc.MetaPathFinder):
    """Finds the top-level SIBLINGS in ROOT only; every other name is left to
    the finders after it. Submodules (`models.conditioning`) are found through
    the package's own __path__, so they follow."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in SIBLINGS or not (ROOT / fullname / "__init__.py").is_file():
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(ROOT)])


def _origin(module) -> Path | None:
    f = getattr(module, "__file__", None)
    return Path(f).resolve() if f else None


def foreign() -> list[tuple[str, str]]:
    """(name, where it came from) for each sibling already imported from
    somewhere other than ROOT."""
    out = []
    for name in SIBLINGS:
        mod = sys.modules.get(name)
        ours = ROOT / name / "__init__.py"
        if mod is not None and ours.is_file() and _origin(mod) != ours:
            where = _origin(mod) or list(getattr(mod, "__path__", [])) or "?"
            out.append((name, str(where)))
    return out


def pin() -> None:
    if not any(isinstance(f, _SiblingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SiblingFinder())
    bad = foreign()
    if not bad:
        return
    name, where = bad[0]
    message = (f"[bench] the module '{name}' was already imported from {where}, which shadows "
               f"this package's {ROOT / name}: import bench before your own '{name}', or "
               f"start Python from a directory without a '{name}' package")
    # while `python -m bench.x` locates its module, sys.argv[0] is "-m" (Python docs, -m)
    if sys.argv[:1] == ["-m"]:
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG)
    raise ShadowedError(message)
