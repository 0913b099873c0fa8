"""bench.results.stats on hand-made numbers: Student-t intervals, paired t-tests on
the seeds both variants ran, Holm's adjustment, the smallest resolved difference."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.results import stats

BY = ["task", "estimator", "conditioning"]


def test_t_intervals():
    assert stats.t_quantile(1) == pytest.approx(12.7062047)
    assert stats.t_quantile(2) == pytest.approx(4.3026527)
    assert stats.t_quantile(1000) == pytest.approx(1.962339, abs=1e-6)
    assert stats.ci_halfwidth(2.0, 3) == pytest.approx(2 * 4.3026527)
    assert math.isnan(stats.ci_halfwidth(2.0, 1)) and math.isnan(stats.ci_halfwidth(math.nan, 5))


def test_holm_step_down():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    got = stats.holm([0.5, math.nan, 0.9])      # NaN is neither adjusted nor counted
    assert got[0] == pytest.approx(1.0) and math.isnan(got[1]) and got[2] == pytest.approx(1.0)


def _runs(values: dict) -> pd.DataFrame:
    """values: {estimator: {seed: metric}} for task t, conditioning c."""
    rows = [{"task": "t", "conditioning": "c", "estimator": e, "seed": str(s), "m": v}
            for e, per in values.items() for s, v in per.items()]
    return pd.DataFrame(rows)


def test_paired_uses_only_common_seeds_and_matches_scipy():
    a = {0: -10.0, 1: -12.0, 2: -11.0, 3: -9.0}
    b = {0: -11.0, 1: -12.5, 2: -13.0}              # no seed 3: three pairs
    c = {5: -1.0, 6: -2.0}                          # no seed in common with a or b
    out = stats.paired(_runs({"a": a, "b": b, "c": c}), BY, "m", "estimator")
    assert list(zip(out["a"], out["b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    ab = out.iloc[0]
    d = np.array([1.0, 0.5, 2.0])
    assert (ab["n_pairs"], ab["seeds"]) == (3, "0 1 2")
    assert ab["mean_diff"] == pytest.approx(d.mean())
    assert ab["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert ab["ci95"] == pytest.approx(4.3026527 * d.std(ddof=1) / math.sqrt(3))
    ref = sps.ttest_rel([-10.0, -12.0, -11.0], [-11.0, -12.5, -13.0])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert ab["t"] == pytest.approx(t) == pytest.approx(ref.statistic)
    assert ab["p"] == pytest.approx(2 * sps.t.sf(abs(t), 2)) == pytest.approx(ref.pvalue)
    # the only test in the group: Holm leaves it alone
    assert ab["p_holm"] == pytest.approx(ab["p"])
    assert ab["significant"] == (ab["p"] < 0.05)
    for row in out.iloc[1:].itertuples():
        assert row.n_pairs == 0 and row.seeds == "" and math.isnan(row.p) and not row.significant


def test_holm_within_a_group_and_groups_apart():
    base = {s: -10.0 - s for s in range(4)}
    runs = _runs({"a": base, "b": {s: v - 1 - 0.1 * s for s, v in base.items()},
                  "c": {s: v - 0.5 + 0.3 * (s % 2) for s, v in base.items()}})
    other = runs.assign(conditioning="d")
    other = other[other["estimator"] != "c"]
    out = stats.paired(pd.concat([runs, other]), BY, "m", "estimator")
    c = out[out["conditioning"] == "c"]
    assert c["p_holm"].tolist() == pytest.approx(stats.holm(c["p"].tolist()))
    d = out[out["conditioning"] == "d"]
    assert len(d) == 1 and d["p_holm"].iloc[0] == pytest.approx(d["p"].iloc[0])


def test_no_test_without_spread_or_with_one_pair():
    same = stats.paired(_runs({"a": {0: 1.0, 1: 2.0}, "b": {0: 0.0, 1: 1.0}}), BY, "m", "estimator")
    r = same.iloc[0]
    assert (r["n_pairs"], r["mean_diff"], r["sd_diff"], r["ci95"]) == (2, 1.0, 0.0, 0.0)
    assert math.isnan(r["p"]) and not r["significant"]
    one = stats.paired(_runs({"a": {0: 1.0}, "b": {0: 0.0}}), BY, "m", "estimator").iloc[0]
    assert one["n_pairs"] == 1 and one["mean_diff"] == 1.0 and math.isnan(one["ci95"])


def test_several_runs_of_one_seed_are_averaged_and_non_finite_values_skipped():
    runs = _runs({"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {0: 0.0, 1: 0.0, 2: math.nan}})
    runs = pd.concat([runs, _runs({"a": {0: 3.0}})])        # a second run of a, seed 0
    r = stats.paired(runs, BY, "m", "estimator").iloc[0]
    assert (r["n_pairs"], r["seeds"], r["mean_diff"]) == (2, "0 1", pytest.approx(2.0))


def test_smallest_resolved_difference():
    pairs = pd.DataFrame({"n_pairs": [3, 3, 3, 1], "sd_diff": [1.0, 2.0, 3.0, math.nan]})
    x, n, sd, k = stats.resolvable(pairs)
    assert (n, sd, k) == (3, 2.0, 3)
    assert x == pytest.approx(4.3026527 * 2.0 / math.sqrt(3))
    assert stats.resolvable(pairs.iloc[3:]) is None


def test_a_metric_that_never_differs_says_so_instead_of_a_zero_threshold():
    from bench.results.paired import resolved_note
    same = pd.DataFrame({"n_pairs": [3, 3], "sd_diff": [0.0, 0.0]})
    note = resolved_note("gen/class_accuracy", same)
    assert "agree seed by seed" in note and "below 0" not in note
    spread = resolved_note("val/elbo", pd.DataFrame({"n_pairs": [3], "sd_diff": [1.0]}))
    assert "below 2.48 nats are not resolved" in spread


def test_conditioning_types_are_compared_across_model_families_on_common_seeds():
    from bench.results.paired import paired_tables
    base = {("family=conv", "adaln"): 0.0, ("family=conv", "spatial_concat"): -0.1,
            ("family=mlp", "film"): -5.0}
    rows = [{"task": "t", "model": m, "conditioning": c, "estimator": "reparam", "seed": str(s),
             "val/elbo": -100.0 + v + 0.01 * s * (1 + i)}
            for i, ((m, c), v) in enumerate(base.items()) for s in range(4)]
    runs = pd.DataFrame(rows)
    text, frame, _ = paired_tables(runs, ["task", "model", "estimator", "conditioning"],
                                   {"elbo": ["val/elbo"]})
    assert "# Settings compared: model and conditioning type" in text
    by_setting = frame[frame["table"] == "elbo/setting"].set_index(["a", "b"])
    assert len(by_setting) == 3           # every pair of the three settings, within reparam
    cross = by_setting.loc[("family=conv · adaln", "family=mlp · film")]
    assert cross["n_pairs"] == 4 and cross["mean_diff"] == pytest.approx(5.0 - 0.02 * 1.5)   # 5 - 0.02 s, mean over s = 0..3
    assert bool(cross["significant"])
    # one conditioning type: no settings section
    text, frame, _ = paired_tables(runs[runs["conditioning"] == "film"],
                                   ["task", "model", "estimator", "conditioning"], {"elbo": ["val/elbo"]})
    assert "Settings compared" not in text and "elbo/setting" not in set(frame["table"])
