"""A real `mlflow server` for tests, on 127.0.0.1 and a free port.

    from tests.mlflow_server import mlflow_server
    with mlflow_server("sqlite:////tmp/x/mlflow.db", Path("/tmp/x/artifacts")) as srv:
        MlflowClient(srv.url) ...            # srv.url = "http://127.0.0.1:<port>"

Contract: the server runs in a process group of its own (it may spawn uvicorn or
gunicorn workers); the context manager polls `/health` until it answers 200 or
`timeout_s` passes (then raises with the tail of the server's log), and on exit
stops exactly that group, by the pid it started: SIGTERM, then SIGKILL after
`grace_s`. Artifacts are proxied by the server (`--artifacts-destination`), so
clients need no access to the artifact folder. `srv.start_s` is how long the
server took to answer.

Restarting on the same address (an outage test): `mlflow_server(backend, artifacts,
port=srv.port)` after the first one's block has ended. uvicorn (MLflow's default
server; asyncio's create_server) and gunicorn both bind with SO_REUSEADDR, so the
port's TIME_WAIT connections from the stopped server do not block it; only another
process taking the port in between would, and then the start fails with the log tail.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.processes import stop_group


@dataclass
class Server:
    url: str
    port: int
    pid: int
    start_s: float
    log: Path


def free_port() -> int:
    # Bind to port 0 and let the kernel choose; another process could take it
    # before the server binds, so callers retry on a failed start.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, *, timeout_s: float = 120.0,
                  grace_s: float = 10.0, workers: int = 1,
                  port: int | None = None) -> Iterator[Server]:
    artifacts = Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts.parent / "mlflow_server.log"
    port = free_port() if port is None else port       # a given port: a restart on it
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--backend-store-uri", backend_uri,
           "--artifacts-destination", str(artifacts)]
    # The job executor (a huey consumer with a pool of processes, for GenAI
    # scorers) is not part of tracking and doubles the start-up time.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the server's store is backend_uri, nothing else
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=artifacts.parent, start_new_session=True)
    try:
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                tail = log.read_text(errors="replace")[-3000:]
                state = f"exited with {proc.returncode}" if proc.poll() is not None else \
                    f"did not answer within {timeout_s:.0f} s"
                raise RuntimeError(f"mlflow server on {url} {state}; log tail:\n{tail}")
            time.sleep(0.25)
        yield Server(url, port, proc.pid, time.monotonic() - t0, log)
    finally:
        stop_group(proc, grace_s)
