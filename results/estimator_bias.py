"""Bias and variance of every registered categorical estimator on two fixed
problems with exact gradients (tests/problems.py): a categorical one (K = 3)
and a Bernoulli one (K = 2, where arms applies).

    python results/estimator_bias.py     # writes results/estimator_bias.{md,csv}

New estimators in `estimators/` are picked up through the registry; one that
refuses a problem (check_latent, build or estimate raising ValueError) gets a
row saying why. Seeds are fixed and torch runs one thread, so reruns give
identical files (no timings, for that reason).
"""
from __future__ import annotations

import csv
import itertools
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import estimators  # noqa: E402
from estimators.exact import all_configs  # noqa: E402
from estimators.sampling import log_prob  # noqa: E402
from tests.problems import DTYPE, Problem  # noqa: E402

N = 20_000            # iid estimates per row
SEED = 0
MAX_TUPLES = 200_000  # enumeration limit for the exact gradient of a multi-sample bound
PROBLEMS = {
    "categorical B=3 D=2 K=3": dict(B=3, D=2, K=3, seed=0),
    "bernoulli B=3 D=3 K=2": dict(B=3, D=3, K=2, seed=1),
}
# options beyond the defaults worth a row of their own
VARIANTS = {
    "gumbel": [dict(hard=True)],
    "reinforce": [dict(baseline="none", n_samples=1)],
    "reinmax": [dict(tau=1.5)],   # the authors' MNIST-VAE temperature
    "arms": [dict(copula="gaussian")],
    "carms": [dict(copula="gaussian")],
    "double_cv": [dict(slope="mean")],   # the Taylor slope at E_q[z] (one more point)
    "gst": [dict(gap="p")],       # GST-p, the probability-dependent gap
    # each temperature moved on its own: backward dispersion, forward exploration
    "decoupled_st": [dict(tau_backward=0.5), dict(tau_forward=0.5)],
}
OUT = ROOT / "results"


def bound_gradient(problem: Problem, S: int) -> torch.Tensor:
    """Exact gradient of mean_b E[log (1/S) sum_s exp f(z_s)_b], by enumerating
    every S-tuple of configurations (the target of `vimco`)."""
    logits, w, f = problem.replicate(1)
    B, D, K = problem.logits.shape
    configs = all_configs(D, K, logits).unsqueeze(1).expand(-1, B, D, K)   # (N, B, D, K)
    f_all, logq = f(configs), log_prob(logits.reshape(B, D, K), configs)  # (N, B)
    idx = torch.tensor(list(itertools.product(range(configs.shape[0]), repeat=S)))  # (T, S)
    bound = torch.logsumexp(f_all[idx], 1) - math.log(S)                 # (T, B)
    total = (logq[idx].sum(1).exp() * bound).sum(0).mean()
    g = torch.autograd.grad(total, [logits, w])
    return torch.cat([g[0].reshape(-1), g[1].reshape(-1)])


def summarise(d: torch.Tensor, exact: torch.Tensor, n_logits: int) -> dict:
    """Relative bias with the Monte Carlo noise floor removed, its standard
    error, cosine, trace variance.

    E|mean - exact|^2 = |bias|^2 + tr(Cov)/N, so b2 = |mean - exact|^2 - tr(Cov)/N
    estimates |bias|^2 without the noise floor; se(b2)^2 ~ 4 d' Cov d / N +
    2 tr(Cov^2) / N^2 (d = mean - exact). Reported: sqrt(max(b2, 0)) / |exact|
    and its delta-method se (for b2 <= 0, the bias bound sqrt(se(b2)) / |exact|)."""
    n = d.shape[0]
    mean = d.mean(0)
    diff = mean - exact
    cov = torch.cov(d.T)
    b2 = float(diff @ diff - cov.trace() / n)
    se_b2 = float((4 * diff @ cov @ diff / n + 2 * (cov @ cov).trace() / n ** 2).sqrt())
    norm = float(exact.norm())
    if b2 > 0:
        rel, rel_se = math.sqrt(b2) / norm, se_b2 / (2 * math.sqrt(b2) * norm)
    else:
        rel, rel_se = 0.0, math.sqrt(se_b2) / norm
    return dict(rel_bias=rel, rel_bias_se=rel_se, bias_z=b2 / se_b2 if se_b2 > 0 else math.inf,
                cosine=float(torch.nn.functional.cosine_similarity(mean, exact, 0)),
                variance=float(cov.trace()), variance_logits=float(cov.diagonal()[:n_logits].sum()))


