"""From the study's runs to table rows: which runs count, how they are labelled
and grouped, and their mean, standard error and 95% confidence interval.

- `dedupe`: the latest FINISHED run per config_hash (a rerun supersedes).
- `add_variants`: `variant` / `task_variant` labels, the estimator (task) name
  followed by the options that vary among that name's runs.
- `add_settings`: model settings read from params (`model`: the label an
  experiment overlay gave the model, `model.label`, or else the model options
  that vary in the selection; `backbone`, `backbone_mode`), `MISSING` where a
  run did not set them; `model_legend` lists what each label stands for.
- `group_keys`: task × estimator × conditioning, plus latent, backbone,
  backbone_mode, kl, free_bits, free_bits_mode and the variant labels where
  they vary in the selection; and the settings that are constant, to state.
- `aggregate`: one row per group with n and, per metric, mean, se (sd with
  ddof=1 over sqrt(n)), ci95 (the half-width of the Student-t 95% interval of
  the mean, n−1 degrees of freedom) and n (finite values); se and ci95 are
  NaN for n < 2.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .format import natkey, sort_rows
from .stats import ci_halfwidth
from .store import MISSING
from ..tracking.identity import HASH_DEFAULTS

ALWAYS = ("task", "estimator", "conditioning")   # group keys shown even when constant
IF_VARIED = ("model", "latent", "backbone", "backbone_mode", "kl", "free_bits",
             "free_bits_mode")                    # shown only when they vary
KEY_ORDER = ("task", "task_variant", "model", "latent", "estimator", "variant", "conditioning",
             "backbone", "backbone_mode", "kl", "free_bits", "free_bits_mode")
# label column -> the tag it refines; options come from the params.<tag>.* columns
VARIANTS = {"variant": "estimator", "task_variant": "task"}
# options that say where the data is, not what it is: the same files read from
# two folders (a default that became explicit) are one task, not two variants
PLACE = ("params.task.data_dir",)
# how an estimator's own parameters are trained: part of its variant, not a
# tuned value; a run stored before the key existed computed its default
# (bench.tracking.identity.HASH_DEFAULTS), so a missing value reads as that
ESTIMATOR_TRAINING = ("params.train.estimator_beta1",)
# label column -> the param it is read from (settings that are no tag)
SETTINGS = {"backbone": "params.model.backbone", "backbone_mode": "params.model.backbone_mode"}
LABEL = "params.model.label"          # an overlay's name for its model (bench.config.schema)
MODEL_OPTIONS = "model_options"       # the model options a `model` label stands for
STATS = ("mean", "se", "ci95", "n")


def compared(by: Sequence[str]) -> str:
    """The column whose values a table compares: the variant label where it is a key."""
    return "variant" if "variant" in by else "estimator"


def aggregate(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per group: the keys, n runs, and per metric mean, se, ci95, n."""
    by = list(by)
    cols = by + ["n"] + [f"{m}.{s}" for m in metrics for s in STATS]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    # Fixed summation order, whatever order the store returned the runs in.
    runs = sort_rows(runs, by + [c for c in ("seed", "run_id") if c in runs])
    rows = []
    for keys, g in runs.groupby(by, sort=False):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,)))
        row["n"] = len(g)
        for m in metrics:
            v = g[m].to_numpy(dtype=float) if m in g else np.array([])
            v = v[np.isfinite(v)]
            se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
            row[f"{m}.mean"] = float(v.mean()) if len(v) else math.nan
            row[f"{m}.se"] = se
            row[f"{m}.ci95"] = ci_halfwidth(se, len(v))
            row[f"{m}.n"] = len(v)
        rows.append(row)
    return sort_rows(pd.DataFrame(rows, columns=cols), by)


