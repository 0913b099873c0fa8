"""Formatting shared by the result tables and study summaries: natural sort
order, numbers to a fixed rule of significant digits, markdown tables and
deterministic CSV.

The digit rule (every table):
- a value with a spread (a 95% CI half-width, or a standard error): the spread
  to SPREAD_DIGITS = 2 significant digits, the value rounded to the same
  decimal place (`-21.34 ± 0.62`, `-115 ± 15`, `0.0069 ± 0.0012`); a spread
  of exactly 0 (identical values) is written `± 0`;
- values without a spread (one run, budgets, counts) are formatted a column at
  a time (`fmt_column`): integers in full; otherwise the largest magnitude to
  PLAIN_DIGITS = 3 significant digits and every row to the same decimal
  places, as long as that leaves the smallest non-zero value at least 2
  significant digits (the magnitudes span at most MAX_SPAN = 1 decade); a
  wider column gives each value its own 3 significant digits
  (`0.00691`, `0.513`);
- beyond MAX_PLACES decimals (tiny magnitudes) scientific notation is used;
- p-values to 2 significant digits, below 0.001 as `<0.001`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

SPREAD_DIGITS = 2
PLAIN_DIGITS = 3
MAX_SPAN = PLAIN_DIGITS - 2  # decades a column may span and still share its decimal places
MAX_PLACES = 6      # more decimals than this: scientific notation
# said once under a table (`single_note`), not in every one-run cell
SINGLE_NOTE = ("A value without `±` comes from one run (one seed): it has no interval; "
               "run more seeds (`seed=0,1,2`) for one.")


def natkey(value) -> tuple:
    """Numbers before strings, numbers by value: '2' < '10', '0.5' < '1'."""
    try:
        x = float(value)
        if math.isfinite(x):
            return (0, x, "")
    except (TypeError, ValueError):
        pass
    return (1, 0.0, str(value))


def sort_rows(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    keys = [tuple(natkey(v) for v in row) for row in df[list(cols)].itertuples(index=False)]
    order = sorted(range(len(df)), key=keys.__getitem__)
    return df.iloc[order].reset_index(drop=True)


def _decade(x: float) -> int:
    return math.floor(math.log10(abs(x)))


def spread_places(spread: float) -> int:
    """Decimal places that show `spread` to SPREAD_DIGITS significant digits
    (after rounding: 0.996 is 1.0, not 1.00)."""
    places = SPREAD_DIGITS - 1 - _decade(spread)
    if abs(round(spread, places)) >= 10 ** (SPREAD_DIGITS - places):
        places -= 1
    return places


def _fixed(x: float, places: int) -> str:
    if places >= 0:
        text = f"{x:.{places}f}"
    else:
        text = f"{round(x, places):.0f}"    # 2 significant digits of 1234 -> 1200
    # a value that rounds to zero has no sign: -0.003 at two places is 0.00
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def fmt(mean: float, spread: float) -> str:
    """mean ± spread by the digit rule; the mean alone (3 significant digits)
    where the spread is NaN (one run)."""
    if not math.isfinite(mean):
        return "–"
    if spread == 0:     # identical values: say so rather than look like n = 1
        return f"{fmt_plain(mean)} ± 0"
    if not math.isfinite(spread):
        return fmt_plain(mean)
    places = spread_places(spread)
    if places > MAX_PLACES:
        lead = max(0, _decade(mean) - _decade(spread) + SPREAD_DIGITS - 1) if mean else 0
        return f"{mean:.{lead}e} ± {spread:.{SPREAD_DIGITS - 1}e}"
    return f"{_fixed(mean, places)} ± {_fixed(spread, places)}"


def _plain_places(x: float) -> int:
    return PLAIN_DIGITS - 1 - _decade(x) if x else 0


def fmt_plain(x: float, places: int | None = None) -> str:
    """One value without a spread: `places` decimals, or PLAIN_DIGITS significant digits."""
    if not math.isfinite(x):
        return "–"
    if places is None:
        if float(x).is_integer() and abs(x) < 1e15:
            return f"{x:.0f}"
        places = max(0, _plain_places(x))
    if places > MAX_PLACES:
        return f"{x:.{PLAIN_DIGITS - 1}e}"
    return f"{x:.{places}f}"


def fmt_column(values: Sequence[float]) -> list[str]:
    """A column of values without spread, by the digit rule (module docstring)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if all(v.is_integer() and abs(v) < 1e15 for v in finite):
        return [fmt_plain(float(v)) if v is not None else "–" for v in values]
    nonzero = [v for v in finite if v != 0]
    places = [_plain_places(v) for v in nonzero]
    if places and max(places) - min(places) <= MAX_SPAN:
        shared = max(0, min(places))
        return [fmt_plain(float(v), shared) if v is not None else "–" for v in values]
    return [fmt_plain(float(v), max(0, _plain_places(float(v)))) if v is not None else "–"
            for v in values]


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.{max(0, spread_places(p))}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def metric_cells(agg: pd.DataFrame, metric: str, spread: str = "ci95") -> list[str]:
    """The cells of one metric column of an `aggregate` frame: mean ± spread
    (`ci95` or `se`) where a cell has two runs or more, the column's one-run
    values formatted together and left bare (`single_note` says once, under
    the table, that they have no interval), `(n=k)` where only k of the row's
    runs logged the metric, – where none did."""
    k = agg[f"{metric}.n"].astype(int).tolist()
    n = agg["n"].astype(int).tolist() if "n" in agg else k
    means, spreads = agg[f"{metric}.mean"].tolist(), agg[f"{metric}.{spread}"].tolist()
    single = [i for i, ki in enumerate(k) if ki == 1]
    plain = dict(zip(single, fmt_column([means[i] for i in single])))
    cells = []
    for i, ki in enumerate(k):
        if ki == 0:
            cells.append("–")
        elif ki == 1:
            cells.append(plain[i] if ki == n[i] else f"{plain[i]} (n=1)")
        else:
            text = fmt(means[i], spreads[i])
            cells.append(text if ki == n[i] else f"{text} (n={ki})")
    return cells


def single_note(agg: pd.DataFrame, metrics: Sequence[str]) -> str:
    """SINGLE_NOTE as a paragraph where a cell of these metrics has one run, else ''."""
    single = any((agg[f"{m}.n"] == 1).any() for m in metrics if f"{m}.n" in agg)
    return f"\n{SINGLE_NOTE}\n" if single else ""


def agg_markdown(agg: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                 spread: str = "se") -> str:
    """An `aggregate` frame as a markdown table: the keys, n, one column per
    metric; under it `single_note` where a cell has one run."""
    columns = [metric_cells(agg, m, spread) for m in metrics]
    rows = [[r[c] for c in by] + [int(r["n"])] + [col[i] for col in columns]
            for i, (_, r) in enumerate(agg.iterrows())]
    return md_table(list(by) + ["n"] + list(metrics), rows) + single_note(agg, metrics)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")
