"""The reference-study additions: variant labels in bench.tables (an estimator's
options that vary split its rows: reinforce none / ema / loo) and bench.results.study
(tuned overrides from the sweeper's best.yaml, the headline table)."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from bench.results import study, tables
from bench.results.store import load_study
from tests.test_tables_store import EXP, T0, fresh_store, make_run


def _run(client, exp, estimator, seed, elbo, task_t=0.45, start=0, **options):
    tags = {"estimator": estimator, "conditioning": "concat", "seed": seed, "task": "toy",
            "latent": "categorical", "kl": "constant", "free_bits": 0, "free_bits_mode": "batch",
            "sweep_id": "s"}
    params = {"estimator.name": estimator, "task.name": "toy", "task.t": task_t,
              **{f"estimator.{k}": v for k, v in options.items()}}
    return make_run(client, exp, tags, {"val/elbo": elbo, "grad/log10_var": elbo / 10},
                    {"grad/log10_var": [(0, 1.0), (50, elbo / 10)]},
                    start_ms=T0 + start * 1000, params=params)


def test_variant_splits_an_estimator_by_the_options_that_vary(tmp_path):
    client, _, exp = fresh_store(tmp_path / "store")
    i = 0
    for baseline, values in (("none", (-10.0, -12.0)), ("ema", (-20.0, -24.0))):
        for seed, v in enumerate(values):
            _run(client, exp, "reinforce", seed, v, start=(i := i + 1), baseline=baseline,
                 n_samples=1, ema_decay=0.99)
    for seed, v in enumerate((-5.0, -7.0)):   # tau constant across gumbel runs: no split
        _run(client, exp, "gumbel", seed, v, start=(i := i + 1), tau=0.7)
    s = load_study(client, EXP)
    assert s.jobs["params.estimator.baseline"].notna().sum() == 4

    tables.write_results(client, s, tmp_path / "out")
    elbo = pd.read_csv(tmp_path / "out" / "elbo.csv").set_index("variant")
    assert sorted(elbo.index) == ["gumbel", "reinforce(baseline=ema)", "reinforce(baseline=none)"]
    assert elbo.loc["reinforce(baseline=ema)", "val/elbo.mean"] == pytest.approx(-22.0)
    assert elbo.loc["reinforce(baseline=ema)", "val/elbo.se"] == pytest.approx(2.0)
    assert elbo.loc["reinforce(baseline=none)", "n"] == 2
    assert elbo.loc["gumbel", "val/elbo.mean"] == pytest.approx(-6.0)
    assert "task_variant" not in elbo.columns          # task.t is the same everywhere
    md = (tmp_path / "out" / "elbo.md").read_text()
    assert "| reinforce(baseline=ema) |" in md.replace(" | concat", "")
    assert (tmp_path / "out" / "figures" / "grad_log10_var.png").exists()


def test_add_variants_labels_tasks_and_leaves_constant_options_alone():
    runs = pd.DataFrame({
        "run_id": list("abcd"), "estimator": ["relax"] * 4, "task": ["toy"] * 4,
        "params.estimator.tau": ["0.5"] * 4, "params.estimator.name": ["relax"] * 4,
        "params.task.t": ["0.45", "0.45", "0.499", "0.499"], "params.task.name": ["toy"] * 4})
    out = tables.add_variants(runs)
    assert list(out["variant"]) == ["relax"] * 4
    assert list(out["task_variant"]) == ["toy(t=0.45)"] * 2 + ["toy(t=0.499)"] * 2
    keys, _ = tables.group_keys(out)
    assert "task_variant" in keys and "variant" not in keys
    # an option that differs between tasks but not within one splits nothing
    other = runs.assign(task=["toy", "toy", "digits", "digits"],
                        **{"params.estimator.tau": ["0.5", "0.5", "1.3271988", "1.3271988"],
                           "params.task.t": ["0.45"] * 4})
    assert list(tables.add_variants(other)["variant"]) == ["relax"] * 4
    # long floats are shortened in labels
    varied = runs.assign(**{"params.estimator.tau": ["0.5", "0.5", "1.3271988", "1.3271988"]})
    assert list(tables.add_variants(varied)["variant"])[2:] == ["relax(tau=1.327)"] * 2
    # how the estimator's own parameters are trained splits its rows; a run from
    # before train.estimator_beta1 existed computed its default (0.9)
    beta = runs.assign(**{"params.train.estimator_beta1": [None, "0.9", "0.999", "0.999"]})
    assert list(tables.add_variants(beta)["variant"]) == \
        ["relax(estimator_beta1=0.9)"] * 2 + ["relax(estimator_beta1=0.999)"] * 2
    same = runs.assign(**{"params.train.estimator_beta1": [None, "0.9", "0.9", None]})
    assert list(tables.add_variants(same)["variant"]) == ["relax"] * 4
    # no params columns at all (runs from before the params were read): bare names
    bare = tables.add_variants(runs[["run_id", "estimator", "task"]])
    assert list(bare["variant"]) == ["relax"] * 4
    assert tables.group_keys(bare)[0] == ["task", "estimator", "conditioning"]


def test_best_overrides_and_headline(tmp_path):
    best = {"lr-digits:estimator=gumbel": {
                "overrides": ["estimator=gumbel", "conditioning=concat", "train.steps=500",
                              "train.lr=0.0031", "estimator.tau=0.72"], "value": -20.5, "trials": 4},
            "lr-digits:estimator=vimco": {
                "overrides": ["estimator=vimco", "train.steps=500", "train.lr=0.002"],
                "value": -21.0, "trials": 4}}
    folder = tmp_path / "tune-digits"
    folder.mkdir()
    (folder / "best.yaml").write_text(yaml.safe_dump(best))
    assert study.best_overrides(folder / "best.yaml", "gumbel") == ["train.lr=0.0031",
                                                                   "estimator.tau=0.72"]
    assert study.best_overrides(folder / "best.yaml", "vimco") == ["train.lr=0.002"]
    with pytest.raises(KeyError, match="rebar"):
        study.best_overrides(folder / "best.yaml", "rebar")

    rows = [("digits", e, c, kl, fb, m) for e, m0 in (("gumbel", -20.0), ("vimco", -30.0))
            for c in ("add", "concat") for kl in ("constant", "cyclical") for fb in (0.0, 0.5)
            for m in [m0 + (kl == "cyclical") * 100 + fb * 1000 + (c == "add")]]
    df = pd.DataFrame(rows, columns=["task", "estimator", "conditioning", "kl", "free_bits",
                                     "val/elbo.mean"])
    df["val/elbo.se"], df["val/elbo.n"], df["n"] = 0.5, 3, 3
    df.to_csv(tmp_path / "elbo.csv", index=False)
    pooled = df[df["conditioning"] == "concat"].drop(columns="conditioning")
    pooled.rename(columns=lambda c: c.replace("val/elbo", "val/kl")).to_csv(
        tmp_path / "collapse_by_setting.csv", index=False)
    text = study.headline(tmp_path)
    assert "| estimator | add | concat |" in text
    assert "| gumbel | -19.00 ± 0.50 | -20.00 ± 0.50 |" in text   # constant KL, free bits 0 only
    assert "| vimco | -29.00 ± 0.50 | -30.00 ± 0.50 |" in text
    # val/kl per KL schedule / free bits, in natural order
    assert "| estimator | constant / 0.0 | constant / 0.5 | cyclical / 0.0 | cyclical / 0.5 |" in text
    assert "| gumbel | -20.00 ± 0.50 | 480.00 ± 0.50 | 80.00 ± 0.50 | 580.00 ± 0.50 |" in text
    assert "strategy_nmi" not in text                # not measured: no table
    assert "0.72" in study.tuning_table([folder / "best.yaml"])


def test_headline_keeps_every_variant_of_an_estimator(tmp_path):
    """Two variants of one estimator (relax with and without REBAR's f term) are
    two rows; keying rows by estimator name showed only the first."""
    rows = [("digits", "relax", f"relax(use_f={u})", c, "constant", 0.0, m + (c == "add"))
            for u, m in (("False", -22.0), ("True", -21.0)) for c in ("add", "film")]
    df = pd.DataFrame(rows, columns=["task", "estimator", "variant", "conditioning", "kl",
                                     "free_bits", "val/elbo.mean"])
    df["val/elbo.se"], df["val/elbo.n"], df["n"] = 0.5, 3, 3
    df.to_csv(tmp_path / "elbo.csv", index=False)
    df.drop(columns="conditioning").rename(columns=lambda c: c.replace("val/elbo", "val/kl")) \
        .to_csv(tmp_path / "collapse_by_setting.csv", index=False)
    text = study.headline(tmp_path)
    assert "| relax(use_f=False) | -21.00 ± 0.50 | -22.00 ± 0.50 |" in text
    assert "| relax(use_f=True) | -20.00 ± 0.50 | -21.00 ± 0.50 |" in text


def test_curve_summary_reads_first_mean_and_last_of_each_run(tmp_path):
    """`python -m bench.results.study curve`: per variant, the curve's first,
    mean and last value, aggregated over seeds."""
    client, _, exp = fresh_store(tmp_path / "store")
    for seed, v in enumerate((-10.0, -20.0)):
        _run(client, exp, "gumbel", seed, v, start=seed, tau=0.5)
    out = study.curve_summary(EXP, "grad/log10_var", tmp_path / "out", client=client)
    row = out.set_index("variant").loc["gumbel"]
    assert row["grad/log10_var@first.mean"] == pytest.approx(1.0)
    assert row["grad/log10_var@last.mean"] == pytest.approx(-1.5)     # (-1 + -2) / 2


def test_where_the_data_lives_splits_no_task_variant():
    """task.data_dir says where the files are, not what they are: runs that read
    the same task from a default folder and from the same folder named
    explicitly are one task, while a real option still splits it."""
    runs = pd.DataFrame({
        "run_id": list("abcd"), "estimator": ["disarm"] * 4, "task": ["fashion_mnist"] * 4,
        "params.estimator.name": ["disarm"] * 4, "params.task.name": ["fashion_mnist"] * 4,
        "params.task.data_dir": ["None", "None", "/usr/share/datasets/fashion-mnist"] * 1 + ["x"],
        "params.task.val_size": ["0"] * 4})
    assert list(tables.add_variants(runs)["task_variant"]) == ["fashion_mnist"] * 4
    split = runs.assign(**{"params.task.val_size": ["0", "0", "5000", "5000"]})
    assert list(tables.add_variants(split)["task_variant"])[2:] == ["fashion_mnist(val_size=5000)"] * 2


def test_used_reads_the_tuned_values_back_from_the_store(tmp_path):
    """`study used`: a run that logged its study's train.lr passes, one that
    did not is named (a store made with MLflow itself, sqlite)."""
    import yaml
    from mlflow.tracking import MlflowClient
    from bench.results.study import used_table
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("fb")
    for seed, lr in ((0, "0.001"), (1, "0.002")):
        run = client.create_run(exp, tags={"estimator": "disarm", "seed": str(seed)})
        client.log_param(run.info.run_id, "train.lr", lr)
        client.set_terminated(run.info.run_id, "FINISHED")
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"s:defaults": {"overrides": ["estimator=disarm", "train.lr=0.001"],
                                                   "value": -1.0, "trials": 4}}))
    text, bad = used_table("fb", [best], client=client)
    assert "| disarm | 0 | train.lr=0.001 | train.lr=0.001 | yes |" in text
    assert len(bad) == 1 and "seed 1" in bad[0] and "0.002" in bad[0]