def add_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `variant` and `task_variant`: the estimator (task) name, followed by
    the options (params `estimator.*`, `task.*`) that vary among the runs of
    that name in this selection (for an estimator: within one task), in key
    order, e.g. reinforce(baseline=none,n_samples=1). A name whose runs share
    every option keeps the bare name, so values tuned once per task and
    estimator (train.lr is not an option; estimator.tau is) do not split it.
    Numbers are shown to 4 significant digits."""
    runs = runs.copy()
    for col, base in VARIANTS.items():
        if base not in runs:
            continue
        prefix = f"params.{base}."
        opts = sorted(c for c in runs if c.startswith(prefix) and c != prefix + "name"
                      and c not in PLACE)
        if base == "estimator":
            opts += [c for c in ESTIMATOR_TRAINING if c in runs]
        within = [base] + (["task"] if base != "task" and "task" in runs else [])
        labels = runs[base].astype(str).copy()
        for _, g in runs.groupby(within, sort=True):
            vals = g[opts].astype(object)
            for c in ESTIMATOR_TRAINING:
                if c in vals:
                    vals[c] = vals[c].fillna(str(HASH_DEFAULTS[c[len("params."):]]))
            vals = vals.fillna(MISSING).astype(str)
            varying = [c for c in opts if vals[c].apply(_short).nunique() > 1]
            if varying:
                labels.loc[g.index] = [
                    f"{name}(" + ",".join(f"{_opt(c, prefix)}={_short(v)}"
                                          for c, v in zip(varying, row)) + ")"
                    for name, row in zip(g[base].astype(str),
                                         vals[varying].itertuples(index=False))]
        runs[col] = labels
    return runs


def add_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Add the SETTINGS columns from params; MISSING where a run has none (the
    model family's default then applied)."""
    runs = runs.copy()
    for col, param in SETTINGS.items():
        runs[col] = (runs[param].fillna(MISSING).astype(str) if param in runs
                     else pd.Series(MISSING, index=runs.index, dtype=object))
    # `model`: the other model options that vary in the selection, e.g. the
    # linear and the nonlinear VAE of one experiment (encoder_hidden=[] vs [200, 200]),
    # shown as the overlay's label (`linear`) where the runs carry one
    # model.context is what an estimator's baseline or control variate sees, not
    # part of the VAE: RELAX on x beside the others on features is one model
    own = {p for p in SETTINGS.values()} | {"params.model.context", LABEL}
    opts = sorted(c for c in runs if c.startswith("params.model.") and c not in own)
    vals = runs[opts].fillna(MISSING).astype(str) if opts else pd.DataFrame(index=runs.index)
    varying = [c for c in opts if vals[c].nunique() > 1]
    if not varying:
        runs["model"] = runs[MODEL_OPTIONS] = pd.Series(MISSING, index=runs.index, dtype=object)
        return runs
    runs[MODEL_OPTIONS] = [",".join(f"{c[len('params.model.'):]}={_short(v)}"
                                    for c, v in zip(varying, row))
                           for row in vals[varying].itertuples(index=False)]
    # the overlay's label names the row where it stands for one set of options
    label = (runs[LABEL].astype(str).where(runs[LABEL].notna(), MISSING) if LABEL in runs
             else pd.Series(MISSING, index=runs.index, dtype=object)).replace("None", MISSING)
    one = runs[MODEL_OPTIONS].groupby(label).transform("nunique") == 1
    named = label != MISSING
    runs["model"] = runs[MODEL_OPTIONS]
    runs.loc[named & one, "model"] = label
    runs.loc[named & ~one, "model"] = label + "(" + runs[MODEL_OPTIONS] + ")"
    return runs


def model_legend(runs: pd.DataFrame, keys: Sequence[str]) -> str:
    """Markdown: what each `model` row label stands for, where a label is not
    its options spelled out (`linear`: encoder_hidden=[],...); '' otherwise."""
    if "model" not in keys or MODEL_OPTIONS not in runs:
        return ""
    named = runs.loc[runs["model"] != runs[MODEL_OPTIONS], ["model", MODEL_OPTIONS]]
    pairs = sorted(set(named.itertuples(index=False, name=None)), key=lambda p: natkey(p[0]))
    if not pairs:
        return ""
    return ("Models (`model`, the label an experiment overlay gave it in `model.label`, and "
            "the options that vary among the runs):\n\n"
            + "".join(f"- `{m}`: {o}\n" for m, o in pairs) + "\n`-`: not set (the model's default).\n\n")


def _opt(column: str, prefix: str) -> str:
    """An option's name in a label: without `params.<base>.`, or the last part
    of an ESTIMATOR_TRAINING key (train.estimator_beta1 -> estimator_beta1)."""
    return column[len(prefix):] if column.startswith(prefix) else column.rsplit(".", 1)[1]


def _short(value: str) -> str:
    """A number to 4 significant digits (0.0011205837 -> 0.001121); text as is."""
    try:
        x = float(value)
    except ValueError:
        return value
    return f"{x:.4g}" if math.isfinite(x) else value


def group_keys(runs: pd.DataFrame, always=ALWAYS, if_varied=IF_VARIED) -> tuple[list, dict]:
    """Keys to group by, in KEY_ORDER order, and the constant settings to state."""
    if_varied = [c for c in if_varied if c in runs]
    varied = {c for c in if_varied if runs[c].nunique() > 1} if len(runs) else set()
    # a variant label is a key when it says more than the name it refines
    varied |= {c for c, base in VARIANTS.items()
               if c in runs and base in runs and (runs[c] != runs[base].astype(str)).any()}
    keys = [c for c in KEY_ORDER if c in always or c in varied]
    constant = {c: runs[c].iloc[0] for c in if_varied
                if c not in keys and len(runs) and runs[c].iloc[0] != MISSING}
    return keys, constant


def dedupe(finished: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the latest FINISHED run per config_hash; return (kept, superseded)."""
    has = finished["config_hash"].notna()
    latest = finished[has].sort_values(["start_time", "run_id"], kind="mergesort")
    dup = latest.duplicated("config_hash", keep="last")
    kept = pd.concat([latest[~dup], finished[~has]])
    return kept, latest[dup]
