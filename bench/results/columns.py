"""What every column of the result tables means: one mapping, for the tables'
legends and the figures' axis labels.

    COLUMNS["val/elbo"]      -> Column(words, unit, range, better, note)
    axis_label("val/elbo")   -> "validation ELBO (nats, higher is better)"
    legend(header, runs)     -> markdown: one line per column of a table

`COLUMNS` holds the metrics the harness logs (val/*, grad/*, collapse/*,
latent/*, gen/*, perf/*, cost/*, model/*), the values the tables derive from
them (wall_s, budgets, values at a budget, work-normalised variance, paired
statistics) and the grouping and status columns. A column not in it gets a
legend line saying so, never a silent gap. Ranges that depend on the latent's
size (active units, codes in use) are completed from the runs' params
`latent.D` / `latent.K` by `latent_context`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import pandas as pd


class Column(NamedTuple):
    words: str          # short: fits an axis label
    unit: str = ""
    range: str = ""
    better: str = ""    # "higher" | "lower" | ""
    note: str = ""      # how it is computed, for the legend


_NATS_LE0 = ("≤ 0 for discrete likelihoods (Bernoulli pixels, tokens); unbounded with a "
             "Gaussian likelihood")
_FRACTION = "[0, 1]"

COLUMNS: dict[str, Column] = {
    # ---- final metrics (bench.job.evaluate, bench.job.train)
    "val/elbo": Column("validation ELBO", "nats", _NATS_LE0, "higher",
                       "E_q log p(x|z,c) − KL(q(z|x,c) ‖ p(z|c)) on the held-out split "
                       "(the toy: E f)"),
    "val/iwae": Column("validation IWAE bound", "nats", _NATS_LE0 + "; ≥ val/elbo in expectation",
                       "higher", "importance-weighted bound with eval.iwae_samples samples"),
    "trainset/elbo": Column("training-set ELBO", "nats", _NATS_LE0, "higher",
                            "single-sample ELBO log p(x|z) + log p(z) − log q(z|x), one z per "
                            "image, on the first eval.train_elbo_size training images (one fixed "
                            "binarisation): the measure REBAR, RELAX and DisARM report"),
    "val/recon": Column("validation reconstruction term", "nats", _NATS_LE0, "higher",
                        "E_q log p(x|z,c)"),
    "val/kl": Column("validation KL", "nats", "≥ 0; near 0 = posterior collapse", "",
                     "KL(q(z|x,c) ‖ p(z|c)), analytic, summed over latent variables"),
    "grad/log10_var": Column("log10 gradient variance", "log10 of squared gradient units",
                             "any real", "lower",
                             "log10 of the trace of the covariance of independent gradient "
                             "estimates over the encoder's parameters, at fixed parameters"),
    "grad/snr": Column("gradient signal-to-noise ratio", "ratio", "≥ 0", "higher",
                       "mean over encoder parameters of |E g| / sd(g)"),
    "grad/bias": Column("gradient bias", "gradient units", "≥ 0; 0 = unbiased", "lower",
                        "‖E g − g_exact‖₂ against exact enumeration (small categorical "
                        "latents only)"),
    "grad/cosine": Column("cosine to the exact gradient", "", "[−1, 1]", "higher",
                          "cos(E g, g_exact)"),
    "grad/seconds_per_estimate": Column("seconds per gradient estimate", "s", "> 0", "lower"),
    "collapse/active_units": Column("active units", "count", "0 to {units}", "higher",
                                    "units whose posterior mean varies over x (Cov > 0.01); "
                                    "a categorical unit is a (variable, category) pair"),
    "collapse/mutual_info": Column("mutual information I(x; z)", "nats", "≥ 0 (≤ D log K for "
                                   "categorical codes)", "higher"),
    "collapse/kl_min": Column("smallest per-variable KL", "nats", "≥ 0", "",
                              "min over latent variables of E_x KL(q(z_d|x) ‖ p(z_d))"),
    "collapse/kl_mean": Column("mean per-variable KL", "nats", "≥ 0"),
    "collapse/kl_below_0.01": Column("collapsed variables (KL < 0.01 nats)", "count",
                                     "0 to {variables}", "lower"),
    "collapse/code_perplexity": Column("codes in use per variable", "perplexity",
                                       "1 to {categories}", "higher",
                                       "mean over variables of exp H(mean_x q(z_d|x))"),
    "collapse/decoder_sensitivity": Column("decoder sensitivity to z", "nats", "≥ 0; near 0 = "
                                           "the decoder ignores z", "higher",
                                           "mean |log p(x|z_q,c) − log p(x|z_p,c)|"),
    "latent/strategy_nmi": Column("NMI of the code with the hidden strategy", "fraction",
                                  _FRACTION + "; 0 = not found, 1 = found", "higher"),
    "gen/class_accuracy": Column("adherence of generated samples", "fraction", _FRACTION, "higher",
                                 "share of prior samples that a classifier trained on real "
                                 "data labels as the requested class"),
    "gen/classifier_accuracy": Column("adherence classifier's held-out accuracy", "fraction",
                                      _FRACTION, "higher", "the ceiling of gen/class_accuracy"),
    "perf/steps_per_s": Column("training speed", "steps/s", "> 0", "higher",
                               "optimiser steps per second of training time (evaluation excluded)"),
    "perf/peak_mem_mb": Column("peak memory", "MB (2^20 bytes)", "> 0", "lower",
                               "CUDA: peak allocated; CPU: the process's peak resident set"),
    "perf/wall_seconds": Column("wall time since training began", "s", "≥ 0", "",
                                "including evaluations"),
    "perf/eval_seconds": Column("evaluation time so far", "s", "≥ 0"),
    "wall_s": Column("run wall time", "s", "≥ 0", "", "run start to end, setup included"),
    "cost/f_evals": Column("evaluations of f per example", "f-evaluations", "≥ 0", "",
                           "steps × the estimator's f-evaluations per step"),
    "model/parameters": Column("model parameters", "count", "≥ 0"),
    "model/trainable_parameters": Column("trainable model parameters", "count",
                                         "0 to model/parameters", "",
                                         "what a frozen or LoRA backbone leaves to train"),
    # ---- derived by bench.results.budget
    "budget/f_evals": Column("common f-evaluation budget", "f-evaluations", "≥ 0", "",
                             "the largest budget every run of the group reached"),
    "budget/train_seconds": Column("common training-time budget", "s", "≥ 0", "",
                                   "the largest every run of the group reached; training time "
                                   "= perf/wall_seconds − perf/eval_seconds"),
    "val/elbo@f_evals": Column("validation ELBO at the f-evaluation budget", "nats", _NATS_LE0,
                               "higher", "each run's curve linearly interpolated at the budget"),
    "val/iwae@f_evals": Column("validation IWAE bound at the f-evaluation budget", "nats",
                               _NATS_LE0, "higher", "each run's curve linearly interpolated"),
    "val/elbo@train_seconds": Column("validation ELBO at the training-time budget", "nats",
                                     _NATS_LE0, "higher", "each run's curve linearly interpolated"),
    "val/iwae@train_seconds": Column("validation IWAE bound at the training-time budget", "nats",
                                     _NATS_LE0, "higher", "each run's curve linearly interpolated"),
    "cost/f_evals_per_step": Column("f-evaluations per step", "f-evaluations", "≥ 1", "",
                                    "per example: the cost of one gradient estimate"),
    "grad/log10_work_var": Column("work-normalised gradient variance", "log10 of squared gradient "
                                  "units × f-evaluations", "any real", "lower",
                                  "log10(Var × f-evaluations per estimate) = grad/log10_var + "
                                  "log10(cost/f_evals_per_step)"),
    # ---- grouping keys
    "task": Column("task (data set)"),
    "task_variant": Column("task with the options that vary among its runs", "", "",
                           "", "e.g. toy(t=0.499)"),
    "latent": Column("latent type", "", "categorical | gaussian"),
    "estimator": Column("gradient estimator"),
    "variant": Column("estimator with the options that vary among its runs", "", "", "",
                      "e.g. reinforce(baseline=ema)"),
    "conditioning": Column("how the condition enters the model"),
    "model": Column("model", "", "", "",
                    "the label an experiment overlay gave the model (`model.label`, e.g. "
                    "`linear`; its options listed above), else the model.* options that "
                    "vary among the runs (e.g. the hidden layers)"),
    "backbone": Column("model.backbone", "", "separate | shared", "",
                       "separate networks, or one shared base model"),
    "backbone_mode": Column("model.backbone_mode", "", "frozen | lora | full", "",
                            "how the shared backbone trains"),
    "kl": Column("KL weight schedule β(t)"),
    "free_bits": Column("free bits λ", "nats", "≥ 0"),
    "free_bits_mode": Column("free-bits mode", "", "batch | per_dim | total | none"),
    "seed": Column("seed"),
    # ---- figure axes
    "step": Column("training step", "optimiser updates"),
    "train_seconds": Column("training time", "s", "≥ 0", "",
                            "perf/wall_seconds − perf/eval_seconds: evaluation excluded"),
    "n": Column("runs (seeds) in the row", "count", "≥ 1"),
    # ---- paired comparisons (bench.results.stats)
    "comparison": Column("first − second estimator variant", "", "", "",
                         "a positive difference: the first is higher"),
    "n_pairs": Column("seeds run by both", "count", "≥ 0"),
    "seeds": Column("the paired seeds"),
    "difference": Column("mean paired difference ± 95% CI half-width", "the metric's unit"),
    "p": Column("paired t-test p-value", "probability", _FRACTION, "",
                "two-sided, n_pairs − 1 degrees of freedom"),
    "p_holm": Column("Holm-adjusted p-value", "probability", _FRACTION, "",
                     "within the group's comparisons; * = below 0.05"),
    # ---- status tables
    "status": Column("run status", "", "FAILED | FAILED (lost) | KILLED | RUNNING | "
                     "FINISHED (superseded) | ..."),
    "sweep_id": Column("sweep the run belongs to (- = a single run)"),
    "run_id": Column("MLflow run id"),
    "failure_reason": Column("why the run failed"),
    "job": Column("job number within the sweep"),
    "parent_run_id": Column("the sweep's parent run"),
    "parent_status": Column("the parent run's status"),
    "parent_wall_s": Column("sweep wall time", "s", "≥ 0", "", "parent start to end"),
    "runs.finished": Column("job runs finished", "count", "≥ 0"),
    "runs.failed": Column("job runs failed (not lost)", "count", "≥ 0"),
    "runs.lost": Column("job runs lost (no heartbeat)", "count", "≥ 0"),
    "runs.killed": Column("job runs killed", "count", "≥ 0"),
    "runs.other": Column("job runs still running", "count", "≥ 0"),
    "sweep.finished": Column("finished count the sweep wrote at its end", "count", "≥ 0"),
    "sweep.failed": Column("failed count the sweep wrote at its end", "count", "≥ 0"),
    "sweep.skipped": Column("skipped count the sweep wrote at its end", "count", "≥ 0"),
    "sweep.killed": Column("killed count the sweep wrote at its end", "count", "≥ 0"),
}


def axis_label(name: str) -> str:
    """Words and unit for a figure axis: 'validation ELBO (nats, higher is better)'."""
    c = COLUMNS.get(name)
    if c is None:
        return name
    extra = [c.unit] if c.unit else []
    extra += [f"{c.better} is better"] if c.better else []
    return f"{c.words} ({', '.join(extra)})" if extra else c.words


def latent_context(runs: Optional[pd.DataFrame]) -> dict[str, str]:
    """{units, variables, categories}: the latent sizes the runs report, in words,
    for ranges such as 'active units: 0 to D·K = 12'. Sizes come from the params
    latent.D and latent.K; where a run left them null (the task's default sizes,
    which runs do not log) the words say so instead of guessing. Several sizes
    in one selection: each, with its task and latent type."""
    if runs is None or runs.empty or "params.latent.D" not in runs:
        return _sizes_words("?", None, None)
    column = lambda c: runs[c] if c in runs else pd.Series(None, index=runs.index)  # noqa: E731
    sizes = {(str(t), str(kind), _int(D), _int(K)) for t, kind, D, K in zip(
        column("task"), column("latent"), column("params.latent.D"), column("params.latent.K"))}
    if len(sizes) == 1:
        _, kind, D, K = next(iter(sizes))
        return _sizes_words(kind, D, K)
    parts: dict[str, list] = {"units": [], "variables": [], "categories": []}
    for task, kind, D, K in sorted(sizes, key=str):
        for k, v in _sizes_words(kind, D, K).items():
            parts[k].append(f"{v} ({task}, {kind})")
    return {k: "; ".join(v) for k, v in parts.items()}


def _sizes_words(kind: str, D: Optional[int], K: Optional[int]) -> dict[str, str]:
    if D is None:       # null in the config: the task's default sizes, not logged
        return {"units": "D·K (categorical) or D units; latent.D is the task's default, "
                         "not logged",
                "variables": "D (the task's default, not logged)",
                "categories": "K (the task's default, not logged)"}
    if kind == "gaussian" or K is None:
        return {"units": f"D = {D} units", "variables": f"D = {D}", "categories": "K"}
    return {"units": f"D·K = {D}·{K} = {D * K} units", "variables": f"D = {D}",
            "categories": f"K = {K}"}


def _int(value) -> Optional[int]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return int(x) if x == x and x.is_integer() else None


def legend(header: Sequence[str], runs: Optional[pd.DataFrame] = None,
           extra: Optional[dict[str, Column]] = None) -> str:
    """Markdown: a 'Columns' list with each column's meaning, unit and range;
    `extra` describes columns particular to one table (or overrides)."""
    ctx = latent_context(runs)
    lines = ["Columns:", ""]
    for name in dict.fromkeys(header):
        c = (extra or {}).get(name, COLUMNS.get(name))
        if c is None:
            lines.append(f"- `{name}`: (not described in bench.results.columns)")
            continue
        text = c.words + (f": {c.note}" if c.note else "")
        facts = [f"unit {c.unit}"] if c.unit else []
        facts += [f"range {c.range.format(**ctx)}"] if c.range else []
        facts += [f"{c.better} is better"] if c.better else []
        lines.append(f"- `{name}`: {text}" + (f" ({'; '.join(facts)})" if facts else "") + ".")
    return "\n".join(lines) + "\n"
