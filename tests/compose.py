"""Compose the real `bench.run` config in-process, as a job sees it (plain
values: `bench.config.plain`)."""
from __future__ import annotations

from bench.config import compose, plain


def compose_config(overrides: list[str]):
    return plain(compose(overrides))


def choices(group: str) -> list[str]:
    """The file stems of conf/<group>/: the options Hydra offers for the group."""
    from bench.config import conf_dir
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
