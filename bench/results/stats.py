"""The statistics behind the tables' intervals and paired comparisons (scipy).

- `ci_halfwidth(se, n)`: half-width of the 95% confidence interval of a mean,
  t_{0.975, n−1} · se (Student t, n−1 degrees of freedom); NaN for n < 2.
- `paired(runs, by, metric)`: per group (the keys `by` minus the compared
  label, `aggregate.compared`), every pair (a, b) of labels in natural order,
  on the seeds both ran with a finite value: n pairs, the mean difference
  a − b, its sd, its 95% CI half-width, the paired t-test p-value
  (`scipy.stats.ttest_rel`, two-sided) and the Holm-adjusted p within the group;
  `significant` when the adjusted p < ALPHA. Several runs of one label and seed
  in a group (settings outside the keys) are averaged first. No test (p NaN)
  for fewer than 2 pairs, or when every difference is the same (no spread).
- `holm(p)`: Holm's step-down adjustment (NaNs stay NaN and are not counted).
- `resolvable(pairs)`: the smallest difference a paired comparison resolves
  with the observed seed spread: the CI half-width of a paired difference at
  the median observed sd of differences and the median number of pairs.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .format import natkey, sort_rows

LEVEL = 0.95
ALPHA = 0.05
PAIR_COLS = ("a", "b", "n_pairs", "seeds", "mean_diff", "sd_diff", "ci95", "t", "p", "p_holm",
             "significant")


def t_quantile(dof: int, level: float = LEVEL) -> float:
    return float(sps.t.ppf(0.5 + level / 2, dof)) if dof >= 1 else math.nan


def ci_halfwidth(se: float, n: int, level: float = LEVEL) -> float:
    return t_quantile(n - 1, level) * se if n >= 2 and math.isfinite(se) else math.nan


def holm(p: Sequence[float]) -> list[float]:
    p = np.asarray(p, dtype=float)
    adjusted = np.full(len(p), math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="mergesort")]
    running, m = 0.0, len(valid)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired_pair(a: np.ndarray, b: np.ndarray) -> dict:
    """One paired comparison of equal-length arrays (already matched by seed)."""
    d = a - b
    n = len(d)
    out = {"n_pairs": n, "mean_diff": float(d.mean()) if n else math.nan,
           "sd_diff": float(d.std(ddof=1)) if n > 1 else math.nan,
           "ci95": math.nan, "t": math.nan, "p": math.nan}
    if n > 1:
        out["ci95"] = ci_halfwidth(out["sd_diff"] / math.sqrt(n), n)
        if out["sd_diff"] > 0:     # identical differences: t is not defined
            res = sps.ttest_rel(a, b)
            out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def paired(runs: pd.DataFrame, by: Sequence[str], metric: str, label: str,
           seed: str = "seed", group: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The paired comparisons of `metric` between the values of `label` (module
    docstring), within groups of `group` (default: `by` less the estimator keys)."""
    group = [c for c in by if c not in ("estimator", "variant")] if group is None else list(group)
    cols = group + list(PAIR_COLS)
    if runs.empty or metric not in runs:
        return pd.DataFrame(columns=cols)
    runs = runs[group + [label, seed, metric]].assign(**{metric: pd.to_numeric(runs[metric])})
    runs = runs[np.isfinite(runs[metric].to_numpy(dtype=float))]
    rows = []
    for keys, g in (runs.groupby(group, sort=False) if group else [((), runs)]):
        keys = keys if isinstance(keys, tuple) else (keys,)
        per = g.groupby([label, seed], sort=False)[metric].mean()
        names = sorted(set(g[label]), key=natkey)
        found = []
        for a, b in combinations(names, 2):
            va, vb = per.loc[a], per.loc[b]
            common = sorted(set(va.index) & set(vb.index), key=natkey)
            r = paired_pair(va.loc[common].to_numpy(float), vb.loc[common].to_numpy(float))
            found.append({**dict(zip(group, keys)), "a": a, "b": b,
                          "seeds": " ".join(map(str, common)), **r})
        for r, p in zip(found, holm([r["p"] for r in found])):
            r["p_holm"] = p
            r["significant"] = bool(p < ALPHA) if math.isfinite(p) else False
        rows += found
    return sort_rows(pd.DataFrame(rows, columns=cols), group + ["a", "b"])


def resolvable(pairs: pd.DataFrame) -> Optional[tuple[float, int, float, int]]:
    """(smallest resolved difference, typical n pairs, median sd, comparisons
    used), or None when no comparison has two pairs and a spread."""
    ok = pairs[(pairs["n_pairs"] >= 2) & np.isfinite(pairs["sd_diff"].astype(float))]
    if ok.empty:
        return None
    sd = float(np.median(ok["sd_diff"].astype(float)))
    n = int(np.median(ok["n_pairs"].astype(int)))   # the lower middle when even: conservative
    return ci_halfwidth(sd / math.sqrt(n), n), n, sd, len(ok)
