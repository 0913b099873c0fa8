"""Which backbone setting lets the latent find the hidden strategy: the
backbone study's runs (experiment `backbone_study`, results/reproduce.sh stage
`backbone`) compared setting against setting on the same seeds.

    python results/backbone_modes.py     # writes results/backbone/modes.md

`bench.tables` (results/backbone/paired.md) pairs estimators within a setting;
this pairs the settings (separate networks; one shared backbone frozen, LoRA
or fully trained) within an estimator and conditioning type, on the metrics
that answer the question: latent/strategy_nmi (does z carry the strategy?)
and val/elbo. Paired t-tests with Holm's correction within each estimator ×
conditioning group (bench.results.stats).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results.aggregate import add_settings  # noqa: E402
from bench.results.format import fmt, fmt_p, md_table  # noqa: E402
from bench.results.stats import paired  # noqa: E402
from bench.results.store import load_study  # noqa: E402
from bench.tracking.store import client  # noqa: E402

OUT = ROOT / "results" / "backbone" / "modes.md"
METRICS = {"latent/strategy_nmi": "NMI of z and the hidden strategy (0 to 1, higher is better)",
           "val/elbo": "validation ELBO (nats, higher is better)"}
GROUP = ["latent", "method", "conditioning"]


def main() -> None:
    study = load_study(client(), "backbone_study")
    runs = add_settings(study.jobs[study.jobs["status"] == "FINISHED"])
    runs = runs.assign(method=runs["estimator"],      # `paired` keeps `estimator` out of groups
                       setting=runs["backbone"].astype(str) + "/" + runs["backbone_mode"].astype(str))
    text = ["# Backbone settings compared on the same seeds\n",
            f"Written by `python results/backbone_modes.py` from {len(runs)} finished runs of "
            "experiment `backbone_study`. Each row: mean paired difference first − second "
            "± its 95% CI half-width (Student t), the paired t-test p and the Holm-adjusted p "
            "within the estimator × conditioning group (`*`: adjusted p < 0.05). "
            "`separate/full` is three separate networks; `shared/<mode>` one pretrained "
            "backbone for router, inference network and decoder.\n"]
    for metric, words in METRICS.items():
        pairs = paired(runs, GROUP, metric, "setting")
        pairs = pairs[pairs["n_pairs"] >= 2]
        rows = [[r["latent"], r["method"], r["conditioning"], f"{r['a']} − {r['b']}",
                 int(r["n_pairs"]), fmt(r["mean_diff"], r["ci95"]), fmt_p(r["p"]),
                 fmt_p(r["p_holm"]) + (" *" if r["significant"] else "")]
                for _, r in pairs.iterrows()]
        text += [f"\n## {metric}: {words}\n\n",
                 md_table(["latent", "estimator", "conditioning", "comparison", "n pairs",
                           "difference", "p", "p (Holm)"], rows)]
    OUT.write_text("".join(text))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
