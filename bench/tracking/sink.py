"""Writing a run's params, tags and metrics, every call through `retrying`.
`MetricSink` is what the training loop logs into."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

from .store import retrying


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    """All params, in batches within MLflow's per-call limits."""
    from mlflow.entities import Param
    items = [Param(k[:250], str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        retrying(c.log_batch, run_id, params=items[i:i + 100])


def log_metrics(c, run_id: str, step: int, metrics: dict[str, float],
                timestamp_ms: int | None = None) -> None:
    """One step's metrics in one call (one sqlite transaction)."""
    from mlflow.entities import Metric
    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
    for i in range(0, len(items), 1000):
        retrying(c.log_batch, run_id, metrics=items[i:i + 1000])


class MetricSink:
    """`sink(step, metrics)` for bench.job.train: each step's metrics are queued
    and written by one background thread with `log_metrics` (so with
    `retrying`: an outage shorter than the patience loses nothing), so a store
    write never stalls training. `close()` drains the queue and joins the
    thread; a write that finally failed (TrackingUnavailable) is raised there,
    or at the next `sink(...)` call so that training stops early. Nothing is
    lost unless one of them raises.

    Our own thread rather than MLflow's `log_batch(synchronous=False)`: its
    logging thread polls its queue with a 1 s timeout, so ending every run
    cost up to a second of waiting, per job, in every sweep."""

    def __init__(self, c, run_id: str):
        self.c, self.run_id = c, run_id
        self.error: BaseException | None = None
        self.unwritten = 0          # points dropped after a fatal error: counted in the failure reason
        self.queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._write, name="bench-metrics", daemon=True)
        self.thread.start()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((step, {k: float(v) for k, v in metrics.items()}, int(time.time() * 1000)))

    def _write(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:      # after a fatal error the rest is dropped, loudly, in close()
                try:
                    log_metrics(self.c, self.run_id, *item)
                except BaseException as e:  # noqa: BLE001 -- handed to the training thread
                    self.error = e
                    self.unwritten += 1
            else:
                self.unwritten += 1

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error


def set_tags(c, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag
    items = [RunTag(k, str(v)[:8000]) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        retrying(c.log_batch, run_id, tags=items[i:i + 100])


def open_run(c, exp_id: str, tags: dict, resolved: dict, extra_params: dict = ()) -> str:
    """A new RUNNING run: tags (a first heartbeat among them, so a process
    killed before its heartbeat thread starts is still seen as lost), params =
    the flattened config (+ extra_params), artifact config.yaml."""
    from omegaconf import OmegaConf
    from . import identity, liveness
    tags = {**tags, liveness.TAG: liveness.beat()}
    run_id = retrying(c.create_run, exp_id, tags={k: str(v) for k, v in tags.items()}).info.run_id
    log_params(c, run_id, {**identity.flatten(resolved), **dict(extra_params)})
    retrying(c.log_text, run_id, OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    return run_id

