"""Result tables and figures regenerated from the MLflow store.

    python -m bench.tables [--experiment NAME] [--sweep SWEEP_ID] [--out bench-results]

Reads the study's runs in bulk (`bench.results.store`), keeps the FINISHED job
runs (the latest one per `config_hash` when a config was rerun), aggregates
their final metric values over seeds (`bench.results.aggregate`), and writes
into --out:

    elbo.md/.csv                 val/elbo, val/iwae, val/recon (and trainset/elbo where logged)
    grad.md/.csv                 grad/log10_var, grad/snr, grad/bias
    collapse.md/.csv             val/kl and the collapse/latent-use metrics
    cost.md/.csv                 perf/steps_per_s, perf/peak_mem_mb, wall_s,
                                 grad/seconds_per_estimate, cost/f_evals,
                                 model/parameters, model/trainable_parameters
    adherence.md/.csv            gen/class_accuracy, gen/classifier_accuracy
                                 (only when runs logged them: eval.samples=true)
    collapse_by_setting.md/.csv  collapse metrics per KL schedule × free bits
    paired.md/.csv               each pair of estimator variants on the same seeds,
                                 per table above (but collapse_by_setting), on its
                                 headline metric: difference ± 95% CI, paired
                                 t-test, Holm within the group (bench.results.paired);
                                 where the conditioning type varies, also each pair
                                 of settings (model options · conditioning) per
                                 estimator, for elbo and adherence
    budget.md/.csv               val/elbo and val/iwae at a common budget of
                                 f-evaluations and of training seconds, and the
                                 work-normalised gradient variance (bench.results.budget)
    status.md, status_runs.csv, status_sweeps.csv, status_skipped.csv
                                 every FAILED / KILLED / unfinished run with its
                                 failure_reason, each sweep's counts, and each
                                 skipped job with the earlier run it reused; lost
                                 runs (bench.tracking.liveness) marked, listed apart
                                 (bench.results.status)
    figures/*.png                (bench.results.plots)

Cells are mean ± the half-width of the 95% confidence interval over runs
(Student t, n−1 degrees of freedom; a one-run cell holds its value alone, and
one note under the table says so); the CSVs
hold mean, se, ci95 and n per metric. Numbers follow one digit rule
(bench.results.format); every table has a legend of its columns
(bench.results.columns). Rows are grouped by task × estimator × conditioning,
plus latent, backbone, backbone_mode (params model.*), kl, free_bits and
free_bits_mode where those vary, plus `variant` / `task_variant` where an
estimator's (task's) options vary within the selection: the name followed by
the options that vary among that name's runs, e.g.
`reinforce(baseline=ema,n_samples=1)` or `toy(t=0.499)`; column names are the
tag and metric names verbatim. Output is sorted and formatted
deterministically: the same runs give byte-identical .md and .csv files. With
--sweep (or when all jobs belong to one sweep) the files are also logged as
artifacts to the sweep's parent run under `tables/`. The tracking URI is
`bench.tracking.store.resolve_tracking_uri()`; a sqlite store that does not
exist is not created (one line naming the URI, exit 2). Without --experiment
the experiment is the one with the most recent run (with --sweep, the one
holding that sweep), named in one line with the others holding runs. Exit
status 2, with a message listing what exists, when nothing matches.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from ..config.schema import TrackingConf
from .aggregate import (ALWAYS, IF_VARIED, KEY_ORDER, VARIANTS, add_settings,
                        add_variants, aggregate, dedupe, group_keys, model_legend)
from .budget import CURVE_KEYS as BUDGET_KEYS, budget_tables
from .columns import legend
from .format import agg_markdown, write_csv
from .paired import paired_tables
from .status import status_tables, write_status
from .store import MISSING, NoRunsError, Study, fetch_curves, load_study, pick_experiment

# what bench.results.study, the tests and older callers import from here
__all__ = ["ALWAYS", "IF_VARIED", "KEY_ORDER", "VARIANTS", "add_settings", "add_variants",
           "aggregate", "dedupe", "group_keys", "status_tables", "table_specs", "write_results",
           "sweep_parent", "default_experiment", "main"]

ELBO = ("val/elbo", "val/iwae", "val/recon", "trainset/elbo")
GRAD = ("grad/log10_var", "grad/snr", "grad/bias")
COLLAPSE = ("val/kl", "collapse/active_units", "collapse/mutual_info", "collapse/kl_min",
            "collapse/code_perplexity", "latent/strategy_nmi")
COST = ("perf/steps_per_s", "perf/peak_mem_mb", "wall_s", "grad/seconds_per_estimate",
        "cost/f_evals", "model/parameters", "model/trainable_parameters")
ADHERENCE = ("gen/class_accuracy", "gen/classifier_accuracy")
SETTING = ("val/elbo", "val/kl", "collapse/active_units", "collapse/mutual_info", "collapse/kl_min",
           "latent/strategy_nmi")
COMPARED = ("elbo", "grad", "collapse", "cost", "adherence")   # paired.md compares these
OUTPUTS = COMPARED + ("collapse_by_setting", "paired", "budget")
CELLS = ("Cells: mean ± half-width of the 95% confidence interval of the mean over runs "
         "(Student t, n − 1 degrees of freedom); `(n=k)` where only k of the row's runs logged "
         "the metric; `–` where none did. The CSV holds per metric mean, se (standard error), "
         "ci95 (that half-width) and n.\n\n")


def table_specs(finished: pd.DataFrame, by: list) -> dict[str, tuple[str, list, list]]:
    """{file stem: (title, keys, metrics present)}: adherence only where runs logged
    gen/*, collapse_by_setting only where runs carry KL settings."""
    specs = {"elbo": ("Final ELBO", by, ELBO), "grad": ("Gradient statistics", by, GRAD),
             "collapse": ("Posterior collapse and latent use", by, COLLAPSE),
             "cost": ("Cost", by, COST),
             "adherence": ("Conditioning adherence of generated samples", by, ADHERENCE)}
    if set(finished.get("kl", [])) - {MISSING} or set(finished.get("free_bits", [])) - {MISSING}:
        if_key = set(VARIANTS) | {"backbone", "backbone_mode"}   # only where they are keys
        sby = [c for c in ("task", "task_variant", "latent", "backbone", "backbone_mode", "kl",
                           "free_bits", "estimator", "variant")
               if (c != "latent" or finished["latent"].nunique() > 1)
               and (c not in if_key or c in by)]
        specs["collapse_by_setting"] = (
            "Collapse per KL schedule and free bits (pooled over conditioning)", sby, SETTING)
    out = {}
    for name, (title, keys, metrics) in specs.items():
        metrics = [m for m in metrics if m in finished and finished[m].notna().any()]
        if metrics or name != "adherence":
            out[name] = (title, keys, metrics)
    return out


def write_results(client, study: Study, out: Path) -> list[Path]:
    """Write every table and figure into out; return the files written."""
    from . import plots  # matplotlib only when writing

    out.mkdir(parents=True, exist_ok=True)
    finished, superseded = dedupe(study.jobs[study.jobs["status"] == "FINISHED"])
    finished = add_settings(add_variants(finished))
    by, constant = group_keys(finished)
    scope = f"experiment `{study.experiment}`" + (f", sweep `{study.sweep}`" if study.sweep else "")
    settings = ("; all runs: " + ", ".join(f"{k}={v}" for k, v in constant.items())
                if constant else "")
    note = f"{scope}: {len(finished)} finished runs; final values, n runs (seeds) per row{settings}"
    for name in OUTPUTS:  # a table not produced this time must not linger from last time
        for ext in (".md", ".csv"):
            (out / f"{name}{ext}").unlink(missing_ok=True)
    specs = table_specs(finished, by)
    text, pairs, resolved = paired_tables(
        finished, by, {k: specs[k][2] for k in COMPARED if k in specs})
    written = []
    for name, (title, keys, metrics) in specs.items():
        agg = aggregate(finished, keys, metrics)
        also = (f" Paired comparisons (`paired.md`): {resolved[name]}." if name in resolved else "")
        (out / f"{name}.md").write_text(
            f"# {title}\n\n{note}.{also}\n\n" + agg_markdown(agg, keys, metrics, "ci95")
            + "\n" + CELLS + model_legend(finished, keys)
            + legend(list(keys) + ["n"] + metrics, finished))
        write_csv(agg, out / f"{name}.csv")
        written += [out / f"{name}.md", out / f"{name}.csv"]
    (out / "paired.md").write_text(text)
    write_csv(pairs, out / "paired.csv")

    curves = fetch_curves(client, finished["run_id"],
                          list(dict.fromkeys(plots.CURVE_KEYS + BUDGET_KEYS)))
    text, budget = budget_tables(finished, curves, by,
                                 f"{scope}: {len(finished)} finished runs{settings}")
    (out / "budget.md").write_text(text)
    write_csv(budget, out / "budget.csv")
    written += [out / f for f in ("paired.md", "paired.csv", "budget.md", "budget.csv")]
    written += write_status(study, len(finished), superseded, scope, out)
    written += plots.write_figures(finished, curves, out / "figures", client=client)
    return written


def sweep_parent(study: Study) -> Optional[str]:
    """The parent to log artifacts to: the requested sweep's, or the only sweep's."""
    sweeps = set(study.jobs["sweep_id"]) | set(study.parents["sweep_id"].dropna())
    if study.sweep is None and (len(sweeps) != 1 or MISSING in sweeps):
        return None
    p = study.parents
    return p["run_id"].iloc[-1] if len(p) else None


def default_experiment() -> str:
    """The harness's experiment name: the default of `mlflow.experiment`."""
    return TrackingConf.experiment


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default=None,
                    help="MLflow experiment (default: the one with the most recent run; "
                         "with --sweep, the one holding that sweep)")
    ap.add_argument("--sweep", default=None, help="sweep_id tag of one sweep (default: all runs)")
    ap.add_argument("--out", default="bench-results", type=Path,
                    help="output folder (default ./bench-results; results/ holds the committed studies)")
    ap.add_argument("--lost-after-s", type=float, default=TrackingConf.lost_after_s,
                    help="mark RUNNING runs with an older heartbeat lost (default mlflow.lost_after_s)")
    ap.add_argument("--no-artifacts", action="store_true",
                    help="do not log the files to the sweep's parent run")
    args = ap.parse_args(argv)

    from bench.tracking.store import client as store_client, resolve_tracking_uri

    uri = resolve_tracking_uri()
    # opening a sqlite URI creates the file: a typo'd path or the wrong folder
    # must not leave an empty store behind
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        print(f"bench.tables: no MLflow store at {uri}: run from the folder holding mlflow.db, "
              f"or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    client = store_client(uri)
    try:
        experiment = args.experiment
        if experiment is None:
            holding = pick_experiment(client, args.sweep)
            experiment = holding[0]
            others = f"; also holding runs: {', '.join(map(repr, holding[1:]))}" if holding[1:] else ""
            print(f"bench.tables: experiment {experiment!r}, the one with the most recent run"
                  f"{others} (--experiment NAME picks one)", file=sys.stderr)
        study = load_study(client, experiment, args.sweep, lost_after_s=args.lost_after_s)
    except NoRunsError as e:
        print(f"bench.tables: {e}", file=sys.stderr)
        return 2
    written = write_results(client, study, args.out)
    parent = None if args.no_artifacts else sweep_parent(study)
    if parent:
        for f in written:
            sub = "tables/figures" if f.parent.name == "figures" else "tables"
            client.log_artifact(parent, str(f), artifact_path=sub)
    for f in written:
        print(f)
    if parent:
        print(f"logged {len(written)} files to parent run {parent} under tables/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
