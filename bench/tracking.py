"""Where runs are logged.

`MLFLOW_TRACKING_URI` wins when set (a shared `mlflow server`, say); otherwise
the store is `sqlite:///<absolute path>/mlflow.db` in the directory the command
was started from. The path is made absolute before Hydra changes into per-job
directories, or every job would get a store of its own.

Outages (a shared `mlflow server` restarting, a sqlite store locked by another
writer): every call to the store goes through `retrying`, which retries
transient errors with exponential backoff (capped at 5 s) for at most
`PATIENCE_S` seconds per call (config key `mlflow.patience_s`, default 300,
set by `configure`), then raises `TrackingUnavailable` naming the URI. A job
therefore loses nothing across an outage shorter than the patience, and fails
with a clear error after a longer one. For http(s) stores, `configure` also
shrinks MLflow's own per-request retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=2,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=60; values
already in the environment win): MLflow's defaults (7 retries, factor 2,
120 s timeout) can hold a single call for minutes, outside our deadline.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(start_dir: Optional[str] = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # sqlite:///relative.db is relative to the cwd of whoever opens it
            rel = uri[len("sqlite:///"):]
            return "sqlite:///" + str((Path(start_dir or os.getcwd()) / rel).resolve())
        return uri
    return "sqlite:///" + str((Path(start_dir or os.getcwd()) / DEFAULT_DB).resolve())


# ---------------------------------------------------------------------------
# The store, the experiment and what every run is labelled with.
#
# Everything below talks to MLflow through `MlflowClient` with an explicit
# experiment id and run id: no fluent `set_experiment`/active-run state, which
# races between parallel workers (DESIGN.md §9).

import hashlib
import json
import queue
import subprocess
import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# tag keys shared by bench.job, bench.callbacks and bench.tables
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
LABEL_KEYS = ("estimator", "conditioning", "task", "latent", "kl", "free_bits",
              "free_bits_mode", "seed")
# config keys that do not change what a run computes: left out of config_hash
HASH_EXCLUDE = ("rerun", "progress", "mlflow", "hydra")


def client(uri: str | None = None):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri or resolve_tracking_uri())


PATIENCE_S = 300.0      # seconds one store call may keep failing transiently (mlflow.patience_s)
# MLflow's own HTTP retries, per request; see the module docstring
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
_TRANSIENT = ("locked", "busy", "connection", "timed out", "timeout", "temporarily",
              "503", "502", "504", "429", "max retries exceeded")


class TrackingUnavailable(RuntimeError):
    """The tracking store kept failing transiently for longer than the patience."""


def configure(patience_s: float | None = None, uri: str | None = None) -> None:
    """Set the outage patience of this process and, for an http(s) store,
    MLflow's per-request HTTP retry defaults (environment values win)."""
    global PATIENCE_S
    if patience_s is not None:
        PATIENCE_S = float(patience_s)
    if (uri or resolve_tracking_uri()).startswith(("http://", "https://")):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)


def _uri_of(fn: Callable) -> str:
    owner = getattr(fn, "__self__", None)
    tc = getattr(owner, "_tracking_client", None)
    return str(getattr(tc, "tracking_uri", None) or resolve_tracking_uri())


def retrying(fn: Callable[..., T], *args, patience_s: float | None = None, **kwargs) -> T:
    """Call fn, retrying transient store errors (sqlite 'database is locked'
    under parallel writers, a tracking server unreachable or restarting) with
    exponential backoff for at most `patience_s` (default PATIENCE_S) seconds;
    then `TrackingUnavailable` names the store. Other errors propagate at once."""
    patience = PATIENCE_S if patience_s is None else patience_s
    t0, delay, told = time.monotonic(), 0.05, False
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- MLflow wraps sqlite/http errors variously
            text = f"{type(e).__name__}: {e}".lower()
            if not any(s in text for s in _TRANSIENT):
                raise
            waited = time.monotonic() - t0
            if waited + delay > patience:
                raise TrackingUnavailable(
                    f"MLflow tracking store {_uri_of(fn)} failed for {waited:.0f} s "
                    f"(mlflow.patience_s={patience:g}) in {getattr(fn, '__name__', fn)}: "
                    f"{type(e).__name__}: {str(e)[:500]}") from e
            if waited >= 1.0 and not told:      # once per call, after ~1 s of failures
                told = True
                print(f"[bench] tracking store {_uri_of(fn)} unavailable ({type(e).__name__}); "
                      f"retrying for up to {patience:g} s (mlflow.patience_s)", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (sqlite tables) and the experiment if missing; return
    its id. Call once in the launching process, before parallel jobs start."""
    c = client(uri)
    exp = retrying(c.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    try:
        return retrying(c.create_experiment, name)
    except Exception:  # noqa: BLE001 -- created concurrently by another process
        exp = retrying(c.get_experiment_by_name, name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not tree and prefix:
            out[prefix[:-1]] = "{}"
        return out
    out[prefix[:-1]] = tree
    return out


def config_hash(resolved: dict) -> str:
    """Identity of a run: sha256 of the resolved config (seed included) minus
    the keys in HASH_EXCLUDE, which change where or how a run is logged but not
    what it computes."""
    kept = {k: v for k, v in resolved.items() if k not in HASH_EXCLUDE}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit() -> str:
    """HEAD of the project checkout, '+dirty' when the tree has changes; cached
    in BENCH_GIT_COMMIT so a sweep asks git once."""
    cached = os.environ.get("BENCH_GIT_COMMIT")
    if cached:
        return cached
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    os.environ["BENCH_GIT_COMMIT"] = commit
    return commit


def finished_run_with_hash(c, experiment_id: str, chash: str) -> str | None:
    """Id of a FINISHED run of this experiment with tag config_hash == chash."""
    runs = retrying(c.search_runs, [experiment_id],
                    filter_string=f"tags.config_hash = '{chash}' and attributes.status = 'FINISHED'",
                    max_results=1)
    return runs[0].info.run_id if runs else None


def children(c, experiment_id: str, parent_id: str) -> list:
    """Every child run of a sweep's parent (paged)."""
    out, token = [], None
    while True:
        page = retrying(c.search_runs, [experiment_id],
                        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                        max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


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
    """`sink(step, metrics)` for bench.train: each step's metrics are queued
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


def labels(resolved: dict) -> dict[str, str]:
    """The tags every run carries, one name end to end (DESIGN.md §10): the
    estimator tag is the conf file stem and Estimator.name."""
    kl = resolved.get("kl", {})
    return {"estimator": resolved["estimator"]["name"],
            "conditioning": resolved["conditioning"]["name"],
            "task": resolved["task"]["name"],
            "latent": resolved["latent"]["name"],
            "kl": kl.get("name"),
            "free_bits": kl.get("free_bits"),
            "free_bits_mode": kl.get("free_bits_mode"),
            "seed": resolved.get("seed")}


def ids_from_env() -> dict[str, str]:
    """What the launching process exported for its jobs (bench.callbacks)."""
    keys = ("BENCH_EXPERIMENT_ID", "BENCH_PARENT_RUN_ID", "BENCH_SWEEP_ID")
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


def sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


