"""One owner per run: at most one process trains a given config (its
`config_hash`) at a time.

Two guards, checked by the job runner before it skips, resumes or opens a run:

1. A lock file, `<train.checkpoint_dir>/<config_hash>.lock`, held with
   `fcntl.flock(LOCK_EX | LOCK_NB)` from before the skip check until the run
   has ended (`acquire`). Why this and not the store: the checkpoint folder is
   already the one place every rerun of a config shares (the checkpoint it
   would resume lives there, and it is probed writable before a run opens),
   whatever the store is (sqlite, a shared `mlflow server`); MLflow offers no
   compare-and-set on a tag, so two processes that both read "no live run"
   would both write one. The kernel drops the lock when its holder dies, even
   by SIGKILL, so a dead owner never blocks a rerun. The holder writes its
   heartbeat line (time host pid) into the file, which names it to a
   refused process. The file is removed when the owner ends; a rerun that
   locked a file unlinked meanwhile locks again (the inode check below).
2. The heartbeat (bench.tracking.liveness): when the config's latest run is
   RUNNING with a fresh heartbeat, another process trains it, perhaps on a
   machine whose checkpoint folder is not this one (`check_latest`). If that
   heartbeat names this host and a process that is gone (killed -9 a moment
   ago), the run is marked lost at once instead, so the rerun resumes it.

A process refused by either guard touches no run: it prints one line naming
the config, the run and its holder, and a single run exits with status 4
(`EXIT_HELD`); in a sweep the job is not run and the parent gets tag
`held.<job> = <holder>`. It neither waits nor retries: the holder's result
is the config's result, and the same command later skips it as FINISHED.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional

EXIT_HELD = 4


class Held(RuntimeError):
    """Another live process trains this config."""

    def __init__(self, chash: str, run_id: Optional[str], holder: str, where: str):
        self.chash, self.run_id, self.holder, self.where = chash, run_id, holder, where
        run = f"run {run_id}" if run_id else "its run"
        super().__init__(f"config_hash {chash} ({run}) is being trained by another process "
                         f"({holder}; {where}): not started; the same command skips it once "
                         f"that process has finished it")


class Owner:
    """The held lock file of one config; `release()` ends the ownership."""

    def __init__(self, path: Path, handle, made_folder: bool = False):
        self.path, self.handle, self.made_folder = path, handle, made_folder

    def release(self) -> None:
        if self.handle is None:
            return
        try:
            self.path.unlink(missing_ok=True)   # while still held: see the inode check in acquire
        except OSError:
            pass
        self.handle.close()                     # closing releases the lock
        self.handle = None
        if self.made_folder:                    # a run refused later leaves no empty folder
            try:
                self.path.parent.rmdir()
            except OSError:                     # not empty: a checkpoint or another's lock
                pass


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".lock")


def acquire(checkpoint: Path, chash: str, beat: str) -> Owner:
    """The lock of `checkpoint`'s config, or `Held` naming its holder. Where
    flock is unavailable (no fcntl), ownership rests on the heartbeat alone."""
    try:
        import fcntl
    except ImportError:
        return Owner(lock_path(checkpoint), None)
    path = lock_path(checkpoint)
    made = not path.parent.exists()
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)     # rmdir'd by a last owner meanwhile
        try:
            handle = open(path, "a+")
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "holder unknown"
            handle.close()
            raise Held(chash, None, holder, f"lock {path}") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:            # not a file its last owner unlinked after we opened it
            handle.seek(0)
            handle.truncate()
            handle.write(beat + "\n")
            handle.flush()
            return Owner(path, handle, made)
        handle.close()


def _holder_gone(heartbeat: str) -> bool:
    """The heartbeat names a process of this host that no longer exists."""
    from .checkpoint import _alive
    fields = dict(p.split("=", 1) for p in heartbeat.split()[1:] if "=" in p)
    if fields.get("host") != socket.gethostname() or not fields.get("pid", "").isdigit():
        return False
    return not _alive(int(fields["pid"]))


def latest(c, exp_id: str, chash: str):
    """The config's most recently started run, or None."""
    from ..tracking import store as S
    runs = S.retrying(c.search_runs, [exp_id], filter_string=f"tags.config_hash = '{chash}'",
                      max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def named(e: Held, c, exp_id: str) -> Held:
    """`e` naming the config's latest run (a lock names only its holder)."""
    run = None if e.run_id else latest(c, exp_id, e.chash)
    return e if run is None else Held(e.chash, run.info.run_id, e.holder, e.where)


def check_latest(c, exp_id: str, chash: str, lost_after_s: float) -> None:
    """Raise `Held` when the config's latest run is RUNNING and alive; mark it
    lost when its heartbeat names a dead process of this host."""
    from ..tracking import liveness as L
    run = latest(c, exp_id, chash)
    if run is None or run.info.status != "RUNNING" or L.is_lost(run, lost_after_s):
        return
    heartbeat = run.data.tags.get(L.TAG, "")
    if heartbeat and _holder_gone(heartbeat):
        L.mark_lost(c, run)
        return
    raise Held(chash, run.info.run_id, heartbeat or "no heartbeat tag yet",
               f"RUNNING with a heartbeat younger than mlflow.lost_after_s={lost_after_s:g} s")