def row(problem_name: str, problem: Problem, name: str, opts: dict, exact_f: torch.Tensor) -> dict:
    cls = estimators.get(name)
    B, D, K = problem.logits.shape
    out = dict(problem=problem_name, estimator=name,
               options=",".join(f"{k}={v}" for k, v in opts.items()) or "defaults",
               unbiased=cls.unbiased, target=cls.target)
    try:
        est = estimators.build(name, **opts).to(DTYPE)
        est.check_latent(D, K)
        out["f_evals"] = est.f_evaluations(D, K)
        exact = exact_f
        if cls.target == "bound":
            if (K ** D) ** est.n_samples > MAX_TUPLES:
                return {**out, "note": f"skipped: exact bound needs (K^D)^S > {MAX_TUPLES} tuples"}
            exact = bound_gradient(problem, est.n_samples)
        torch.manual_seed(SEED)
        n = 1 if cls.deterministic else N
        d = problem.estimates(est, n)                                    # (N, P)
    except (ValueError, NotImplementedError) as e:
        return {**out, "note": f"skipped: {e}"}
    except Exception as e:    # another estimator's bug must not lose the whole table
        return {**out, "note": f"failed: {type(e).__name__}: {e}"}
    if cls.deterministic:
        # zero variance by construction: the bias is the single estimate's error
        err = float((d[0] - exact).norm() / exact.norm())
        cos = float(torch.nn.functional.cosine_similarity(d[0], exact, 0))
        stats = dict(rel_bias=err, rel_bias_se=0.0, bias_z=math.nan, variance=0.0,
                     variance_logits=0.0, cosine=cos)
    else:
        stats = summarise(d, exact, problem.logits.numel())
    v, vl = stats["variance"], stats["variance_logits"]
    return {**out, **stats, "log10_var": math.log10(v) if v > 0 else -math.inf,
            "log10_var_logits": math.log10(vl) if vl > 0 else -math.inf,
            "log10_var_x_f": math.log10(v * out["f_evals"]) if v > 0 else -math.inf,
            "note": "bias vs. its own bound" if cls.target == "bound" else ""}


def fmt(x, spec):
    if x is None or x == "":
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return "-inf" if x < 0 else ("" if math.isnan(x) else "inf")
    return format(x, spec)


COLUMNS = ["problem", "estimator", "options", "unbiased", "f_evals", "rel_bias", "rel_bias_se",
           "bias_z", "cosine", "log10_var", "log10_var_x_f", "log10_var_logits", "note"]


def markdown(rows: list[dict]) -> str:
    head = ["estimator", "options", "unbiased", "f-evals", "rel. bias", "± se", "z", "cosine",
            "log10 var", "log10 var×f-evals", "log10 var logits", "note"]
    lines = ["# Bias and variance of the categorical estimators", "",
             f"Generated by `python results/estimator_bias.py` (seed {SEED}, N = {N:,} iid "
             "estimates per row, float64, one torch thread). Problems from `tests/problems.py`: "
             "f(z)_b = -(<z, w> - t_b)^2 + 0.5 log q(z), gradient in the logits and w, exact by "
             "enumeration. f is quadratic in z, which is the case where Heun's rule is exact: "
             "`reinmax` at its default tau = 1 is unbiased on both problems (a property of f, "
             "not of ReinMax in general; see tests/test_estimators_biased.py for a quartic f).", ""]
    for problem in PROBLEMS:
        lines += [f"## {problem}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for r in (r for r in rows if r["problem"] == problem):
            cells = [r["estimator"], r["options"], "yes" if r["unbiased"] else "no",
                     fmt(r.get("f_evals"), "d"), fmt(r.get("rel_bias"), ".4f"),
                     fmt(r.get("rel_bias_se"), ".4f"), fmt(r.get("bias_z"), ".1f"),
                     fmt(r.get("cosine"), ".4f"), fmt(r.get("log10_var"), ".3f"),
                     fmt(r.get("log10_var_x_f"), ".3f"), fmt(r.get("log10_var_logits"), ".3f"),
                     r.get("note", "").replace("|", "/")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "**Legend.** One row per estimator (defaults, plus the variants named in `options`), "
        "for every registered estimator with `latent == \"categorical\"`; Gaussian ones are "
        "not listed. *unbiased*: the class trait. *f-evals*: `f_evaluations(D, K)`, evaluations "
        "of f per example per estimate. *rel. bias*: |E g - g_exact| / |g_exact| over all "
        "parameters (logits and w), dimensionless, >= 0, with the Monte Carlo noise floor "
        "tr(Cov)/N removed from |mean - g_exact|^2 before the square root, so an unbiased "
        "estimator reads about 0; *± se* its standard error (where the squared bias is not "
        "positive, a bound of one se). *z*: squared bias over its standard error; |z| < 5 is "
        "consistent with no bias. *cosine*: cosine similarity of the mean estimate and the "
        "exact gradient, in [-1, 1]. *log10 var*: log10 of the trace of the covariance of one "
        "estimate (sum of per-coordinate variances, all parameters; the unit is that of the "
        "squared gradient); *log10 var×f-evals*: the same times f-evals, variance at equal "
        "compute (lower is better); *log10 var logits*: the trace over the logits' gradient "
        "only, where the estimators differ (the gradient in w is f's pathwise gradient at the "
        "samples, which an estimator changes only through what it feeds f and how many "
        "samples it averages). `vimco` targets its multi-sample bound: its bias is against "
        "the exact gradient of that bound. `exact` is deterministic (variance 0, shown as "
        "-inf). Estimators with parameters of their own (rebar, relax, learned "
        "baselines) are evaluated at initialisation, before any training of those "
        "parameters. *skipped*: the estimator refused the problem, with its message.", ""]
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for problem_name, spec in PROBLEMS.items():
        problem = Problem.make(**spec)
        exact = problem.exact()
        for name in estimators.names():
            if estimators.get(name).latent != "categorical":
                continue
            for opts in [{}] + VARIANTS.get(name, []):
                rows.append(row(problem_name, problem, name, opts, exact))
                r = rows[-1]
                print(f"{problem_name:26s} {name:12s} {r['options']:28s} "
                      f"bias {fmt(r.get('rel_bias'), '.4f'):>7s} "
                      f"var {fmt(r.get('log10_var'), '.3f'):>7s} {r.get('note', '')[:60]}",
                      flush=True)
    (OUT / "estimator_bias.md").write_text(markdown(rows))
    with open(OUT / "estimator_bias.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS + ["target", "variance", "variance_logits"],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
