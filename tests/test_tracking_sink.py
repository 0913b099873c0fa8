"""bench.tracking's MetricSink and retrying on a real sqlite store: every
point arrives with its own step and timestamp, a store that keeps failing
ends in TrackingUnavailable (never silence), and a short outage is retried."""
from __future__ import annotations

import errno
import sqlite3
import time

import pytest

from bench.tracking import store as T
from bench.tracking.sink import MetricSink


def _run(uri: str) -> tuple[object, str]:
    c = T.client(uri)
    exp = T.ensure_experiment(uri, "sink")
    return c, c.create_run(exp).info.run_id


def test_every_point_arrives_in_order_with_its_time(tracking_uri):
    c, run_id = _run(tracking_uri)
    sink = MetricSink(c, run_id)
    t0 = int(time.time() * 1000)
    for step in range(0, 500, 10):
        sink(step, {"train/loss": step * 0.5, "perf/steps_per_s": 100.0 + step})
    sink.close()
    hist = c.get_metric_history(run_id, "train/loss")
    assert [m.step for m in hist] == list(range(0, 500, 10))
    assert [m.value for m in hist] == [s * 0.5 for s in range(0, 500, 10)]
    assert all(m.timestamp >= t0 for m in hist)
    assert len(c.get_metric_history(run_id, "perf/steps_per_s")) == 50
    assert not sink.thread.is_alive()


class _Flaky:
    """Wraps a client; log_batch fails with a transient-looking error `fails` times."""

    def __init__(self, c, fails: int):
        self.c, self.fails, self.calls = c, fails, 0

    def log_batch(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.fails:
            raise ConnectionError("connection refused (test)")
        return self.c.log_batch(*args, **kwargs)


def test_short_outage_is_retried_and_loses_nothing(tracking_uri):
    c, run_id = _run(tracking_uri)
    flaky = _Flaky(c, fails=3)
    sink = MetricSink(flaky, run_id)
    for step in range(5):
        sink(step, {"a": float(step)})
    sink.close()
    assert flaky.calls == 3 + 5
    assert [m.value for m in c.get_metric_history(run_id, "a")] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_long_outage_raises_tracking_unavailable(tracking_uri, monkeypatch):
    c, run_id = _run(tracking_uri)
    monkeypatch.setattr(T, "PATIENCE_S", 0.3)
    sink = MetricSink(_Flaky(c, fails=10**9), run_id)
    sink(0, {"a": 1.0})
    with pytest.raises(T.TrackingUnavailable, match="patience_s=0.3"):
        sink.close()
    # a sink whose writer already failed refuses further points at once
    with pytest.raises(T.TrackingUnavailable):
        sink(1, {"a": 2.0})


def test_non_transient_errors_are_not_retried(tracking_uri):
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("bad metric name")
    with pytest.raises(ValueError, match="bad metric name"):
        T.retrying(broken)
    assert len(calls) == 1



@pytest.mark.parametrize("error, path", [
    (lambda: sqlite3.OperationalError("database or disk is full"), None),     # None: the store's file
    (lambda: OSError(errno.ENOSPC, "No space left on device", "/data/mlruns/x.txt"),
     "/data/mlruns/x.txt"),
])
def test_a_full_disk_is_an_outage_named_disk_full(tracking_uri, monkeypatch, error, path):
    """Retried within the patience like any outage (space may be freed), then
    TrackingUnavailable saying "disk full" and naming the path."""
    calls = []

    def full():
        calls.append(1)
        raise error()
    monkeypatch.setattr(T, "PATIENCE_S", 0.3)
    with pytest.raises(T.TrackingUnavailable) as e:
        T.retrying(full)
    assert len(calls) > 1                   # retried, not a crash at the first error
    assert f"disk full ({path or tracking_uri[len('sqlite:///'):]})" in str(e.value)


def test_a_run_whose_metrics_meet_a_full_disk_ends_failed_saying_so(tracking_uri, tmp_path,
                                                                     monkeypatch):
    """The job's metric writes fail with sqlite's "database or disk is full":
    the run ends FAILED, its reason says disk full, names the store's file and
    counts the points not written; the command exits 1."""
    from mlflow.tracking import MlflowClient

    from bench.job.runner import run_job
    from tests.compose import compose_config
    real = MlflowClient.log_batch

    def log_batch(self, run_id, metrics=(), *args, **kwargs):
        if metrics:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, run_id, metrics, *args, **kwargs)
    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    cfg = compose_config(["train.steps=3", "train.log_every=1", "train.eval_every=3",
                          "eval.grad_stats=false", "mlflow.patience_s=0.3",
                          f"train.checkpoint_dir={tmp_path / 'ck'}"])
    with pytest.raises(SystemExit) as e:
        run_job(cfg)
    assert e.value.code == 1
    c = T.client(tracking_uri)
    exp = c.get_experiment_by_name(cfg.mlflow.experiment)
    (run,) = T.search_pages(c, exp.experiment_id)
    reason = run.data.tags["failure_reason"]
    assert run.info.status == "FAILED"
    assert f"disk full ({tracking_uri[len('sqlite:///'):]})" in reason, reason
    assert "metric point(s) not written" in reason, reason
