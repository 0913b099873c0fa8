"""The MLflow UI path for real: `mlflow server` on 127.0.0.1 against a test
store, a sweep (parent + children with metrics) logged through the client, and
checked through the server's REST API; bench.tables run against the server;
and, where Chromium is installed, real sweeps (`python -m bench.run -m`) logged
into the server and headless screenshots of the runs table and the chart view
that the sweep's printed URLs open (its saved view, bench.tracking.ui).

The REST and bench.tables checks use a hand-made sweep in the harness's layout
(tests/test_tables_store.py), whose values they know exactly.

    BENCH_SCREENSHOT_DIR=results/figures pytest -m slow tests/test_mlflow_server.py -k screenshot

also writes the screenshots there (mlflow_ui_runs.png, mlflow_ui_chart.png, the
docs/running.md's); by default they stay in the test's tmp folder.
"""
from __future__ import annotations

import html
import json
import os
import re
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
    with pytest.MonkeyPatch.context() as mp:
        # The UI opens its assistant panel over a quarter of the page when the page's
        # host is 127.0.0.1 or localhost; the screenshots load the same server as
        # 0.0.0.0, and the server refuses the UI's POSTs from an origin it does not know.
        mp.setenv("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "http://0.0.0.0:*")
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
    assert "| digits | gumbel | film | 2 | -100.5" in (tmp_path / "elbo.md").read_text()
    listed = api(server.url, "/api/2.0/mlflow/artifacts/list", run_id=parent, path="tables/figures")
    assert {"tables/figures/elbo_curves.png", "tables/figures/heatmap_val_elbo.png"} <= {
        f["path"] for f in listed.get("files", [])}


# -- the UI, in a browser ---------------------------------------------------

UI_EXPERIMENT = "bench-ui"      # apart from EXP, whose tables the test above knows exactly
GRID = ["experiment=smoke", "train.steps=60", "train.eval_every=10", "train.log_every=10",
        "estimator=gumbel,reinforce", "conditioning=concat,film", f"mlflow.experiment={UI_EXPERIMENT}"]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); "
                    "the REST checks above ran all the same")
    return path


@pytest.fixture(scope="module")
def real_sweep(server, chromium, tmp_path_factory):
    """Seed 0 of a 2 x 2 grid, then seeds 0 and 1: the second sweep runs four jobs
    and reuses the first's four. (experiment id, second parent, its stdout)."""
    cwd = tmp_path_factory.mktemp("real_sweep")
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    for seeds, figures in (("0", "false"), ("0,1", "true")):
        proc = subprocess.run([sys.executable, "-m", "bench.run", "-m", *GRID, f"seed={seeds}",
                               f"mlflow.sweep_figures={figures}"],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name(UI_EXPERIMENT).experiment_id
    parent = client.search_runs([exp], "tags.`sweep.parent` = 'true'",
                                order_by=["attributes.start_time DESC"])[0]
    return exp, parent, proc.stdout


def shoot(chromium: str, url: str, png: Path, size: tuple[int, int], budget_ms: int) -> str:
    """Load url in a fresh headless Chromium, let the page run for budget_ms of
    virtual time (the UI is a single-page app that fetches and then renders),
    write the screenshot; returns the page's DOM at that moment."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={png.with_suffix('.profile')}",
           f"--virtual-time-budget={budget_ms}", "--dump-dom", f"--screenshot={png}",
           f"--window-size={size[0]},{size[1]}", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert png.exists(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"
    import matplotlib.image
    pixels = matplotlib.image.imread(str(png))
    assert pixels.shape[:2] == (size[1], size[0])
    # a blank or error page is nearly one colour and compresses to a few kB
    assert png.stat().st_size > 20_000 and pixels[..., :3].std() > 0.02
    keep = os.environ.get("BENCH_SCREENSHOT_DIR")
    if keep:
        shutil.copy(png, Path(keep) / png.name)
    png.with_suffix(".html").write_text(proc.stdout)    # to see what a failed check saw
    return proc.stdout


def test_ui_screenshots_of_the_sweep_view(server, real_sweep, chromium, tmp_path):
    exp, parent, stdout = real_sweep
    sid = parent.data.tags["sweep_id"]
    table = re.search(r"table:  (http://\S+)", stdout).group(1)
    chart = re.search(r"charts: (http://\S+)", stdout).group(1)
    assert table == f"{server.url}/#/experiments/{exp}/runs?viewStateShareKey=sweep-{sid}"
    assert chart == table + "&compareRunsMode=CHART"
    client = MlflowClient(server.url)
    names = [r.info.run_name for r in client.search_runs([exp], "tags.job != ''")]
    assert len(names) == 8
    # the second sweep's parent carries its tables, logged through the server
    listed = api(server.url, "/api/2.0/mlflow/artifacts/list", run_id=parent.info.run_id, path="tables")
    assert "tables/elbo.md" in {f["path"] for f in listed.get("files", [])}

    # the host as 0.0.0.0: see the server fixture
    dom = shoot(chromium, table.replace("127.0.0.1", "0.0.0.0"), tmp_path / "mlflow_ui_runs.png",
                (1700, 720), 30_000)
    # every job of the sweep, the four it reused included, with the view's columns
    assert all(html.escape(n) in dom for n in names), "runs missing from the table"
    # the saved view's name (the menu) and the parent's row; 8 jobs and the parent
    assert dom.count(f">sweep {sid}<") >= 2 and "<strong>9</strong> matching runs" in dom
    for col in ("tags.`variant`", "tags.`seed`", "metrics.`val/elbo`", "metrics.`grad/log10_var`"):
        assert f'col-id="{col}"' in dom, col
    dom = shoot(chromium, chart.replace("127.0.0.1", "0.0.0.0"), tmp_path / "mlflow_ui_chart.png",
                (1700, 1000), 90_000)
    # the charts drawn (plotly SVGs), not their loading spinners
    assert dom.count('class="main-svg"') >= 4, "the charts did not render"
