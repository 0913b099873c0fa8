"""bench.results.budget on hand-made curves: linear interpolation at a budget, the
common budget of a group, runs that cannot reach one reported, cost read at
evaluation steps that are no log steps, the work-normalised variance; and
budget.md from a store end to end."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.results import budget, tables
from bench.results.store import load_study
from tests.test_tables_store import EXP, fresh_store, job, make_sweep

BY = ["task", "estimator", "conditioning"]


def test_interpolate_at():
    x, y = [0.0, 100.0, 200.0], [-100.0, -90.0, -70.0]
    assert budget.interpolate_at(x, y, 100.0) == -90.0          # exactly at a point
    assert budget.interpolate_at(x, y, 150.0) == pytest.approx(-80.0)
    assert budget.interpolate_at(x, y, 200.0) == -70.0          # the last point
    assert math.isnan(budget.interpolate_at(x, y, 200.1))       # never extrapolated
    assert math.isnan(budget.interpolate_at(x, y, -1.0))
    assert budget.interpolate_at(x, [-100.0, math.nan, -70.0], 100.0) == pytest.approx(-85.0)


def curve(run_id, f_per_step, s_per_step, elbo, steps=(0, 100, 200), log_steps=None):
    """Long-format points of one run: val/elbo(step) = elbo(f) at eval steps, cost at
    log steps (not step 0), wall = training seconds + 1 s of evaluation per eval."""
    rows = []
    for i, s in enumerate(steps):
        rows += [(run_id, "val/elbo", s, elbo(s * f_per_step)),
                 (run_id, "val/iwae", s, elbo(s * f_per_step) + 1.0),
                 (run_id, "perf/wall_seconds", s, s * s_per_step + i + 1.0),
                 (run_id, "perf/eval_seconds", s, i + 1.0)]
    for s in (log_steps if log_steps is not None else steps):
        if s > 0:
            rows.append((run_id, "cost/f_evals", s, float(s * f_per_step)))
    return rows


def runs_frame(ids, estimators, grad=None):
    return pd.DataFrame({"task": "t", "conditioning": "c", "estimator": estimators,
                         "seed": [str(i) for i in range(len(ids))], "run_id": ids,
                         "grad/log10_var": grad or [math.nan] * len(ids)})


def frame(rows):
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def test_two_known_linear_curves_at_the_common_budget():
    # a: 1 f-evaluation per step, 0.01 s per step; b: 4 f-evaluations, 0.02 s per step
    a = curve("a", 1, 0.01, lambda f: -100.0 + 0.1 * f)
    b = curve("b", 4, 0.02, lambda f: -100.0 + 0.05 * f)
    out, excluded = budget.at_budget(runs_frame(["a", "b"], ["ga", "gb"]), frame(a + b), BY)
    out = out.set_index("run_id")
    assert excluded.empty
    assert out["budget/f_evals"].tolist() == [200.0, 200.0]          # min(200, 800)
    assert out.loc["a", "val/elbo@f_evals"] == pytest.approx(-80.0)  # at its last point
    assert out.loc["b", "val/elbo@f_evals"] == pytest.approx(-90.0)  # step 50 of b
    assert out.loc["b", "val/iwae@f_evals"] == pytest.approx(-89.0)
    # training seconds = wall - eval: a reaches 2 s, b 4 s; at 2 s, b is at step 100
    assert out["budget/train_seconds"].tolist() == pytest.approx([2.0, 2.0])
    assert out.loc["a", "val/elbo@train_seconds"] == pytest.approx(-80.0)
    assert out.loc["b", "val/elbo@train_seconds"] == pytest.approx(-80.0)


def test_a_shorter_run_sets_the_budget_and_a_run_with_one_evaluation_is_reported():
    a = curve("a", 1, 0.01, lambda f: -100.0 + 0.1 * f)
    short = curve("short", 1, 0.01, lambda f: -100.0 + 0.2 * f, steps=(0, 50, 100))
    first = curve("first", 1, 0.01, lambda f: -50.0, steps=(0,))       # stopped at its first eval
    runs = runs_frame(["a", "short", "first"], ["ga", "gs", "gf"])
    out, excluded = budget.at_budget(runs, frame(a + short + first), BY)
    out = out.set_index("run_id")
    assert out.loc["a", "budget/f_evals"] == 100.0
    assert out.loc["a", "val/elbo@f_evals"] == pytest.approx(-90.0)
    assert out.loc["short", "val/elbo@f_evals"] == pytest.approx(-80.0)
    assert math.isnan(out.loc["first", "val/elbo@f_evals"])
    assert sorted(excluded["axis"]) == ["f-evaluations", "training seconds"]
    assert set(excluded["run_id"]) == {"first"}
    assert "no curve past the first" in excluded["reason"].iloc[0]
    # the rows of the table still count it: n=3, the bound's n=2
    md, agg = budget.budget_tables(runs.assign(estimator="g"), frame(a + short + first), BY, "note")
    assert agg["n"].tolist() == [3] and agg["val/elbo@f_evals.n"].tolist() == [2]
    row = "| t | g | c | 2 | first | f-evaluations | 1 evaluation(s): no curve past the first |"
    assert row in md


def test_cost_at_an_eval_step_that_is_no_log_step():
    # evaluations every 50 steps, cost logged every 100: at 50 and 150 it is interpolated
    a = curve("a", 4, 0.01, lambda f: -100.0 + 0.01 * f, steps=(0, 50, 100, 150, 200),
              log_steps=(100, 200))
    points = budget.eval_points(frame(a))
    assert points["f_evals"].tolist() == [0.0, 200.0, 400.0, 600.0, 800.0]
    assert points["train_seconds"].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    no_cost = budget.eval_points(frame([r for r in a if r[1] != "cost/f_evals"]))
    assert no_cost["f_evals"].isna().all()
    _, excluded = budget.at_budget(runs_frame(["a"], ["g"]), frame(
        [r for r in a if r[1] != "cost/f_evals"]), BY)
    assert list(excluded["reason"]) == ["cost/f_evals not logged at two evaluations"]


def test_work_normalised_variance():
    a = curve("a", 1, 0.01, lambda f: -1.0)
    b = curve("b", 4, 0.01, lambda f: -1.0)
    out, _ = budget.at_budget(runs_frame(["a", "b"], ["ga", "gb"], grad=[1.0, 1.0]),
                              frame(a + b), BY)
    assert out["cost/f_evals_per_step"].tolist() == [1.0, 4.0]
    assert out["grad/log10_work_var"].tolist() == pytest.approx([1.0, 1.0 + math.log10(4)])


def test_budget_md_from_a_store(tmp_path):
    client, _, exp = fresh_store(tmp_path / "store")
    jobs = []
    for est, per_step in (("gumbel", 1), ("reinforce", 4)):
        for seed in range(3):
            j = job(est, seed=seed, grad__log10_var=1.0)   # val/elbo: the curve's last
            pts = curve("x", per_step, 0.01, lambda f, s=seed: -100.0 + 0.1 * f / per_step - s)
            j["curves"] = {}
            for _, key, step, value in pts:
                j["curves"].setdefault(key, []).append((step, value))
            jobs.append(j)
    old = job("gumbel", seed=9, val__elbo=-70.0)          # a run from before cost/f_evals
    old["curves"] = {"val/elbo": [(0, -100.0), (100, -70.0)]}
    jobs.append(old)
    make_sweep(client, exp, "s", jobs)
    out = tmp_path / "out"
    tables.write_results(client, load_study(client, EXP), out)
    md = (out / "budget.md").read_text()
    csv = pd.read_csv(out / "budget.csv").set_index("estimator")
    assert csv["budget/f_evals"].tolist() == [200.0, 200.0]
    # gumbel at its last point: -80 - seed; reinforce at step 50: -95 - seed
    assert csv.loc["gumbel", "val/elbo@f_evals.mean"] == pytest.approx(-81.0)
    assert csv.loc["gumbel", "val/elbo@f_evals.n"] == 3 and csv.loc["gumbel", "n"] == 4
    assert csv.loc["reinforce", "val/elbo@f_evals.mean"] == pytest.approx(-96.0)
    assert csv.loc["reinforce", "grad/log10_work_var.mean"] == pytest.approx(1 + math.log10(4))
    assert "| digits | gumbel | concat | 4 | 200 | -81.0 ± 2.5 (n=3) |" in md
    assert "cost/f_evals not logged at two evaluations" in md
    assert "`budget/f_evals`: common f-evaluation budget" in md
