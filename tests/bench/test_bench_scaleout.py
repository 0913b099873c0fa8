"""Wall time of a four-job sweep, basic launcher (jobs in sequence, one
process) against submitit_local (one process per job, all at once), each
against a fresh sqlite store. Issue 6's target on CPU: submitit_local <=
1.3 x basic / parallel workers, i.e. <= 0.65 x basic on two cores. Timings
are reported (benchmark table, extra_info, and a line printed with -s), never
asserted: the machine is shared.

Jobs are realistic rather than tiny: the default run (train.steps=2000,
evaluation every 500), or BENCH_SCALEOUT_STEPS steps. A process per job costs
a fixed ~4-5 CPU-seconds here (interpreter, torch 1.3 s and mlflow 2 s of
imports, config, store); with 2 workers the target needs each job to do
roughly four times that in real work, and a machine shared with other load
gives parallel processes less than its nominal cores.

    pytest -m benchmark -s tests/bench/test_bench_scaleout.py
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stores import empty_db

pytestmark = pytest.mark.benchmark

ROOT = Path(__file__).resolve().parent.parent.parent
STEPS = int(os.environ.get("BENCH_SCALEOUT_STEPS", "2000"))
SWEEP = ["-m", "estimator=gumbel", "seed=0,1,2,3", f"train.steps={STEPS}", "rerun=true"]
WORKERS = min(4, os.cpu_count() or 1)          # submitit_local starts all four; the cores bound it
TIMES: dict[str, float] = {}


def sweep(tmp: Path, launcher: str) -> None:
    run_dir = tmp / f"{launcher}-{len(list(tmp.iterdir()))}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": empty_db(run_dir)}
    out = subprocess.run([sys.executable, "-m", "bench.run", *SWEEP, f"hydra/launcher={launcher}"],
                         cwd=run_dir, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0 and "finished 4, failed 0" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_four_job_sweep(benchmark, tmp_path, launcher):
    benchmark.pedantic(sweep, args=(tmp_path, launcher), rounds=1, iterations=1)
    if benchmark.stats is None:      # --benchmark-disable (CI smoke run): the sweep ran, no timing
        return
    TIMES[launcher] = benchmark.stats.stats.mean
    benchmark.extra_info.update(workers=WORKERS, steps_per_job=STEPS)
    if len(TIMES) == 2:
        ratio = TIMES["submitit_local"] / TIMES["basic"]
        benchmark.extra_info.update(ratio_to_basic=ratio, target=1.3 / WORKERS)
        print(f"\nfour-job sweep: basic {TIMES['basic']:.1f} s, submitit_local "
              f"{TIMES['submitit_local']:.1f} s, ratio {ratio:.2f} (target <= {1.3 / WORKERS:.2f})")
