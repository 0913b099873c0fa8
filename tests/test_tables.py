"""bench.tables on hand-made runs: known means and standard errors, byte-identical
regeneration, failed/killed/skipped runs reported, the CLI end to end."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.results import tables
from bench.results.format import SINGLE_NOTE, agg_markdown, fmt
from bench.results.store import load_study
from tests.test_tables_store import EXP, T0, fresh_store, job, make_run, make_sweep

ROOT = Path(__file__).resolve().parents[1]


def known_study(client, exp):
    """gumbel/concat: val/elbo -100, -102, -104 (mean -102, se 2/sqrt 3);
    reinforce/concat: -110, -120 (mean -115, se 5); one failed, one killed, 2 skipped."""
    jobs = [job("gumbel", seed=s, val__elbo=v, val__iwae=v + 1, grad__log10_var=s,
                perf__steps_per_s=50.0, collapse__active_units=4 + s,
                collapse__mutual_info=0.5) for s, v in enumerate((-100.0, -102.0, -104.0))]
    jobs += [job("reinforce", seed=s, val__elbo=v, val__iwae=v + 1, grad__log10_var=3.0 + s,
                 perf__steps_per_s=100.0, collapse__active_units=1,
                 collapse__mutual_info=0.1) for s, v in enumerate((-110.0, -120.0))]
    jobs[-1]["wall_s"] = 20.0
    jobs.append({**job("reinforce", seed=2, val__elbo=-1e9), "status": "FAILED",
                 "tags": {**job("reinforce", seed=2)["tags"],
                          "failure_reason": "non-finite loss at step 7"}})
    jobs.append({**job("gumbel", seed=3, val__elbo=-1e9), "status": "KILLED"})
    for j in jobs:
        j["curves"] = {"val/elbo": [(0, -200.0), (50, -150.0)], "grad/log10_var": [(0, 2.0)]}
    return make_sweep(client, exp, "sweep-a", jobs, skipped=2)


@pytest.fixture
def study_store(tmp_path):
    client, uri, exp = fresh_store(tmp_path / "store")
    parent, children = known_study(client, exp)
    return client, uri, parent, children


def test_aggregate_gives_known_means_and_standard_errors(study_store, tmp_path):
    client, _, _, children = study_store
    study = load_study(client, EXP)
    finished = study.jobs[study.jobs["status"] == "FINISHED"]
    agg = tables.aggregate(finished, ["estimator", "conditioning"], ["val/elbo", "wall_s"])
    g, r = agg.set_index("estimator").loc["gumbel"], agg.set_index("estimator").loc["reinforce"]
    assert list(agg["estimator"]) == ["gumbel", "reinforce"]
    assert (g["n"], g["val/elbo.mean"], g["val/elbo.se"]) == (3, -102.0, pytest.approx(2 / math.sqrt(3)))
    assert (r["n"], r["val/elbo.mean"], r["val/elbo.se"]) == (2, -115.0, pytest.approx(5.0))
    assert r["wall_s.mean"] == pytest.approx(15.0)  # 10 s and 20 s from start/end times
    # ... and the same numbers reach the written CSV and Markdown.
    tables.write_results(client, study, tmp_path / "out")
    csv = pd.read_csv(tmp_path / "out" / "elbo.csv").set_index("estimator")
    assert csv.loc["reinforce", "val/elbo.se"] == pytest.approx(5.0)
    assert csv.loc["gumbel", "val/iwae.mean"] == pytest.approx(-101.0)
    # 95% CI half-widths: t(0.975, 2) = 4.303 x 2/sqrt 3; t(0.975, 1) = 12.71 x 5
    assert csv.loc["gumbel", "val/elbo.ci95"] == pytest.approx(4.3026527 * 2 / math.sqrt(3))
    assert csv.loc["reinforce", "val/elbo.ci95"] == pytest.approx(12.7062047 * 5.0)
    md = (tmp_path / "out" / "elbo.md").read_text()
    assert "| digits | gumbel | concat | 3 | -102.0 ± 5.0 |" in md
    assert "| digits | reinforce | concat | 2 | -115 ± 64 |" in md
    assert "-1000000000" not in md  # failed and killed runs' values stay out of the means
    assert "mean ± half-width of the 95% confidence interval" in md and "- `val/elbo`:" in md


def test_single_run_group_has_no_standard_error():
    runs = pd.DataFrame({"estimator": ["a"], "seed": ["0"], "run_id": ["r"], "m": [1.5]})
    agg = tables.aggregate(runs, ["estimator"], ["m"])
    assert agg["m.n"].iloc[0] == 1 and math.isnan(agg["m.se"].iloc[0])
    assert math.isnan(agg["m.ci95"].iloc[0])
    assert fmt(1.5, math.nan) == "1.50"
    lines = agg_markdown(agg, ["estimator"], ["m"], "ci95").splitlines()
    assert lines[2] == "| a | 1 | 1.50 |" and lines[-1] == SINGLE_NOTE   # said under the table


def test_groups_sort_numerically_and_vary_only_where_settings_vary():
    runs = pd.DataFrame({"task": "t", "latent": "categorical", "estimator": "gumbel",
                         "conditioning": "film", "kl": ["constant", "cyclical"] * 3,
                         "free_bits": ["10", "2", "0.5", "10", "2", "0.5"],
                         "seed": "0", "run_id": list("abcdef"), "m": range(6)})
    by, constant = tables.group_keys(runs)
    assert by == ["task", "estimator", "conditioning", "kl", "free_bits"]
    assert constant == {"latent": "categorical"}
    agg = tables.aggregate(runs, by, ["m"])
    assert list(agg["free_bits"]) == ["0.5", "2", "10", "0.5", "2", "10"]


def test_regeneration_is_byte_identical(study_store, tmp_path):
    client, uri, _, _ = study_store
    a, b = tmp_path / "a", tmp_path / "b"
    tables.write_results(client, load_study(client, EXP), a)
    # A fresh client and a second pass (over an existing folder) must not change a byte.
    from mlflow.tracking import MlflowClient
    for _ in range(2):
        tables.write_results(MlflowClient(uri), load_study(MlflowClient(uri), EXP), b)
    texts = sorted(p.name for p in a.iterdir() if p.suffix in (".md", ".csv"))
    assert len(texts) >= 11
    for name in texts:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_failed_killed_and_skipped_runs_are_reported(study_store, tmp_path):
    client, _, parent, children = study_store
    tables.write_results(client, load_study(client, EXP), tmp_path)
    status = (tmp_path / "status.md").read_text()
    assert "5 finished runs used" in status and "1 failed, 1 killed" in status
    assert "2 skipped" in status
    runs = pd.read_csv(tmp_path / "status_runs.csv", dtype=str, keep_default_na=False)
    assert sorted(runs["status"]) == ["FAILED", "KILLED"]
    failed = runs[runs["status"] == "FAILED"].iloc[0]
    assert failed["run_id"] in children and failed["failure_reason"] == "non-finite loss at step 7"
    assert "non-finite loss at step 7" in status
    sweeps = pd.read_csv(tmp_path / "status_sweeps.csv", dtype=str).iloc[0]
    assert (sweeps["parent_run_id"], sweeps["sweep.skipped"]) == (parent, "2")
    assert (sweeps["runs.finished"], sweeps["runs.failed"], sweeps["runs.killed"]) == ("5", "1", "1")


def test_a_rerun_config_counts_once_and_is_listed(tmp_path):
    client, _, exp = fresh_store(tmp_path / "store")
    tags = {**job("gumbel")["tags"], "config_hash": "abc"}
    make_run(client, exp, tags, {"val/elbo": -1.0}, start_ms=T0)
    latest = make_run(client, exp, tags, {"val/elbo": -3.0}, start_ms=T0 + 5)
    tables.write_results(client, load_study(client, EXP), tmp_path / "out")
    csv = pd.read_csv(tmp_path / "out" / "elbo.csv")
    assert (csv["n"].iloc[0], csv["val/elbo.mean"].iloc[0]) == (1, -3.0)
    runs = pd.read_csv(tmp_path / "out" / "status_runs.csv", dtype=str)
    assert list(runs["status"]) == ["FINISHED (superseded)"] and latest not in set(runs["run_id"])


def test_cli_end_to_end(study_store, tmp_path, monkeypatch):
    client, uri, parent, _ = study_store
    out = tmp_path / "results"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench.tables", "--sweep", "sweep-a",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("elbo", "grad", "collapse", "cost", "collapse_by_setting"):
        assert (out / f"{name}.md").stat().st_size > 0 and (out / f"{name}.csv").exists()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    # the study has one free-bits value, and grad/log10_var one point after step 0
    # (the final value): those figures are skipped, and README.md says why
    assert figures == ["README.md", "elbo_curves.png", "heatmap_val_elbo.png"]
    why = (out / "figures" / "README.md").read_text()
    assert "`collapse_free_bits.png` | not drawn: one free-bits value" in why
    assert "`grad_log10_var.png` | not drawn: no line has two points (evaluations)" in why
    assert all((out / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
               for f in figures if f.endswith(".png"))
    logged = {a.path for a in client.list_artifacts(parent, "tables")}
    assert {"tables/elbo.md", "tables/status.md", "tables/figures"} <= logged
    assert {a.path for a in client.list_artifacts(parent, "tables/figures")} == {
        f"tables/figures/{f}" for f in figures}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tables.main(["--sweep", "nope", "--out", str(tmp_path / "x")]) == 2
    assert tables.main(["--experiment", "nope", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # nothing written when nothing matched


def test_unmatched_sweep_message_lists_sweeps(study_store, tmp_path, monkeypatch, capsys):
    _, uri, _, _ = study_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tables.main(["--sweep", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sweep 'nope'" in err and "'sweep-a'" in err and f"'{EXP}'" in err


def test_a_rerun_sweep_shows_the_runs_it_skipped_to(tmp_path):
    # The harness's layout: a skipped job leaves no run, only the parent's tag
    # skipped.<job num> = <the earlier FINISHED run>; those runs are the sweep's results.
    client, _, exp = fresh_store(tmp_path / "store")
    _, first = make_sweep(client, exp, "s1", [job("gumbel", seed=0, val__elbo=-10.0),
                                               job("gumbel", seed=1, val__elbo=-20.0)])
    parent, _ = make_sweep(client, exp, "s2", [job("gumbel", seed=2, val__elbo=-30.0)],
                           skipped=2, start_ms=T0 + 10**6)
    client.set_tag(parent, "skipped.0", first[0])
    client.set_tag(parent, "skipped.1", first[1])
    study = load_study(client, EXP, "s2")
    tables.write_results(client, study, tmp_path / "out")
    csv = pd.read_csv(tmp_path / "out" / "elbo.csv")
    assert (csv["n"].iloc[0], csv["val/elbo.mean"].iloc[0]) == (3, -20.0)
    skipped = pd.read_csv(tmp_path / "out" / "status_skipped.csv", dtype=str)
    assert list(skipped["run_id"]) == first and list(skipped["job"]) == ["0", "1"]
    assert set(skipped["status"]) == {"FINISHED"} and set(skipped["sweep_id"]) == {"s2"}
    sweeps = pd.read_csv(tmp_path / "out" / "status_sweeps.csv", dtype=str)
    # counts stay with the sweep that ran them: s2 ran one job, skipped two
    row = sweeps.set_index("sweep_id").loc["s2"]
    assert (row["runs.finished"], row["sweep.skipped"]) == ("1", "2")
    assert "2 skipped" in (tmp_path / "out" / "status.md").read_text()
