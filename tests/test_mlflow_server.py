"""The MLflow UI path for real: `mlflow server` on 127.0.0.1 against a test
store, a sweep (parent + children with metrics) logged through the client, and
checked through the server's REST API; bench.tables run against the server;
and, where Chromium is installed, a headless screenshot of the runs table.

The sweep is hand-made in the harness's layout (tests/test_tables_store.py);
swap `log_sweep` for a real `python -m bench.run -m ...` with
MLFLOW_TRACKING_URI=srv.url once the harness lands.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.mlflow_server import mlflow_server
from tests.stores import empty_db
from tests.test_tables_store import EXP, job, make_sweep

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
STEPS = (0, 10, 20)


def api(url: str, route: str, body: dict | None = None, **query) -> dict:
    """GET (query) or POST (JSON body) to the REST API; the decoded answer."""
    full = f"{url}{route}" + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(empty_db(folder), folder / "artifacts") as srv:
        print(f"mlflow server answered after {srv.start_s:.1f} s")
        yield srv


@pytest.fixture(scope="module")
def sweep(server):
    client = MlflowClient(server.url)
    exp = client.create_experiment(EXP)
    jobs = [job(e, c, seed=s, val__elbo=-100.0 - s) for e in ("gumbel", "reinforce")
            for c in ("concat", "film") for s in (0, 1)]
    for j in jobs:
        j["curves"] = {"val/elbo": [(t, -200.0 + t) for t in STEPS],
                       "grad/log10_var": [(t, 1.0) for t in STEPS]}
    parent, children = make_sweep(client, exp, "sweep-srv", jobs, skipped=1)
    return exp, parent, children


def test_rest_api_has_the_sweep_parent_children_and_metrics(server, sweep):
    exp, parent, children = sweep
    runs = api(server.url, "/api/2.0/mlflow/runs/search",
               {"experiment_ids": [exp], "max_results": 1000})["runs"]
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert set(by_id) == {parent, *children}
    tags = {rid: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for rid, r in by_id.items()}
    assert "mlflow.parentRunId" not in tags[parent] and tags[parent]["sweep.skipped"] == "1"
    for rid in children:
        assert tags[rid]["mlflow.parentRunId"] == parent and tags[rid]["sweep_id"] == "sweep-srv"
        assert by_id[rid]["info"]["status"] == "FINISHED"
        final = {m["key"]: m for m in by_id[rid]["data"]["metrics"]}
        assert final["val/elbo"]["step"] == "100" or final["val/elbo"]["step"] == 100
        history = api(server.url, "/api/2.0/mlflow/metrics/get-history",
                      run_id=rid, metric_key="val/elbo")["metrics"]
        assert sorted(int(m.get("step", 0)) for m in history) == [*STEPS, 100]


def test_bench_tables_against_the_server(server, sweep, tmp_path):
    _, parent, children = sweep
    from bench.results.store import _bulk_server, fetch_curves
    client = MlflowClient(server.url)
    # the server's get-history-bulk route itself (fetch_curves would fall back quietly)
    points = _bulk_server(client._tracking_client.store, children, "val/elbo")
    assert len(points) == len(children) * (len(STEPS) + 1)
    curves = fetch_curves(client, children, ["val/elbo"])
    assert sorted(curves["step"].unique()) == [*STEPS, 100]

    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench.tables", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| digits | gumbel | film | 2 | -100.50 ± 0.50 |" in (tmp_path / "elbo.md").read_text()
    listed = api(server.url, "/api/2.0/mlflow/artifacts/list", run_id=parent, path="tables/figures")
    assert {"tables/figures/elbo_curves.png", "tables/figures/heatmap_val_elbo.png"} <= {
        f["path"] for f in listed.get("files", [])}


def test_ui_runs_table_screenshot(server, sweep, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); "
                    "the REST checks above ran all the same")
    exp, _, _ = sweep
    shot = tmp_path / "runs.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           # the UI is a single-page app: give it virtual time to fetch and render
           "--virtual-time-budget=15000", f"--screenshot={shot}", "--window-size=1400,900",
           f"{server.url}/#/experiments/{exp}/runs"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.exists(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"
    import matplotlib.image
    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (900, 1400)
    # a blank or error page is nearly one colour and compresses to a few kB
    assert shot.stat().st_size > 20_000 and pixels[..., :3].std() > 0.02
    keep = os.environ.get("BENCH_SCREENSHOT_DIR")  # to look at it by hand
    if keep:
        shutil.copy(shot, Path(keep) / "mlflow_runs.png")
