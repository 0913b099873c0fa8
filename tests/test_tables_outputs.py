"""What bench.tables writes besides the classic tables: paired.md/.csv, adherence,
rows split by the shared-backbone settings, the cost columns, legends with the
latent's size read from the runs' params."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as sps

from bench.results import tables
from bench.results.format import SINGLE_NOTE
from bench.results.paired import ONE_PAIR
from bench.results.store import load_study
from tests.test_tables_store import EXP, fresh_store, job, make_sweep

PARAMS = {"latent.D": 3, "latent.K": 4, "latent.name": "categorical"}


def _job(est, seed, elbo, **extra):
    j = job(est, seed=seed, val__elbo=elbo, grad__log10_var=-1.0 - seed,
            model__trainable_parameters=100.0, collapse__active_units=5.0, **extra)
    j["params"] = dict(PARAMS)
    return j


def _sweep(client, exp, jobs, sweep="s"):
    """make_sweep, with each job's params logged too."""
    parent, kids = make_sweep(client, exp, sweep, jobs)
    for rid, j in zip(kids, jobs):
        for k, v in j.get("params", {}).items():
            client.log_param(rid, k, str(v))
    return parent, kids


def test_paired_comparisons_on_common_seeds(tmp_path):
    client, _, exp = fresh_store(tmp_path / "store")
    a = [-20.0, -21.0, -22.5]
    b = [-21.0, -21.4, -24.0, -30.0]            # seed 3: gumbel has none, not paired
    jobs = [_job("gumbel", s, v) for s, v in enumerate(a)]
    jobs += [_job("reinforce", s, v) for s, v in enumerate(b)]
    _sweep(client, exp, jobs)
    out = tmp_path / "out"
    tables.write_results(client, load_study(client, EXP), out)
    csv = pd.read_csv(out / "paired.csv", dtype={"seeds": str})
    elbo = csv[csv["table"] == "elbo"].iloc[0]
    assert (elbo["metric"], elbo["a"], elbo["b"], elbo["n_pairs"], elbo["seeds"]) == \
        ("val/elbo", "gumbel", "reinforce", 3, "0 1 2")
    ref = sps.ttest_rel(a, b[:3])
    assert elbo["mean_diff"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 3)
    assert elbo["p"] == pytest.approx(ref.pvalue) and elbo["p_holm"] == pytest.approx(ref.pvalue)
    assert set(csv["table"]) == {"elbo", "grad", "collapse", "cost"}
    grad = csv[csv["table"] == "grad"].iloc[0]
    assert grad["metric"] == "grad/log10_var" and grad["mean_diff"] == 0.0   # same per seed
    md = (out / "paired.md").read_text()
    assert "| digits | concat | gumbel − reinforce | 3 | 0 1 2 |" in md
    assert "## `elbo.md`: val/elbo" in md and "With 3 seeds, differences in val/elbo below" in md
    elbo_md = (out / "elbo.md").read_text()
    assert ("Paired comparisons (`paired.md`): with 3 seeds, differences in val/elbo below"
            in elbo_md)
    # the legend reads the latent's size from the params
    assert "range 0 to D·K = 3·4 = 12 units" in (out / "collapse.md").read_text()


