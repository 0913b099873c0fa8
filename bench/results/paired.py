"""`paired.md/.csv` of bench.tables: the estimator variants of each table of
final metrics compared pairwise on the same seeds (bench.results.stats.paired),
on the table's headline metric (val/elbo where the table has it, else its
first metric), and the smallest difference the seeds resolve.

    text, frame, notes = paired_tables(runs, by, {"elbo": ["val/elbo", ...], ...})

`notes[table]` is the one-line summary the source table's note repeats.
Where the conditioning type varies, a second part compares settings (the
model options and the conditioning type as one label, so the conv model's
types meet the MLP's) per estimator, for `elbo` and `adherence`; its rows sit
in the CSV under table `elbo/setting`, `adherence/setting`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pandas as pd

from .aggregate import compared
from .columns import COLUMNS, legend
from .format import fmt, fmt_p, fmt_plain, md_table
from .stats import ALPHA, PAIR_COLS, paired, resolvable


def headline(metrics: Sequence[str]) -> str:
    return "val/elbo" if "val/elbo" in metrics else metrics[0]


def _unit(metric: str) -> str:
    c = COLUMNS.get(metric)
    return f" {c.unit}" if c is not None and c.unit else ""


def resolved_note(metric: str, pairs: pd.DataFrame) -> str:
    r = resolvable(pairs)
    if r is None:
        return (f"no two variants share two seeds with a spread in {metric}: "
                f"no difference is resolved")
    x, n, sd, k = r
    if sd == 0:     # e.g. a saturated metric: every sample labelled as requested
        return (f"with {n} seeds, the median sd of paired differences in {metric} is 0 "
                f"(the variants compared agree seed by seed): no interval to state")
    return (f"with {n} seeds, differences in {metric} below {fmt_plain(x)}{_unit(metric)} are "
            f"not resolved (the 95% CI half-width of a paired difference at the median observed "
            f"sd of differences, {fmt_plain(sd)}{_unit(metric)}, over {k} comparison"
            f"{'s' if k > 1 else ''})")


def paired_tables(runs: pd.DataFrame, by: Sequence[str],
                  tables: dict[str, Sequence[str]]) -> tuple[str, pd.DataFrame, dict[str, str]]:
    by = list(by)
    label = compared(by)
    group = [c for c in by if c not in ("estimator", "variant")]
    text = ["# Paired comparisons\n\nEach pair of estimator variants within a group of "
            f"{', '.join(group) or 'all runs'}, on the seeds both ran (only those are paired; "
            f"n pairs per row): the mean difference first − second ± its 95% confidence "
            f"interval half-width (Student t, n − 1 degrees of freedom), the paired t-test p-value "
            f"(two-sided, scipy.stats.ttest_rel) and the Holm-adjusted p-value within the "
            f"group; * marks adjusted p < {ALPHA}. No test where there are fewer than 2 pairs "
            f"or every difference is the same.\n"]
    frames, notes = [], {}
    for name, metrics in tables.items():
        if not metrics:
            continue
        metric = headline(metrics)
        pairs = paired(runs, by, metric, label)
        notes[name] = resolved_note(metric, pairs)
        frames.append(pairs.assign(table=name, metric=metric))
        text.append(f"\n## `{name}.md`: {metric}\n\n{notes[name][0].upper()}{notes[name][1:]}.\n\n")
        if pairs.empty:
            text.append("Nothing to compare: one variant per group.\n")
            continue
        header, rows = _table(pairs, group)
        text += [md_table(header, rows), _one_pair(pairs), "\n",
                 legend(header, runs, extra={"difference": COLUMNS["difference"]._replace(
                     unit=_unit(metric).strip() or "that of the metric")})]
    if not frames:
        text.append("\nNo finished run logged a metric to compare.\n")
    frame = _frame(frames, group)
    settings, extra = _settings_compared(runs, by, tables)
    if extra is not None:
        text.append(settings)
        frame = pd.concat([frame, extra], ignore_index=True)
    return "".join(text), frame, notes


SETTING = "setting"     # the model options and the conditioning type, as one label


def _settings_compared(runs: pd.DataFrame, by: Sequence[str],
                       tables: dict[str, Sequence[str]]) -> tuple[str, Optional[pd.DataFrame]]:
    """Where the conditioning type varies: each pair of settings (model options
    · conditioning, so the conv model's types meet the MLP's) within a group of
    the other keys, estimator included, for the headline metric of `elbo` and
    `adherence`."""
    if "conditioning" not in by or runs["conditioning"].nunique() < 2:
        return "", None
    parts = [c for c in ("model", "conditioning") if c in by]
    label = runs[parts].astype(str).agg(" · ".join, axis=1)
    runs = runs.assign(**{SETTING: label})
    group = [c for c in by if c not in parts]
    text = ["\n# Settings compared: model and conditioning type\n\nEach pair of settings "
            f"({' · '.join(parts)}) within a group of {', '.join(group)}, paired on seeds and "
            "tested as above (Holm within the group).\n"]
    frames = []
    for name in ("elbo", "adherence"):
        if not tables.get(name):
            continue
        metric = headline(tables[name])
        pairs = paired(runs, [*group, SETTING], metric, SETTING, group=group)
        frames.append(pairs.assign(table=f"{name}/{SETTING}", metric=metric))
        text.append(f"\n## `{name}.md`: {metric}, by setting\n\n")
        header, rows = _table(pairs, group)
        text.append(md_table(header, rows) + _one_pair(pairs) + "\n" if rows
                    else "Nothing to compare.\n")
    return "".join(text), _frame(frames, group) if frames else None


def _frame(frames: list, group: list) -> pd.DataFrame:
    """The CSV rows: table, metric, the group keys, then the pair columns."""
    cols = ["table", "metric"] + group + list(PAIR_COLS)
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _table(pairs: pd.DataFrame, group: list) -> tuple[list, list]:
    """Header and rows of a comparison table: group keys, a − b, pairs, seeds,
    difference ± CI, p, Holm-adjusted p (* where significant)."""
    rows = [[d[c] for c in group] + [f"{d['a']} − {d['b']}", d["n_pairs"], d["seeds"],
                                     _difference(d), fmt_p(d["p"]),
                                     fmt_p(d["p_holm"]) + (" *" if d["significant"] else "")]
            for d in (r._asdict() for r in pairs.itertuples(index=False))]
    return group + ["comparison", "n_pairs", "seeds", "difference", "p", "p_holm"], rows


ONE_PAIR = "A difference without `±` is of one pair (one common seed): it has no interval."


def _one_pair(pairs: pd.DataFrame) -> str:
    return f"\n{ONE_PAIR}\n" if (pairs["n_pairs"] == 1).any() else ""


def _difference(d: dict) -> str:
    if d["n_pairs"] == 0:
        return "– (no common seed)"
    if d["n_pairs"] == 1:
        return fmt_plain(d["mean_diff"])     # ONE_PAIR, under the table, says it once
    return fmt(d["mean_diff"], d["ci95"])
