"""Library against hand-written training steps (pytest -m benchmark).

For every case of tests/bench/paired.py (each categorical estimator, the
reinforce baselines, gumbel soft and hard, reparam and reinforce_gaussian) and
latent setting: one full digits training step (batch 128, MLP width 128, one
CPU thread, Adam) through `estimators.build(...)` and through the hand loop of
tests/bench/hand.py, both run by pytest-benchmark (group by cell with
`--benchmark-group-by=group`), and the paired, interleaved ratio that
`python -m tests.bench.paired` reports (benchmark.extra_info, and a line with
-s). The paired ratio is the one to read: pytest-benchmark times the two
sides one after the other, so a change of load in between shows up as a
difference. Timings are reported, never asserted: the machine is shared. Under
--benchmark-disable (the CI smoke run) each step runs once and the paired
measurement takes two rounds: it checks that both sides run, and times nothing.

    pytest -m benchmark -s tests/bench/test_bench_hand.py --benchmark-group-by=group
"""
from __future__ import annotations

import pytest

from tests.bench.paired import CASES, build_pair, library_step, measure, setting_name

pytestmark = pytest.mark.benchmark

CELLS = [(label, D, K) for label, case in CASES.items() for D, K in case.settings]
IDS = [f"{label}-{setting_name(D, K)}".replace(" ", "_") for label, D, K in CELLS]


@pytest.mark.parametrize("impl", ["library", "hand"])
@pytest.mark.parametrize("label,D,K", CELLS, ids=IDS)
def test_training_step(benchmark, label, D, K, impl):
    benchmark.group = f"hand vs library: {label}, {setting_name(D, K)}"
    s, lib = build_pair(label, D, K)
    step, arg = (library_step, lib) if impl == "library" else (CASES[label].step, s)
    for _ in range(3 if not benchmark.disabled else 0):
        step(arg)                          # Adam's state, lazy layers, allocator warm
    loss = benchmark(step, arg)
    assert loss.isfinite()


@pytest.mark.parametrize("label,D,K", CELLS, ids=IDS)
def test_paired_ratio(benchmark, label, D, K):
    rounds = 2 if benchmark.disabled else 100
    benchmark.group = "paired ratio (ours / hand)"
    m = benchmark.pedantic(measure, args=(label, D, K, rounds),
                           kwargs=dict(warmup=1 if benchmark.disabled else 20),
                           rounds=1, iterations=1)
    benchmark.extra_info.update(ratio=m["ratio"], hand_ms=1e3 * m["hand"], ours_ms=1e3 * m["ours"])
    print(f"\n{label} {setting_name(D, K)}: ours / hand = {m['ratio']:.3f} "
          f"({1e3 * m['ours']:.3f} / {1e3 * m['hand']:.3f} ms)")