def test_adherence_backbone_rows_and_cost_columns(tmp_path):
    client, _, exp = fresh_store(tmp_path / "store")
    jobs = []
    for mode, acc in (("frozen", 0.5), ("full", 0.8)):
        for s in range(2):
            j = _job("gumbel", s, -20.0 - s, gen__class_accuracy=acc + 0.1 * s,
                     gen__classifier_accuracy=0.9, perf__steps_per_s=10.0 * (s + 1),
                     model__parameters=1000.0)
            j["finals"]["model/trainable_parameters"] = 100.0 if mode == "frozen" else 1000.0
            j["params"].update({"model.backbone": "shared", "model.backbone_mode": mode})
            j["tags"] = {**j["tags"], "config_hash": f"{mode}{s}"}
            jobs.append(j)
    _sweep(client, exp, jobs)
    out = tmp_path / "out"
    out.mkdir()
    (out / "adherence.md").write_text("stale")
    tables.write_results(client, load_study(client, EXP), out)
    adh = pd.read_csv(out / "adherence.csv").set_index("backbone_mode")
    assert list(adh.columns[:4]) == ["task", "estimator", "conditioning", "n"]
    assert adh.loc["frozen", "gen/class_accuracy.mean"] == pytest.approx(0.55)
    assert adh.loc["full", "gen/classifier_accuracy.mean"] == pytest.approx(0.9)
    md = (out / "adherence.md").read_text()
    assert "| digits | gumbel | concat | frozen | 2 |" in md and "range [0, 1]" in md
    assert "all runs: latent=categorical, backbone=shared" in md   # constant: stated, not a key
    cost = pd.read_csv(out / "cost.csv").set_index("backbone_mode")
    assert cost.loc["frozen", "model/trainable_parameters.mean"] == 100.0
    assert cost.loc["full", "perf/steps_per_s.mean"] == pytest.approx(15.0)
    assert "| frozen | 2 | 15 ± 64 |" in (out / "cost.md").read_text()
    # a study without gen/* metrics leaves no adherence table behind
    client2, _, exp2 = fresh_store(tmp_path / "store2")
    _sweep(client2, exp2, [_job("gumbel", 0, -1.0)])
    tables.write_results(client2, load_study(client2, EXP), out)
    assert not (out / "adherence.md").exists() and not (out / "adherence.csv").exists()
    elbo = (out / "elbo.md").read_text()
    assert "| digits | gumbel | concat | 1 | -1 |" in elbo
    assert elbo.count(SINGLE_NOTE) == 1 and "no interval)" not in elbo     # said once, not per cell
    assert math.isnan(pd.read_csv(out / "elbo.csv")["val/elbo.ci95"].iloc[0])


def test_model_rows_are_named_by_the_overlays_label(tmp_path):
    """The linear and the nonlinear VAE of one study: rows `linear` and
    `nonlinear` (`model.label` of their overlays), the options they stand for
    listed once under the table, the one-seed note said once per table."""
    client, _, exp = fresh_store(tmp_path / "store")
    jobs = []
    for label, hidden, act in (("linear", "[]", None), ("nonlinear", "[200, 200]", "leaky_relu")):
        for est, elbo in (("disarm", -170.0), ("gumbel", -168.0)):
            j = _job(est, 0, elbo)
            j["params"].update({"model.label": label, "model.encoder_hidden": hidden,
                                "model.decoder_hidden": hidden, "model.norm": "none"})
            if act:
                j["params"]["model.activation"] = act
            j["tags"] = {**j["tags"], "config_hash": f"{label}-{est}"}
            jobs.append(j)
    _sweep(client, exp, jobs)
    out = tmp_path / "out"
    tables.write_results(client, load_study(client, EXP), out)
    md = (out / "elbo.md").read_text()
    assert "| digits | linear | disarm | concat | 1 | -170 |" in md
    assert "| digits | nonlinear | gumbel | concat | 1 | -168 |" in md
    assert "- `linear`: activation=-,decoder_hidden=[],encoder_hidden=[]" in md
    assert ("- `nonlinear`: activation=leaky_relu,decoder_hidden=[200, 200],"
            "encoder_hidden=[200, 200]") in md
    assert "| digits | activation=" not in md and "no interval)" not in md
    assert md.count(SINGLE_NOTE) == 1
    paired = (out / "paired.md").read_text()       # disarm − gumbel per model: one seed each
    assert "| digits | linear | concat | disarm − gumbel | 1 | 0 | -2 |" in paired
    assert ONE_PAIR in paired and "no interval)" not in paired
    assert list(pd.read_csv(out / "elbo.csv")["model"]) == ["linear", "linear",
                                                            "nonlinear", "nonlinear"]
