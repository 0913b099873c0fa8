"""The command line's overrides, checked against the schema and conf/ before
Hydra composes anything.

Hydra reports an unknown key (`kl.free_bit=0.5`) or group option (`kl=cyclic`)
with its own message and exit status 1, lists no valid keys, and suggests
`+kl.free_bit=0.5`, which it then merges into the typed section unnoticed.
`check(overrides)` runs first, in `python -m bench.run`'s process, and refuses
(exit 2, bench.tracking.summary.refuse, before any file, store or run exists):

- a key the schema (bench.config.schema.Config) does not declare, with or
  without `+`/`++`/`~`, naming the nearest keys of its section
  (difflib.get_close_matches) and all of them;
- `+key` for a key the schema declares (Hydra would refuse to add it): the
  override without `+`;
- a group option that is not on the config search path (conf/<group>/*.yaml,
  plus configs that installed packages add, hydra_plugins/bench_searchpath),
  listing the options; every option of a sweep (`kl=constant,cyclic`) counts;
- a value the key's type refuses (`device=gpu`), with the valid values.

What is left to others: keys inside the open groups (`estimator`, `task`,
`conditioning`, `model`) are each component's own (bench.config.validate and
models.build refuse unknown ones), Hydra's own keys (`hydra.*`,
`hydra/<group>`) are Hydra's, and values from interpolations or sweep
functions (`range(...)`, `glob(...)`) are checked once composed.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterable

from . import schema


def _fields(node: type) -> dict[str, Any]:
    hints = typing.get_type_hints(node)
    return {f.name: hints[f.name] for f in dataclasses.fields(node)}


def _keys(prefix: str, names: Iterable[str]) -> list[str]:
    return [f"{prefix}{n}" for n in sorted(names)]


def _unknown(key: str, known: list[str]) -> str:
    """'key' is not a key of ...; nearest and all."""
    section = key.rsplit(".", 1)[0] if "." in key else ""
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    where = f"of '{section}'" if section else "of the configuration"
    hint = f"; did you mean {' or '.join(near)}?" if near else ";"
    return f"'{key}' is not a key {where}{hint} valid keys: {', '.join(known)}"


def key_error(key: str, add: bool, groups: Iterable[str] = ()) -> str | None:
    """Why `key` (a dotted config key, `+` when `add`) cannot be set, or None
    when the schema declares it, or leaves it to a component (open groups)."""
    parts = key.split(".")
    node: type = schema.Config
    for depth, part in enumerate(parts):
        fields = _fields(node)
        prefix = ".".join(parts[:depth]) + ("." if depth else "")
        if part not in fields:
            known = _keys(prefix, fields) + ([] if depth else sorted(groups))
            return _unknown(key, sorted(set(known)))
        kind = fields[part]
        if typing.get_origin(kind) is dict:        # an open group: its keys are checked elsewhere
            return None
        if dataclasses.is_dataclass(kind):
            node = kind
            continue
        if depth != len(parts) - 1:                 # a leaf, and the key goes deeper
            return f"'{'.'.join(parts[:depth + 1])}' is a value, not a section: '{key}' does not exist"
        if add:
            return f"'{key}' is already a key of the configuration: set it without '+' ({key}=...)"
        return None
    return f"'{key}' is a section, not a value: set one of its keys ({key}.<key>=...)"


def value_error(key: str, value: Any) -> str | None:
    """What the schema's type says of `key`=`value`, or None when it fits."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    if isinstance(value, str) and "${" in value:     # an interpolation: resolved when composed
        return None
    cfg = OmegaConf.structured(schema.Config)
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as e:
        return f"{key}={value!r} is not valid: {str(e).splitlines()[0]}"
    return None


def _repository():
    """Hydra's view of the config search path: conf/ plus what plugins add."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path
    from . import conf_dir
    return ConfigRepository(config_search_path=create_config_search_path(str(conf_dir())))


def _values(override) -> list[Any] | None:
    """The values an override sets (each of a choice sweep), or None when
    only composing can tell (range, interval, glob)."""
    from hydra.core.override_parser.types import ValueType
    if override.value_type == ValueType.ELEMENT:
        return [override.value()]
    if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        return list(override.sweep_iterator())
    return None


def errors(overrides: list[str]) -> list[str]:
    """Every mistake among the command line's overrides, one message each."""
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        return [str(e).splitlines()[0]]
    repo = _repository()
    groups = [g for g in repo.get_group_options("", ObjectType.GROUP) if g != "hydra"]
    out = []
    for o in parsed:
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        values = None if o.is_delete() else _values(o)
        if repo.group_exists(key):
            options = repo.get_group_options(key, ObjectType.CONFIG)
            bad = [v for v in values or [] if v is not None and str(v) not in options]
            if bad:
                out.append(f"{key}={','.join(map(str, bad))} is not an option of '{key}'; "
                           f"options: {', '.join(options)}")
            continue
        why = key_error(key, add=o.is_add() and not o.is_force_add(), groups=groups)
        if why is None and values is not None and not o.is_delete():
            why = next(filter(None, (value_error(key, v) for v in values)), None)
        if why:
            out.append(why)
    return out


def check(overrides: list[str]) -> None:
    """Exit 2 with every mistake named (bench.tracking.summary.refuse)."""
    found = errors(overrides)
    if found:
        from ..tracking.summary import refuse
        refuse(found[0] if len(found) == 1 else "\n  " + "\n  ".join(found))
