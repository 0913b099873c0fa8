"""Shared fixtures.

Every test runs with one torch thread: the models are small (launch-bound, so
more threads only contend on a 2-core machine), and it is what `bench.run`
uses per job (`threads: 1`).

`tracking_uri`: a fresh sqlite MLflow store in the test's tmp dir, exported as
MLFLOW_TRACKING_URI (subprocesses inherit it). Creating a store runs MLflow's
schema migrations (seconds), so one empty store is made per session and copied.
"""
from __future__ import annotations

import pytest
import torch

from tests.stores import empty_db


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    uri = empty_db(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(autouse=True)
def _no_outage_memory(monkeypatch):
    """A store outage one test simulates must not make another test's stale
    runs look alive (liveness counts silence from the last recovery)."""
    from bench.tracking import store
    monkeypatch.setattr(store, "RECOVERED_AT", None)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the results code saves, keyed by file name
    (a spy on Figure.savefig that still writes the file)."""
    from bench.results import plots
    saved = {}
    real = plots.plt.Figure.savefig

    def spy(fig, path, *a, **kw):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return real(fig, path, *a, **kw)
    monkeypatch.setattr(plots.plt.Figure, "savefig", spy)
    return saved
