"""A fixed set of short runs whose final metrics are pinned in
`tests/data/behaviour.json`: every estimator on digits, the sequence task with
each conditioning type, and the toy. A refactoring must leave them identical
on CPU (tests/test_behaviour.py).

    python -m tests.behaviour            # re-record (only when a change of numbers is intended)
"""
from __future__ import annotations

import json
from pathlib import Path

SHORT = ["train.steps=120", "train.eval_every=60", "train.log_every=30", "train.batch_size=32",
         "eval.batch_size=64", "eval.iwae_samples=8", "eval.grad_samples=8",
         "eval.grad_batch_size=16", "progress=false", "device=cpu", "seed=3"]
RUNS: dict[str, list[str]] = {
    **{f"digits-{e}": [f"estimator={e}"] for e in
       ("exact", "gumbel", "rebar", "reinforce", "reinforce_gaussian", "relax", "reparam", "vimco")},
    "digits-reinforce-ema": ["estimator=reinforce", "estimator.baseline=ema", "estimator.n_samples=1"],
    "digits-gumbel-film-cyclical-fb": ["conditioning=film", "kl=cyclical", "kl.free_bits=0.3"],
    **{f"strategies-{c}": ["task=strategies", f"conditioning={c}", "estimator=reinforce",
                           "train.steps=40", "train.eval_every=20", "train.log_every=20"]
       for c in ("add", "concat", "film", "prefix", "xattn")},
    "toy-rebar": ["task=toy", "estimator=rebar", "eval.grad_stats=false"],
}
FILE = Path(__file__).resolve().parent / "data" / "behaviour.json"
# wall-clock metrics differ run to run; everything else is a function of the seed
TIMED = ("perf/", "grad/seconds_per_estimate")


def final_metrics(overrides: list[str]) -> dict[str, float]:
    from tests.compose import compose_config
    from bench.job.train import train
    final = train(compose_config(SHORT + overrides), log=lambda step, m: None)
    return {k: v for k, v in sorted(final.items()) if not k.startswith(TIMED)}


def record() -> None:
    out = {name: final_metrics(ov) for name, ov in RUNS.items()}
    FILE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FILE} ({len(out)} runs)")


if __name__ == "__main__":
    record()
