"""Liveness on a real sqlite store, in-process: the heartbeat tag, which RUNNING
runs are lost, how they are marked, and how bench.tables lists them. The
kill -9 of real sweeps is in tests/test_faults.py."""
from __future__ import annotations

import time

import pytest

from bench.config import compose, plain
from bench.config.validate import ConfigError, validate
from bench.results import tables
from bench.results.store import load_study
from bench.tracking import liveness as L
from bench.tracking import store as S

EXP = "discrete-latent-bench"


@pytest.fixture
def store(tracking_uri):
    c = S.client(tracking_uri)
    return c, S.ensure_experiment(tracking_uri, EXP)


def _run(c, exp_id, beat_age_s=None, **tags):
    """A RUNNING job run whose last heartbeat was beat_age_s ago (None: no tag)."""
    base = {"estimator": "e", "conditioning": "c", "task": "t", "latent": "categorical",
            "kl": "constant", "free_bits": "0.0", "seed": "0", "config_hash": "h", **tags}
    if beat_age_s is not None:
        base[L.TAG] = L.beat(time.time() - beat_age_s)
    return c.create_run(exp_id, tags=base).info.run_id


def test_heartbeat_tag_names_time_host_and_pid():
    value = L.beat(1_700_000_000.25)
    assert value.startswith("2023-11-14T22:13:20.250Z host=") and " pid=" in value
    assert L.beat_time(value) == pytest.approx(1_700_000_000.25)
    assert L.beat_time(None) is None and L.beat_time("garbage") is None


def test_stale_run_is_marked_lost_and_a_fresh_one_is_not(store):
    c, exp = store
    stale = _run(c, exp, beat_age_s=120, config_hash="a")
    fresh = _run(c, exp, beat_age_s=1, config_hash="b")
    done = _run(c, exp, beat_age_s=500, config_hash="c")
    c.set_terminated(done, "FINISHED")
    hb = c.get_run(stale).data.tags[L.TAG]

    assert L.reap(c, exp, lost_after_s=60) == [stale]
    r = c.get_run(stale)
    assert r.info.status == "FAILED"
    assert r.data.tags["failure_reason"] == f"lost: no heartbeat since {hb}"
    assert abs(r.info.end_time / 1000 - L.beat_time(hb)) < 0.01   # ended at its last sign of life
    assert c.get_run(fresh).info.status == "RUNNING"
    assert c.get_run(done).info.status == "FINISHED"
    assert L.reap(c, exp, lost_after_s=60) == []                  # marking is done once


def test_run_without_heartbeat_counts_from_its_start(store):
    c, exp = store
    old = _run(c, exp)
    assert L.reap(c, exp, lost_after_s=60) == []                  # just started
    assert L.reap(c, exp, lost_after_s=0) == [old]
    assert "its start; no heartbeat tag" in c.get_run(old).data.tags["failure_reason"]


def test_heartbeat_thread_keeps_a_run_alive(store):
    c, exp = store
    rid = _run(c, exp, beat_age_s=30)
    beat = L.Heartbeat(c, rid, every_s=0.2)
    try:
        deadline = time.monotonic() + 10
        while time.time() - L.last_sign_of_life(c.get_run(rid)) > 5:
            assert time.monotonic() < deadline, "no heartbeat written"
            time.sleep(0.1)
        assert L.reap(c, exp, lost_after_s=5) == []
    finally:
        beat.stop()
    assert not beat.thread.is_alive()


def test_tables_mark_lost_runs_and_list_them_apart(store, tmp_path):
    c, exp = store
    ok = _run(c, exp, beat_age_s=0, config_hash="ok")
    c.log_metric(ok, "val/elbo", -40.0, step=6)
    c.set_terminated(ok, "FINISHED")
    lost = _run(c, exp, beat_age_s=3600, config_hash="dead")
    live = _run(c, exp, beat_age_s=0, config_hash="live")
    failed = _run(c, exp, beat_age_s=0, config_hash="bad", failure_reason="ValueError: x")
    c.set_terminated(failed, "FAILED")

    study = load_study(c, EXP, lost_after_s=60)
    assert c.get_run(lost).info.status == "FAILED"
    assert c.get_run(live).info.status == "RUNNING"
    tables.write_results(c, study, tmp_path)
    status = (tmp_path / "status.md").read_text()
    assert "1 failed, 0 killed, 1 lost (no heartbeat), 1 other (running, heartbeat fresh)" in status
    rows = (tmp_path / "status_runs.csv").read_text()
    assert f"FAILED (lost)" in rows and "lost: no heartbeat since" in rows
    sweeps = (tmp_path / "status_sweeps.csv").read_text().splitlines()
    head, row = sweeps[0].split(","), sweeps[1].split(",")
    got = dict(zip(head, row))
    assert (got["runs.failed"], got["runs.lost"], got["runs.other"]) == ("1", "1", "1")


def test_silence_during_an_outage_this_process_waited_out_is_no_death(store, monkeypatch):
    """Heartbeats cannot land while the store is down: a reaper that just saw
    the store come back counts silence from then, so a live run whose last
    beat is older than lost_after_s only because of the outage is not marked."""
    c, exp = store
    silent = _run(c, exp, beat_age_s=120)
    monkeypatch.setattr(S, "RECOVERED_AT", time.time() - 5)
    assert L.reap(c, exp, lost_after_s=60) == []
    assert c.get_run(silent).info.status == "RUNNING"
    monkeypatch.setattr(S, "RECOVERED_AT", time.time() - 70)    # long enough ago: it is dead
    assert L.reap(c, exp, lost_after_s=60) == [silent]


def test_a_suspect_whose_heartbeat_lands_within_the_grace_is_kept(store, monkeypatch):
    """The reaper reads a suspect again after a grace: a live run's heartbeat,
    held up by an outage the reaper did not see, lands in between."""
    c, exp = store
    late = _run(c, exp, beat_age_s=120)
    waits = []

    def sleep(s):               # the beat arrives while the reaper waits
        waits.append(s)
        c.set_tag(late, L.TAG, L.beat())
    monkeypatch.setattr(L.time, "sleep", sleep)
    assert L.reap(c, exp, lost_after_s=60) == []
    assert waits == [L.GRACE_S] and c.get_run(late).info.status == "RUNNING"


@pytest.mark.parametrize("overrides, key", [
    (["mlflow.heartbeat_s=0"], "mlflow.heartbeat_s"),
    (["mlflow.heartbeat_s=10", "mlflow.lost_after_s=20"], "mlflow.lost_after_s"),
])
def test_liveness_keys_are_validated(overrides, key):
    with pytest.raises(ConfigError, match=key):
        validate(plain(compose(overrides)))
