"""Shared fixtures.

Every test runs with one torch thread: the models are small (launch-bound, so
more threads only contend on a 2-core machine), and it is what `bench.run`
uses per job (`threads: 1`).

`tracking_uri`: a fresh sqlite MLflow store in the test's tmp dir, exported as
MLFLOW_TRACKING_URI (subprocesses inherit it). Creating a store runs MLflow's
schema migrations (seconds), so one empty store is made per session and copied.
"""
from __future__ import annotations

import shutil

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory):
    from mlflow.tracking import MlflowClient
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, _empty_mlflow_db) -> str:
    db = tmp_path / "mlflow.db"
    shutil.copy(_empty_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
