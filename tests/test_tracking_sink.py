"""bench.tracking's MetricSink and retrying on a real sqlite store: every
point arrives with its own step and timestamp, a store that keeps failing
ends in TrackingUnavailable (never silence), and a short outage is retried."""
from __future__ import annotations

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

