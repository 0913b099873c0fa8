"""Where runs are logged.

`MLFLOW_TRACKING_URI` wins when set (a shared `mlflow server`, say); otherwise
the store is `sqlite:///<absolute path>/mlflow.db` in the directory the command
was started from. The path is made absolute before Hydra changes into per-job
directories, or every job would get a store of its own.

Outages (a shared `mlflow server` restarting, a sqlite store locked by another
writer): every call to the store goes through `retrying`, which retries
transient errors with exponential backoff (capped at 5 s) for at most
`PATIENCE_S` seconds per call (config key `mlflow.patience_s`, default 300,
set by `configure`), then raises `TrackingUnavailable` naming the URI. A
full disk (ENOSPC, sqlite's "database or disk is full") is such an outage
too, since space may be freed meanwhile: the error then says "disk full" and
names the file. A job therefore loses nothing across an outage shorter than the patience, and fails
with a clear error after a longer one. For http(s) stores, `configure` also
shrinks MLflow's own per-request retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=2,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=60; values
already in the environment win): MLflow's defaults (7 retries, factor 2,
120 s timeout) can hold a single call for minutes, outside our deadline.

Everything talks to MLflow through `MlflowClient` with an explicit experiment
id and run id: no fluent `set_experiment`/active-run state, which races
between parallel workers. Readers (bench.results) go through `retrying` too.
"""
from __future__ import annotations

import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, TypeVar

from .identity import PARENT_TAG

T = TypeVar("T")

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


def client(uri: str | None = None):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri or resolve_tracking_uri())


PATIENCE_S = 300.0      # seconds one store call may keep failing transiently (mlflow.patience_s)
# MLflow's own HTTP retries, per request; see the module docstring
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
_TRANSIENT = ("locked", "busy", "connection", "timed out", "timeout", "temporarily",
              "max retries exceeded")
# HTTP statuses of a server that is restarting or overloaded, as whole numbers:
# a run id in the message (`...in run with id 5031f2...`) is no status code
_TRANSIENT_STATUS = re.compile(r"(?<![\w.])(502|503|504|429)(?![\w.])")
# MLflow's answer that a thing does not exist or is not valid is a fact, not an outage
_PERMANENT_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS")
# a full disk is an outage, not a crash: space may be freed within the patience
_DISK_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")


def disk_full(e: BaseException) -> Optional[str]:
    """The path that could not be written when `e` (or an error it came
    from) says the disk is full, '' when it names none; None otherwise."""
    import errno
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(e.filename or "")
        if any(w in str(e).lower() for w in _DISK_FULL):
            return ""
        e = e.__cause__ or e.__context__
    return None


class TrackingUnavailable(RuntimeError):
    """The tracking store kept failing transiently for longer than the patience."""


# Set by the first job of this process that met an outage longer than the
# patience (bench.job.runner): later jobs of the sweep are not started, since
# each would wait as long, and the sweep's summary says why (callbacks).
SWEEP_STOPPED: Optional[str] = None
# time.time() when a store call of this process last succeeded after failing:
# no run could write a heartbeat during that outage (bench.tracking.liveness)
RECOVERED_AT: Optional[float] = None
NOT_STARTED: list = []


@contextmanager
def patience(seconds: float):
    """PATIENCE_S = seconds within the block (recording a failure after an outage)."""
    global PATIENCE_S
    old, PATIENCE_S = PATIENCE_S, float(seconds)
    try:
        yield
    finally:
        PATIENCE_S = old


def configure(patience_s: float | None = None, uri: str | None = None) -> None:
    """Set the outage patience of this process and, for an http(s) store,
    MLflow's per-request HTTP retry defaults (environment values win); for a
    sqlite store, the driver's busy timeout (below)."""
    global PATIENCE_S, _BUSY_MS
    if patience_s is not None:
        PATIENCE_S = float(patience_s)
    uri = uri or resolve_tracking_uri()
    if uri.startswith(("http://", "https://")):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
    if uri.startswith("sqlite:"):
        # MLflow sets `PRAGMA busy_timeout = 20000` on every session, so one
        # attempt on a locked store blocked 20 s: a 5 s patience gave up after
        # 20 and never printed its retry notice. A fifth of the patience, within
        # 0.1-5 s, leaves several attempts (and the notice) inside it.
        _BUSY_MS = int(min(5000, max(100, PATIENCE_S * 1000 / 5)))
        _shorten_busy_timeout()
        # MLflow logs every failed attempt at ERROR with its traceback (~50 lines
        # each, thousands in a lock); the error it raises says the same once, and
        # `retrying` prints one notice per call instead
        import logging
        logging.getLogger("mlflow.store.db.utils").addFilter(_drop_attempt_errors)


def _drop_attempt_errors(record) -> bool:
    return not (record.levelname == "ERROR" and "SQLAlchemy database error" in record.getMessage())


_BUSY_MS = 20000
_BUSY_HOOKED = False


