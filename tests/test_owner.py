"""One owner per run (bench.job.owner): a process that finds its config
trained by a live process touches nothing and says so in one line; a store
that answers "no such tag" is not an outage."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench.job import owner as OW
from bench.tracking import liveness as L
from bench.tracking import store as S
from tests.test_resume import JOB, _finish, _history, _runs, _same_points, _start, _wait
from tests.test_resume import reference  # noqa: F401 -- the uninterrupted run's points, a fixture


class _Err(Exception):
    pass


def test_a_run_id_with_an_http_status_in_it_is_no_outage():
    # the message of deleting a tag a concurrent rerun deleted first: it was
    # retried for the whole patience when the run id held "503"
    assert not S.transient(_Err("No tag with name: failure_reason in run with id a5031f29c4"))
    assert not S.transient(_Err("run 4290bd not found"))
    assert S.transient(_Err("API request failed with error code 503 != 200"))
    assert S.transient(_Err("sqlite3.OperationalError: database is locked"))


def test_a_missing_tag_is_answered_at_once_not_retried(tracking_uri):
    c = S.client(tracking_uri)
    run_id = c.create_run(S.ensure_experiment(tracking_uri, "e")).info.run_id
    t0 = time.monotonic()
    with S.patience(30), pytest.raises(Exception, match="No tag with name: failure_reason") as e:
        S.retrying(c.delete_tag, run_id, "failure_reason")
    assert not isinstance(e.value, S.TrackingUnavailable)
    assert S.forgiving(c.delete_tag, run_id, "failure_reason") is None
    assert time.monotonic() - t0 < 5                # not the 30 s patience


def test_a_held_lock_refuses_a_second_owner_naming_the_holder(tmp_path):
    ckpt = tmp_path / "checkpoints" / "abc.pt"
    first = OW.acquire(ckpt, "abc", "2026-01-01T00:00:00.000Z host=n1 pid=7")
    with pytest.raises(OW.Held, match=r"config_hash abc .*host=n1 pid=7; lock .*abc\.lock"):
        OW.acquire(ckpt, "abc", L.beat())
    first.release()
    assert not (tmp_path / "checkpoints").exists()      # the folder it made, left empty, is gone
    second = OW.acquire(ckpt, "abc", L.beat())          # free again once released
    assert (tmp_path / "checkpoints" / "abc.lock").read_text().split()[1] == \
        f"host={socket.gethostname()}"
    second.release()


def test_a_live_heartbeat_holds_the_run_and_a_dead_local_one_is_marked_lost(tracking_uri):
    c = S.client(tracking_uri)
    exp = S.ensure_experiment(tracking_uri, "e")
    elsewhere = c.create_run(exp, tags={"config_hash": "h1",
                                        L.TAG: L.beat().replace(socket.gethostname(), "othernode")})
    with pytest.raises(OW.Held, match=f"run {elsewhere.info.run_id}.*host=othernode"):
        OW.check_latest(c, exp, "h1", lost_after_s=60)
    assert c.get_run(elsewhere.info.run_id).info.status == "RUNNING"   # nothing written to it

    child = subprocess.Popen(["true"])
    child.wait()                                     # a pid of this host that is gone
    dead = L.beat().replace(f"pid={os.getpid()}", f"pid={child.pid}")
    gone = c.create_run(exp, tags={"config_hash": "h2", L.TAG: dead})
    OW.check_latest(c, exp, "h2", lost_after_s=60)   # no Held: its holder is dead
    run = c.get_run(gone.info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"].startswith("lost: ")
    OW.check_latest(c, exp, "h3", lost_after_s=60)   # a config without runs


def held_line(err: str) -> list[str]:
    return [line for line in err.splitlines() if "is being trained by another process" in line]


def together(cwd: Path, uri: str, *args: str) -> list[subprocess.CompletedProcess]:
    """The same command twice, started at the same moment."""
    procs = [_start(cwd, uri, *args) for _ in range(2)]
    return [_finish(p) for p in procs]


@pytest.mark.slow
@pytest.mark.faults
def test_two_reruns_of_an_interrupted_run_startedtogether(tmp_path, tracking_uri, reference):
    """SIGTERM after a checkpoint, then the same command twice at once: one
    resumes and finishes the run, the other exits in one line; the FINISHED
    run keeps no failure reason and every point once."""
    proc = _start(tmp_path, tracking_uri, *JOB)
    try:
        def past_a_checkpoint():
            return list((tmp_path / "checkpoints").glob("*.pt"))
        _wait(past_a_checkpoint, 240, "a checkpoint", proc)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        _finish(proc)
    (killed,) = _runs(tracking_uri)[1]
    assert killed.info.status == "KILLED"

    outs = together(tmp_path, tracking_uri, *JOB)
    assert sorted(o.returncode for o in outs) == [0, OW.EXIT_HELD], [o.stderr[-2000:] for o in outs]
    (held,) = [o for o in outs if o.returncode == OW.EXIT_HELD]
    assert len(held_line(held.stderr)) == 1 and "Traceback" not in held.stderr
    _, runs = _runs(tracking_uri)
    assert [r.info.run_id for r in runs] == [killed.info.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    _same_points(_history(tracking_uri, run.info.run_id), reference)
