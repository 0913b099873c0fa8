"""A sweep stopped by a signal to its launching process ends cleanly.

SIGTERM, SIGINT or SIGHUP to the process that launched a `-m` sweep whose
jobs run in other processes (`hydra/launcher=joblib`, `submitit_local`):
Python's default would end the launcher at once, leave its parent run
RUNNING and its workers training on, re-parented to PID 1, after the sweep.
Instead (`TrackingCallback._on_signal`, installed by `install`):

1. every process below the launcher gets SIGTERM: a worker that trains
   checkpoints at its next step boundary and ends its run KILLED with the
   resume hint (bench.job.checkpoint); an idle one ends;
2. the launcher waits, at most `WAIT_S`, until no child run of the sweep is
   RUNNING in a process that still lives (the heartbeat tag names each run's
   process);
3. what is still below it (idle pool workers) gets SIGTERM, then SIGKILL
   after `GRACE_S`: no process outlives the sweep. Resource trackers (of
   multiprocessing and of joblib's pool) are spared: they end by themselves
   when the launcher exits, after removing what the pool left in /dev/shm;
   killed, they are relaunched and print tracebacks;
4. the parent ends KILLED with its `sweep.*` tags and the summary printed
   (any child still RUNNING, its process gone, is counted and ended KILLED),
   and the launcher exits with 128 + the signal number.

With Hydra's basic launcher the jobs run in the launching process itself:
SIGTERM reaches the job's own handler (checkpoint, KILLED), which hands it
on to the sweep's; SIGHUP is turned into SIGTERM; SIGINT stays Python's
KeyboardInterrupt (the run ends KILLED, and the exit hook ends the sweep).

Processes are found through /proc (Linux); elsewhere only the launcher's
own end is handled. A Ray cluster's workers are not the launcher's
descendants and are not stopped here.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WAIT_S = 120.0      # for the workers' checkpoints and KILLED records
GRACE_S = 5.0       # for the leftovers to end on SIGTERM before SIGKILL


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()    # the name may hold spaces and ')'
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent to reap it."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


HELPERS = ("resource_tracker",)     # in a command line: a helper that ends with its owner


def _helper(pid: int) -> bool:
    try:
        return any(h in Path(f"/proc/{pid}/cmdline").read_text(errors="replace") for h in HELPERS)
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...) but
    the resource trackers."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] not in ("Z", "X"):
                parents.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for kid in parents.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return [p for p in out if not _helper(p)]


def send(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def end_descendants(grace_s: float = GRACE_S) -> int:
    """SIGTERM, then SIGKILL, to every process still below this one; how many there were."""
    left = descendants(os.getpid())
    count = len(left)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        send(left, signum)
        deadline = time.monotonic() + grace_s
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [p for p in left if alive(p)]
        if not left:
            break
    return count


def heartbeat_pid(run) -> int | None:
    from . import liveness as L
    for part in run.data.tags.get(L.TAG, "").split()[1:]:
        if part.startswith("pid=") and part[4:].isdigit():
            return int(part[4:])
    return None


def wait_for_workers(c, exp_id: str, parent: str, wait_s: float = WAIT_S) -> None:
    """Until no child run of `parent` is RUNNING in a live process other than this one."""
    from . import store as S
    me, deadline = os.getpid(), time.monotonic() + wait_s
    while time.monotonic() < deadline:
        running = [r for r in S.children(c, exp_id, parent) if r.info.status == "RUNNING"]
        pids = {heartbeat_pid(r) for r in running} - {me, None}
        if not any(alive(p) for p in pids):
            return
        time.sleep(0.5)


def install(handler, in_process: bool) -> None:
    """`handler(signum, frame)` for the stop signals of a sweep whose jobs run
    in other processes; with `in_process` (the basic launcher) for SIGTERM
    only, SIGHUP turned into SIGTERM and SIGINT left alone (see above)."""
    if not in_process:
        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        return
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))