def _shorten_busy_timeout() -> None:
    global _BUSY_HOOKED
    if _BUSY_HOOKED:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def rewrite(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("PRAGMA BUSY_TIMEOUT"):
            statement = f"PRAGMA busy_timeout = {_BUSY_MS};"
        return statement, parameters

    event.listen(Engine, "before_cursor_execute", rewrite, retval=True)
    _BUSY_HOOKED = True


def check_store(uri: str) -> None:
    """Fail at once, naming the path and the cause, when a sqlite store cannot
    be opened or written: MLflow retries creating its engine for ~100 s and
    then names no path (an unopenable store is not an outage that passes).
    Other stores are checked by their first call, within the patience."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3
    path = Path(uri[len("sqlite:///"):])
    try:
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise PermissionError(f"{path} is not readable and writable by this user")
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(path), timeout=1.0)
        try:
            con.execute("PRAGMA schema_version").fetchone()     # 'file is not a database' shows here
        finally:
            con.close()
    except (OSError, sqlite3.Error) as e:
        if any(w in str(e).lower() for w in ("locked", "busy")):
            return                  # another writer: `retrying` waits for it
        raise TrackingUnavailable(f"MLflow tracking store {uri} cannot be opened: "
                                  f"{type(e).__name__}: {e}") from None


def _store_path(uri: str) -> str:
    """The file of a local sqlite store, else the URI."""
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri


def _uri_of(fn: Callable) -> str:
    owner = getattr(fn, "__self__", None)
    tc = getattr(owner, "_tracking_client", None)
    return str(getattr(tc, "tracking_uri", None) or resolve_tracking_uri())


def transient(e: BaseException) -> bool:
    """Whether `e` says the store is away for a while (retried) rather than
    that the request was wrong (raised at once)."""
    if getattr(e, "error_code", None) in _PERMANENT_CODES:
        return False
    text = f"{type(e).__name__}: {e}".lower()
    return any(s in text for s in _TRANSIENT) or _TRANSIENT_STATUS.search(text) is not None


def forgiving(fn: Callable[..., T], *args, **kwargs) -> Optional[T]:
    """`retrying(fn, ...)`, with None where the store answers that the thing
    is not there (deleting a tag another process deleted first)."""
    try:
        return retrying(fn, *args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- MlflowException, whatever the store
        if getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def retrying(fn: Callable[..., T], *args, patience_s: float | None = None, **kwargs) -> T:
    """Call fn, retrying transient store errors (sqlite 'database is locked'
    under parallel writers, a tracking server unreachable or restarting) with
    exponential backoff for at most `patience_s` (default PATIENCE_S) seconds;
    then `TrackingUnavailable` names the store. Other errors propagate at once."""
    patience = PATIENCE_S if patience_s is None else patience_s
    t0, delay, told = time.monotonic(), 0.05, False
    global RECOVERED_AT
    while True:
        try:
            out = fn(*args, **kwargs)
            if delay > 0.05:                    # it had failed: the store just came back
                RECOVERED_AT = time.time()
            return out
        except Exception as e:  # noqa: BLE001 -- MLflow wraps sqlite/http errors variously
            full = disk_full(e)
            if full is None and not transient(e):
                raise
            waited = time.monotonic() - t0
            uri = _uri_of(fn)
            why = "" if full is None else f"disk full ({full or _store_path(uri)}); "
            if waited + delay > patience:
                first = (str(e).strip().splitlines() or [""])[0]    # not MLflow's SQL echo
                raise TrackingUnavailable(
                    f"MLflow tracking store {uri} failed for {waited:.0f} s "
                    f"(mlflow.patience_s={patience:g}) in {getattr(fn, '__name__', fn)}: "
                    f"{why}{type(e).__name__}: {first[:300]}") from e
            if waited >= 1.0 and not told:      # once per call, after ~1 s of failures
                told = True
                print(f"[bench] tracking store {uri} unavailable ({why}{type(e).__name__}); "
                      f"retrying for up to {patience:g} s (mlflow.patience_s)", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@contextmanager
def creation_lock(uri: str):
    """An exclusive lock on `<db>.lock` beside a local sqlite store, held
    while this process creates or migrates the store and its experiment.
    MLflow's schema migration is not safe against a concurrent one: two
    commands started at the same moment on a new store failed with
    `duplicate column name` or `table _alembic_tmp_... already exists`.
    The lock file stays (removing it would race with a waiter); where it
    cannot be made (a read-only folder, no fcntl) nothing is locked."""
    handle = None
    if uri.startswith("sqlite:///"):
        try:
            import fcntl
            handle = open(uri[len("sqlite:///"):] + ".lock", "a")
            fcntl.flock(handle, fcntl.LOCK_EX)      # blocks while another process creates it
        except (ImportError, OSError):
            if handle is not None:
                handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()                          # closing releases the lock


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (sqlite tables) and the experiment if missing; return
    its id. Call once in the launching process, before parallel jobs start;
    commands started together are serialised by `creation_lock`."""
    check_store(uri)
    with creation_lock(uri):
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


def search_pages(c, experiment_id: str, filter_string: str = "", page_size: int = 1000,
                 **kwargs) -> list:
    """Every active run of the experiment matching the filter, page by page,
    each page retried: the one paging loop of the harness."""
    from mlflow.entities import ViewType
    out, token = [], None
    while True:
        page = retrying(c.search_runs, [experiment_id], filter_string, ViewType.ACTIVE_ONLY,
                        max_results=page_size, page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def finished_run_with_hash(c, experiment_id: str, chash: str) -> str | None:
    """Id of a FINISHED run of this experiment with tag config_hash == chash."""
    runs = retrying(c.search_runs, [experiment_id],
                    filter_string=f"tags.config_hash = '{chash}' and attributes.status = 'FINISHED'",
                    max_results=1)
    return runs[0].info.run_id if runs else None


def children(c, experiment_id: str, parent_id: str) -> list:
    """Every child run of a sweep's parent."""
    return search_pages(c, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'")


@contextmanager
def named_exit():
    """A store that stays unavailable ends the command with one line naming
    the URI and the cause, exit status 1, not Hydra's chained traceback
    (HYDRA_FULL_ERROR=1 keeps the traceback)."""
    try:
        yield
    except TrackingUnavailable as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"[bench] error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
