"""Which RUNNING runs are alive.

A process killed with SIGKILL (an OOM kill, a pre-empted node, a closed
laptop) runs no exit hook, so its runs would stay RUNNING forever and look
like a live sweep. Every open run therefore carries a tag

    heartbeat = 2026-12-01T21:03:07.412Z host=node17 pid=4242

written when the run is created and then every `mlflow.heartbeat_s` seconds by
a `Heartbeat` thread of the process that owns it (the job for a job's run,
the launching process for a sweep's parent). A RUNNING run whose last
heartbeat is older than `mlflow.lost_after_s` is lost: `reap` ends it FAILED
with tag `failure_reason = lost: no heartbeat since <time> (host, pid)` and
end time = that heartbeat, so the rerun, which skips FINISHED configs only,
redoes it. `reap` runs where a sweep or run starts (the callback, before jobs;
the runner, before its skip check) and in `python -m bench.tables`.

A store outage silences every run's heartbeat, so silence during one is no
sign of death: a reaper that itself waited out an outage counts each run's
silence from the moment the store came back (`store.RECOVERED_AT`), and a
run that looks lost is read again after a short grace (a quarter of
`lost_after_s`, at most 6 s: a live run's heartbeat thread, retrying through
the outage, lands within its retry interval once the store answers) before
it is marked.

A run with a fresh heartbeat is never marked, whichever machine it is on:
only the age of the heartbeat counts, measured against this machine's clock,
so clocks must agree to well within `lost_after_s` (NTP does). A RUNNING run
without the tag (made by an older version of the harness) counts from its
start time.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone

from . import store as S

TAG = "heartbeat"
GRACE_S = 6.0      # longest wait before a suspect run is read again
LOST_PREFIX = "lost: "


def beat(now: float | None = None) -> str:
    t = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return f"{t.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} " \
           f"host={socket.gethostname()} pid={os.getpid()}"


def beat_time(value: str | None) -> float | None:
    """Epoch seconds of a heartbeat tag value, None when absent or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.split()[0].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Heartbeat:
    """Writes the heartbeat tag of `run_id` every `every_s` seconds until
    `stop()`. A failed write is not an error (the store may be restarting):
    it is tried again after a second, so that a run that survived an outage
    proves it is alive soon after the store returns, before anyone reaps it."""

    def __init__(self, c, run_id: str, every_s: float):
        self.c, self.run_id, self.every_s = c, run_id, float(every_s)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-heartbeat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        wait = self.every_s
        while not self._stop.wait(wait):
            try:
                self.c.set_tag(self.run_id, TAG, beat())
                wait = self.every_s
            except Exception:  # noqa: BLE001 -- retried soon; liveness is best effort
                wait = min(1.0, self.every_s)

    def stop(self) -> None:
        self._stop.set()
        # not joined for long: a write blocked in an outage must not hold up the run's end
        self.thread.join(timeout=2.0)


def last_sign_of_life(run) -> float:
    hb = beat_time(run.data.tags.get(TAG))
    return hb if hb is not None else run.info.start_time / 1000.0


def is_lost(run, lost_after_s: float, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    last = max(last_sign_of_life(run), S.RECOVERED_AT or 0.0)   # no beat could land in an outage
    return run.info.status == "RUNNING" and now - last > lost_after_s


def mark_lost(c, run) -> None:
    """End `run` FAILED as lost, its end time its last sign of life."""
    from . import sink as W
    last = last_sign_of_life(run)
    hb = run.data.tags.get(TAG)
    since = hb if hb else f"{beat(last).split()[0]} (its start; no heartbeat tag)"
    W.set_tags(c, run.info.run_id, {"failure_reason": f"{LOST_PREFIX}no heartbeat since {since}"})
    S.retrying(c.set_terminated, run.info.run_id, "FAILED", end_time=int(last * 1000))


def reap(c, experiment_id: str, lost_after_s: float, quiet: bool = False) -> list[str]:
    """Mark every lost run of the experiment; return their ids."""
    now = time.time()
    running = S.search_pages(c, experiment_id, "attributes.status = 'RUNNING'")
    lost = []
    suspects = [run for run in running if is_lost(run, lost_after_s, now)]
    if suspects:                # a heartbeat held up by an outage lands within the grace
        time.sleep(min(lost_after_s / 4, GRACE_S))
    for run in suspects:
        fresh = S.retrying(c.get_run, run.info.run_id)    # it may have beaten or ended meanwhile
        if is_lost(fresh, lost_after_s):
            mark_lost(c, fresh)
            lost.append(run.info.run_id)
    if lost and not quiet:
        print(f"[bench] marked {len(lost)} run(s) FAILED as lost (RUNNING with no heartbeat for "
              f"more than mlflow.lost_after_s={lost_after_s:g} s: their process died): "
              f"{', '.join(r[:12] for r in lost)}", file=sys.stderr, flush=True)
    return lost
