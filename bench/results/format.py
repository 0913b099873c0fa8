"""Formatting shared by the result tables and study summaries: natural sort
order, mean ± standard error to the precision the error allows, markdown
tables and deterministic CSV."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd


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


def fmt(mean: float, se: float) -> str:
    """mean ± se with se to two significant digits and mean to the same place."""
    if not math.isfinite(mean):
        return "–"
    if se == 0:  # identical values: say so rather than look like n = 1
        return f"{mean:.{_places(mean)}f} ± 0"
    if math.isfinite(se):
        places = min(6, max(0, 1 - math.floor(math.log10(se))))
        return f"{mean:.{places}f} ± {se:.{places}f}"
    return f"{mean:.{_places(mean)}f}"


def _places(x: float) -> int:
    """Decimals for four significant digits."""
    return 2 if x == 0 else min(6, max(0, 3 - math.floor(math.log10(abs(x)))))


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def agg_markdown(agg: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> str:
    rows = []
    for _, r in agg.iterrows():
        cells = [r[c] for c in by] + [int(r["n"])]
        for m in metrics:
            k = int(r[f"{m}.n"])
            text = fmt(r[f"{m}.mean"], r[f"{m}.se"])
            cells.append(text if k == r["n"] or k == 0 else f"{text} (n={k})")
        rows.append(cells)
    return md_table(list(by) + ["n"] + list(metrics), rows)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")
