"""Subprocess helpers shared by the tests that start real programs.

    job_env(uri, **extra)   environment for a `python -m bench.run` child
    stop_group(proc)        stop a server started with start_new_session=True
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def job_env(uri: str, **extra: str) -> dict[str, str]:
    """This checkout on PYTHONPATH, one OpenMP thread, the store `uri`, and none
    of the BENCH_* ids a launching process exports (each test's sweep makes its
    own); `extra` last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": uri, **extra}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the process group `proc` leads (it was started with
    start_new_session=True, so the group holds only it and its children):
    SIGTERM, then SIGKILL if any member is left after grace_s. Returns once
    the whole group is gone, not just its leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()                 # reap the leader: a zombie still counts as a member
            if not _group_alive(proc.pid):
                break
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break
    proc.wait(timeout=grace_s)
