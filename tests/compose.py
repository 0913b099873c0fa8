"""Compose the real `bench.run` config in-process, as a job would see it."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from bench import schema

CONF = str(Path(__file__).resolve().parent.parent / "conf")
schema.register()


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))
