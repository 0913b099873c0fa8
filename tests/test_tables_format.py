"""The digit rule of bench.results.format, and the column legends of
bench.results.columns: every table column described, sizes read from params."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from bench.results import columns, tables
from bench.results.aggregate import aggregate
from bench.results.format import SINGLE_NOTE, fmt, fmt_column, fmt_p, metric_cells, single_note


@pytest.mark.parametrize("mean, spread, text", [
    (-21.3412, 0.6234, "-21.34 ± 0.62"),       # spread to 2 significant digits, mean to its place
    (-115.0, 15.2, "-115 ± 15"),
    (0.00690, 0.00123, "0.0069 ± 0.0012"),
    (-102.0, 4.968, "-102.0 ± 5.0"),
    (12.345, 0.0996, "12.35 ± 0.10"),          # 0.0996 rounds to 0.10, not 0.100
    (1.0, 0.996, "1.0 ± 1.0"),
    (123456.0, 1234.0, "123500 ± 1200"),       # 2 significant digits above the decimal point too
    (1e-9, 2e-10, "1.00e-09 ± 2.0e-10"),       # beyond 6 decimals: scientific
    (3.0, 0.0, "3 ± 0"),                       # identical values: said, not hidden
    (-21.3456, 0.0, "-21.3 ± 0"),
    (1.5, math.nan, "1.50"),                   # one run: 3 significant digits
    (math.nan, 1.0, "–"),
])
def test_a_value_with_a_spread_follows_the_rule(mean, spread, text):
    assert fmt(mean, spread) == text


@pytest.mark.parametrize("values, texts", [
    ([12.34, 4.567, 1.234], ["12.3", "4.6", "1.2"]),        # one decade: shared decimals
    ([0.006906, 0.5127], ["0.00691", "0.513"]),             # two decades: 3 digits each
    ([4.0, 62680.0], ["4", "62680"]),                       # integers in full
    ([0.25, math.nan, 0.5], ["0.250", "–", "0.500"]),
    ([1e-9, 2e-9], ["1.00e-09", "2.00e-09"]),
])
def test_a_column_without_spread_shares_its_decimal_places(values, texts):
    assert fmt_column(values) == texts


def test_p_values():
    assert [fmt_p(p) for p in (0.04321, 0.00011, 0.5, 1.0, math.nan)] == \
        ["0.043", "<0.001", "0.50", "1.0", "–"]


def test_cells_mark_one_run_and_partial_counts():
    runs = pd.DataFrame({"e": ["a", "a", "a", "b", "c", "c"], "seed": list("012000"),
                         "run_id": list("uvwxyz"),
                         "m": [1.0, 2.0, 3.0, 0.006906, 0.5127, math.nan]})
    agg = aggregate(runs, ["e"], ["m"])
    # one run: the value alone (the table's note says so once); one of two runs: (n=1)
    assert metric_cells(agg, "m") == ["2.0 ± 2.5", "0.00691", "0.513 (n=1)"]
    assert metric_cells(agg, "m", "se") == ["2.00 ± 0.58", "0.00691", "0.513 (n=1)"]
    assert single_note(agg, ["m"]) == f"\n{SINGLE_NOTE}\n"
    assert single_note(agg.iloc[:1], ["m"]) == ""           # every cell has an interval


CELL = re.compile(r"(-?[\d.]+) ± ([\d.]+)")


def test_every_spread_in_a_written_table_has_two_significant_digits(tmp_path):
    """The rule on what bench.tables writes: mean and spread share their decimal places,
    the spread has 2 significant digits."""
    from tests.test_tables import known_study
    from tests.test_tables_store import EXP, fresh_store
    from bench.results.store import load_study

    client, _, exp = fresh_store(tmp_path / "store")
    known_study(client, exp)
    tables.write_results(client, load_study(client, EXP), tmp_path / "out")
    found = 0
    for name in ("elbo", "grad", "collapse", "cost", "paired", "budget"):
        for mean, spread in CELL.findall((tmp_path / "out" / f"{name}.md").read_text()):
            if not float(spread):
                continue            # identical values: "± 0"
            found += 1
            decimals = lambda s: len(s.split(".")[1]) if "." in s else 0  # noqa: E731
            assert decimals(mean) == decimals(spread), (name, mean, spread)
            digits = (spread.replace(".", "").lstrip("0") if "." in spread
                      else spread.strip("0"))           # 1200: the zeros only hold the place
            assert len(digits) == 2 or "." not in spread and len(digits) == 1, spread
    assert found > 10


def test_every_table_column_is_described():
    named = set(tables.ELBO + tables.GRAD + tables.COLLAPSE + tables.COST + tables.ADHERENCE
                + tables.SETTING + tables.KEY_ORDER)
    assert named - set(columns.COLUMNS) == set()
    text = columns.legend(["task", "val/elbo", "not/a_metric"])
    assert "- `val/elbo`: validation ELBO" in text and "unit nats" in text
    assert "- `not/a_metric`: (not described" in text


def test_axis_labels_for_the_figures():
    from bench.results import plots
    for name in ("val/elbo", "step", "free_bits"):
        assert columns.axis_label(name) == plots.AXIS[name]
    assert columns.axis_label("perf/steps_per_s") == "training speed (steps/s, higher is better)"
    assert columns.axis_label("unknown/key") == "unknown/key"


def test_latent_sizes_come_from_the_params():
    runs = pd.DataFrame({"task": ["digits"] * 2, "latent": ["categorical"] * 2,
                         "params.latent.D": ["3", "3"], "params.latent.K": ["4", "4"]})
    text = columns.legend(["collapse/active_units", "collapse/code_perplexity"], runs)
    assert "range 0 to D·K = 3·4 = 12 units" in text and "range 1 to K = 4" in text
    gauss = runs.assign(latent="gaussian", **{"params.latent.D": "8", "params.latent.K": "None"})
    assert "0 to D = 8 units" in columns.legend(["collapse/active_units"], gauss)
    both = pd.concat([runs, gauss.assign(task="strategies")])
    ctx = columns.latent_context(both)
    assert "12 units (digits, categorical)" in ctx["units"]
    assert "D = 8 units (strategies, gaussian)" in ctx["units"]
    unset = runs.assign(**{"params.latent.D": "None"})
    assert "the task's default, not logged" in columns.legend(["collapse/active_units"], unset)


def test_a_mean_that_rounds_to_zero_has_no_sign():
    from bench.results.format import fmt
    assert fmt(-0.003, 0.17) == "0.00 ± 0.17"
    assert fmt(-0.03, 0.17) == "-0.03 ± 0.17"


def test_model_options_that_vary_label_the_rows():
    """The linear and the nonlinear VAE of one experiment are rows of their own."""
    import pandas as pd
    from bench.results.aggregate import add_settings, group_keys
    runs = pd.DataFrame({"task": ["mnist5k"] * 2, "estimator": ["disarm"] * 2,
                         "conditioning": ["none"] * 2,
                         "params.model.encoder_hidden": ["[]", "[200, 200]"],
                         "params.model.norm": ["none", "none"]})
    out = add_settings(runs)
    assert list(out["model"]) == ["encoder_hidden=[]", "encoder_hidden=[200, 200]"]
    assert "model" in group_keys(out)[0]
    same = add_settings(runs.iloc[:1])
    assert "model" not in group_keys(same)[0]


def test_an_overlays_label_names_the_model_rows():
    """`model.label` names a row where it stands for one set of options; a
    label over two sets (an option changed on the command line) keeps them."""
    import pandas as pd
    from bench.results.aggregate import add_settings, group_keys, model_legend
    runs = pd.DataFrame({"task": ["mnist5k"] * 4, "estimator": ["disarm"] * 4,
                         "conditioning": ["none"] * 4,
                         "params.model.label": ["linear", "nonlinear", "nonlinear", None],
                         "params.model.encoder_hidden": ["[]", "[200]", "[300]", "[9]"]})
    out = add_settings(runs)
    assert list(out["model"]) == ["linear", "nonlinear(encoder_hidden=[200])",
                                  "nonlinear(encoder_hidden=[300])", "encoder_hidden=[9]"]
    keys = group_keys(out)[0]
    assert model_legend(out, keys).splitlines()[2] == "- `linear`: encoder_hidden=[]"
    assert model_legend(add_settings(runs.iloc[[0, 3]]), keys).count("- `") == 1
    assert model_legend(add_settings(runs.iloc[[3]]), keys) == ""    # no label, no legend
