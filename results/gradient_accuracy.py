"""Gradient accuracy on the 8-category x 4-variable MNIST VAE: the study of
ReinMax (Liu et al., NeurIPS 2023, sec. 6.1; `analyze_gradient` in the
authors' mnist_vae/model/vae.py), for every registered categorical estimator.

    python results/gradient_accuracy.py [--steps 2000] [--n 256] [--batch 50]
    # writes results/gradient_accuracy.md, .csv and .png
    python results/gradient_accuracy.py --plot   # redraws the .png from the .csv
    python results/gradient_accuracy.py --only gst,decoupled_st
    # reruns the rows of those estimators and keeps the others from the .csv

The model is `experiment=reinmax_vae` (784-512-256-32 encoder, 32-256-512-784
decoder, uniform prior, mnist5k). As in the paper the gradient is taken with
respect to the encoder's logits theta (B, D, K) of the reconstruction term
E_q[log p(x | z)] only (the KL is analytic for every estimator), on one fixed
training batch, and summarised by
    relative bias  |E g - g*| / |g*|        g* exact: 8^4 = 4,096 configurations
    relative std   |sd(g)| / |E g|          (norms over all B*D*K coordinates)
    cosine         cos(E g, g*)
from `--n` independent estimates, at initialisation and after `--steps`
training steps with ReinMax (the overlay's estimator and settings). The bias
column has a Monte Carlo floor of about relative std / sqrt(n): smaller
biases cannot be resolved, and the table states that floor per row.

Estimators: each categorical one whose target is E_q[f] (vimco's target is a
multi-sample bound and has another exact gradient), with its conf/estimator
defaults, and the 8x4 temperatures of the ReinMax appendix where published
(ReinMax 1.3, ST 1.3, STGS = gumbel hard 0.5, GR-MCK = gumbel_rao 0.5). One
that refuses K = 8 (arms: Bernoulli only) gets a row saying so. Estimators
with their own parameters (rebar's eta and tau, relax's network) are at their
initial values: the study measures the estimator, not its tuning.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import estimators  # noqa: E402
from bench.config import compose, plain  # noqa: E402
from bench.job.train import Trainer  # noqa: E402
from estimators.exact import Exact  # noqa: E402
from estimators.stats import logit_gradient_stats  # noqa: E402

OUT = ROOT / "results" / "gradient_accuracy.md"
CSV, PNG = OUT.with_suffix(".csv"), OUT.with_suffix(".png")
COLUMNS = ("estimator", "when", "bias", "floor", "std", "cos", "error")
NOTES = """
Reading it: an unbiased estimator (reinforce, rebar, relax, indecater,
unordered_set, double_cv) should
show a relative bias at its floor, and does; a biased one (the straight-through
family and the relaxations) shows a bias above it. Estimators keep their
conf/estimator defaults (reinforce: leave-one-out with 4 samples; indecater: one
sample summed over the D*K = 32 single-variable changes), so rows differ in cost
per estimate. relax's control-variate network and rebar's eta and tau are at
their initial values here (no estimator optimiser runs in this study), which is
why relax's variance, unbiased as it is, swamps its mean at initialisation;
double_cv's learned scale alpha likewise stays at its start, 1, which after
training spreads more than plain leave-one-out (reinforce) at the same 4 draws.
"""
EXPERIMENT = "experiment=reinmax_vae"
# (row label, estimator name, options beyond conf/estimator/<name>.yaml)
PAPER_8x4 = {"reinmax": dict(tau=1.3), "st": dict(tau=1.3), "gumbel_rao": dict(tau=0.5)}
EXTRA_ROWS = [("gumbel (STGS: hard, tau 0.5)", "gumbel", dict(hard=True, tau=0.5))]


def rows_to_run() -> list[tuple[str, str, dict]]:
    rows = []
    for name in estimators.names():
        cls = estimators.get(name)
        if cls.latent != "categorical" or cls.deterministic or cls.target != "expectation":
            continue
        opts = {k: v for k, v in plain(compose([f"estimator={name}"])).estimator.items() if k != "name"}
        opts.update(PAPER_8x4.get(name, {}))
        label = name + "".join(f", {k} {v}" for k, v in PAPER_8x4.get(name, {}).items())
        rows.append((label, name, opts))
    for label, name, extra in EXTRA_ROWS:
        opts = {k: v for k, v in plain(compose([f"estimator={name}"])).estimator.items() if k != "name"}
        rows.append((label, name, {**opts, **extra}))
    return rows


def trained_model(steps: int, seed: int):
    """(task, model) of the overlay after `steps` ReinMax steps (0: at initialisation)."""
    cfg = plain(compose([EXPERIMENT, f"train.steps={max(steps, 1)}", f"seed={seed}", "device=cpu",
                         "eval.grad_stats=false", f"train.eval_every={max(steps, 1)}",
                         "eval.batch_size=100", "eval.iwae_samples=1", "progress=false"]))
    t = Trainer(cfg, log=lambda step, m: None)
    if steps > 0:
        t.run()
    return t.task, t.model.eval()


def accuracy(model, batch, est, n: int, exact_grad: torch.Tensor) -> dict:
    logits = model.posterior(batch).detach().requires_grad_()          # (B, D, K)
    f = lambda z: model.log_likelihood(batch, z)                      # noqa: E731  (S, B)
    t0 = time.perf_counter()
    s = logit_gradient_stats(est, logits, f, [logits], n=n)
    sd_norm = s.variance ** 0.5
    mean_norm = float(s.mean.norm())
    rel_std = sd_norm / mean_norm
    return {"bias": float((s.mean - exact_grad).norm() / exact_grad.norm()),
            "std": rel_std, "cos": float(torch.nn.functional.cosine_similarity(s.mean, exact_grad, 0)),
            "floor": rel_std * mean_norm / float(exact_grad.norm()) / n ** 0.5,
            "s": time.perf_counter() - t0}


def study(steps: int, n: int, B: int, seed: int, only=None) -> dict[str, dict[str, dict]]:
    """Every row of rows_to_run(), or those of the estimators named in `only`."""
    out: dict[str, dict[str, dict]] = {}
    for when, k in (("init", 0), (f"after {steps} steps", steps)):
        task, model = trained_model(k, seed)
        batch = task.sample("train", B, task.generator(seed + 1))
        logits = model.posterior(batch).detach().requires_grad_()
        f = lambda z: model.log_likelihood(batch, z)                  # noqa: E731
        exact = logit_gradient_stats(Exact(max_configs=4096), logits, f, [logits], n=2).mean
        for label, name, opts in rows_to_run():
            if only is not None and name not in only:
                continue
            torch.manual_seed(seed)
            try:
                est = estimators.build(name, **opts)
                est.check_latent(model.latent.D, model.latent.K)
                row = accuracy(model, batch, est, n, exact)
            except ValueError as e:
                row = {"error": str(e).split(";")[0]}
            out.setdefault(label, {})[when] = row
            print(f"{when:>18} {label:<34} {row}", flush=True)
    return out


def table(res: dict[str, dict[str, dict]], steps: int, n: int, B: int, seed: int) -> str:
    whens = list(next(iter(res.values())))
    head = "| estimator | " + " | ".join(f"{w}: rel. bias (floor) | rel. std | cosine" for w in whens) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(whens))]
    for label, by_when in res.items():
        cells = []
        for w in whens:
            r = by_when[w]
            if "error" in r:
                cells += [f"refused: {r['error']}", "", ""]
            else:
                cells += [f"{r['bias']:.3f} ({r['floor']:.3f})", f"{r['std']:.2f}", f"{r['cos']:.3f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return (f"# Gradient accuracy, 8x4 categorical MNIST VAE (ReinMax's study)\n\n"
            f"Written by `python results/gradient_accuracy.py --steps {steps} --n {n} --batch {B} "
            f"--seed {seed}` (module docstring: the definitions). Gradient of E_q[log p(x|z)] "
            f"with respect to the encoder logits on one training batch of {B} mnist5k images, "
            f"{n} estimates per cell, exact reference by enumerating 4,096 configurations; "
            f"training by ReinMax (experiment=reinmax_vae). The floor is relative std / sqrt(n) "
            f"in units of |g*|: a relative bias near it is not resolved.\n\n" + "\n".join(lines) + "\n"
            + "\n![bias against spread](gradient_accuracy.png)\n"
            + NOTES)


def read_csv() -> dict[str, dict[str, dict]]:
    """The rows of the .csv, as `study` returns them."""
    import csv
    res: dict[str, dict[str, dict]] = {}
    for r in csv.DictReader(CSV.open()):
        row = ({"error": r["error"]} if r["error"] else
               {k: float(r[k]) for k in COLUMNS[2:-1]})
        res.setdefault(r["estimator"], {})[r["when"]] = row
    return res


def merged(new: dict, old: dict) -> dict:
    """old's rows with new's replacing or joining them, in rows_to_run() order."""
    order = [label for label, _, _ in rows_to_run()]
    both = {**old, **new}
    return dict(sorted(both.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def write_csv(res: dict[str, dict[str, dict]]) -> None:
    import csv
    with CSV.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for label, by_when in res.items():
            for when, r in by_when.items():
                w.writerow([label, when] + [("%.6g" % r[k]) if k in r and k != "error" else
                                            r.get(k, "") for k in COLUMNS[2:]])


def figure() -> Path:
    """Relative bias against relative std, one panel per training state, from
    the .csv: the unbiased estimators sit on their Monte Carlo floor (the grey
    tick below each point), the biased ones above it."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in csv.DictReader(CSV.open()) if not r["error"]]
    whens = list(dict.fromkeys(r["when"] for r in rows))
    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    import seaborn as sns      # the colour-blind-safe palette of bench.tables' figures
    colours = dict(zip(sorted(labels), sns.color_palette("colorblind", len(labels))))
    markers = dict(zip(labels, "osD^v<>ph*XP8dH<>"))
    fig, axes = plt.subplots(1, len(whens), figsize=(6 * len(whens), 5), sharey=True)
    for ax, when in zip(axes, whens):
        for r in (r for r in rows if r["when"] == when):
            x, y, lo = float(r["std"]), float(r["bias"]), float(r["floor"])
            ax.scatter(x, y, color=colours[r["estimator"]], marker=markers[r["estimator"]], s=60,
                       label=r["estimator"], zorder=3)
            ax.plot([x, x], [lo, y], color="0.7", lw=1, zorder=1)
            ax.scatter(x, lo, color="0.5", marker="_", s=120, zorder=2)
        ax.set(xscale="log", yscale="log", title=when,
               xlabel="relative standard deviation |sd(g)| / |E g|")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("relative bias |E g - g*| / |g*|  (grey tick: Monte Carlo floor)")
    axes[-1].legend(fontsize=8, loc="best")
    fig.suptitle("Gradient accuracy on the 8x4 categorical MNIST VAE (exact g* by enumeration)")
    fig.tight_layout()
    fig.savefig(PNG, dpi=120)
    return PNG


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", action="store_true", help="only redraw the figure from the .csv")
    ap.add_argument("--only", default=None,
                    help="comma-separated estimator names: rerun their rows, keep the rest of the .csv")
    a = ap.parse_args(argv)
    if a.plot:
        print(f"wrote {figure()}")
        return
    torch.set_num_threads(1)
    only = None if a.only is None else set(a.only.split(","))
    res = study(a.steps, a.n, a.batch, a.seed, only)
    if only is not None:
        res = merged(res, read_csv())
    OUT.write_text(table(res, a.steps, a.n, a.batch, a.seed))
    write_csv(res)
    print(f"wrote {OUT}, {CSV}, {figure()}")


if __name__ == "__main__":
    main()
