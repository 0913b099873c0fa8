"""The folders a run writes to, checked before anything is created.

A run writes to three places on disk besides the data it reads: Hydra's
output folder (`hydra.run.dir`, or `hydra.sweep.dir` in a multirun), the
folder of a local sqlite store, and `train.checkpoint_dir`. One that cannot
be written used to surface late: an unwritable checkpoint folder trained up
to the first checkpoint and then failed with an OSError traceback, the work
lost. So `check(config, multirun)` probes all three in the launching process
(bench.tracking.preflight, before the store, the experiment or the output
folder exists) and ends the command with one line naming the path, exit
status 1; the job runner probes the checkpoint folder of each job again
before its run opens (a sweep's jobs may set their own).

The checkpoint folder is probed whether or not `train.checkpoint_every` is
set: a stop signal (SIGTERM from a scheduler, SIGUSR2 before a time limit)
writes a checkpoint too, and failing then would lose the run.

A probe creates nothing that stays: a folder that does not exist yet is
judged by its nearest existing ancestor (it must be a directory in which a
file can be created); the probe file made there is removed at once. Root
ignores permission bits but not a read-only filesystem, nor a path under a
regular file, and both are caught.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

EXIT_PLACE = 1


def problem(folder: Path) -> Optional[str]:
    """Why nothing can be written under `folder` (existing or not), or None."""
    folder = Path(os.path.abspath(folder))
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return f"no part of {folder} exists"
        probe = probe.parent
    if not probe.is_dir():
        return (f"{probe} is not a directory" if probe == folder
                else f"{probe} is a file, so the folder {folder} cannot be created under it")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".bench-probe-"):
            pass
    except OSError as e:
        where = "" if probe == folder else f" (its nearest existing folder {probe})"
        return f"{folder} is not writable{where}: {e.strerror or e}"
    return None


def checkpoint_folder(cfg) -> Path:
    """`train.checkpoint_dir`, absolute; a relative one is taken from the
    directory the command was started from (bench.job.checkpoint)."""
    folder = Path(cfg.train.checkpoint_dir).expanduser()
    if not folder.is_absolute():
        folder = Path(_original_cwd()) / folder
    return folder.resolve()


def _original_cwd() -> str:
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


def places(config, multirun: bool, uri: Optional[str] = None) -> list[tuple[str, Path]]:
    """(what cannot be done, folder) for every place the command writes to."""
    from omegaconf import OmegaConf

    from .store import resolve_tracking_uri
    out = [("cannot write train.checkpoint_dir", checkpoint_folder(config))]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        hydra_dir = OmegaConf.select(config, key, default=None)
    except Exception:  # noqa: BLE001 -- an interpolation only a job can resolve: Hydra judges it
        hydra_dir = None
    if hydra_dir:
        out.append((f"cannot write {key}", Path(str(hydra_dir))))
    uri = uri or resolve_tracking_uri()
    if uri.startswith("sqlite:///"):
        # worded as store.check_store words a store it cannot open
        out.append((f"MLflow tracking store {uri} cannot be opened",
                    Path(uri[len("sqlite:///"):]).parent))
    return out


def check(config, multirun: bool) -> None:
    """Exit 1 with one line when a place the command writes to is unwritable."""
    for what, folder in places(config, multirun):
        why = problem(folder)
        if why is not None:
            refuse(what, why)


def refuse(what: str, why: str) -> None:
    print(f"[bench] error: {what}: {why}; nothing was run", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_PLACE)
