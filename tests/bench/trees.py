"""Steps per second through `python -m bench.run` in two source trees, paired
and interleaved: the speed of a change as a user sees it.

    git worktree add --detach ../before <commit>
    python -m tests.bench.trees --old ../before [--steps 1500] [--rounds 2] [--out FILE]

For every cell (an experiment overlay and an estimator's overrides) each round
runs the old tree's command and the new tree's, alternating old, new, new,
old, ... so drift on a shared machine hits both alike. A run is a real
`python -m bench.run` (one torch thread, the overlay's settings) with its own
throw-away sqlite store, evaluation reduced to its minimum (no gradient
statistics, eval at step 0 and the last step; perf/steps_per_s counts training
time only). Its speed is the median of its logged perf/steps_per_s intervals
after the first (warm-up); a cell's speed on each side is the median over
rounds, and the ratio new / old is the median of the per-round ratios.

The same command line runs in both trees, so an option one tree lacks cannot
be used; the overlays themselves (conf/experiment/) may differ, which is the
point when a change is the overlay's model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CELLS = {  # label -> (experiment, estimator overrides)
    "disarm": ["estimator=disarm"],
    "reinforce loo S=2": ["estimator=reinforce", "estimator.n_samples=2"],
    "gumbel": ["estimator=gumbel"],
    "rebar": ["estimator=rebar"],
}
EXPERIMENTS = ("disarm_linear", "disarm_nonlinear")

READ = """
import json, sys, mlflow
c = mlflow.tracking.MlflowClient(sys.argv[1])
run = c.search_runs([c.get_experiment_by_name('speed').experiment_id])[0]
print(json.dumps([m.value for m in sorted(c.get_metric_history(run.info.run_id, 'perf/steps_per_s'),
                                          key=lambda m: m.step)]))
"""


def one_run(tree: Path, experiment: str, est: list[str], steps: int, seed: int) -> float:
    """Median perf/steps_per_s after the first interval of one bench.run in `tree`."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = dict(os.environ, PYTHONPATH=str(tree), MLFLOW_TRACKING_URI=uri)
        cmd = [sys.executable, "-m", "bench.run", f"experiment={experiment}", *est,
               f"train.steps={steps}", f"train.log_every={steps // 5}", f"train.eval_every={steps}",
               "eval.grad_stats=false", "mlflow.experiment=speed", f"seed={seed}",
               f"train.checkpoint_dir={tmp}/ck", f"hydra.run.dir={tmp}/out"]
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tree}: {' '.join(cmd[2:])} failed:\n{done.stderr[-2000:]}")
        rates = json.loads(subprocess.run([sys.executable, "-c", READ, uri], env=env, capture_output=True,
                                          text=True, check=True).stdout)
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def one_step_run(tree: Path, experiment: str, est: list[str], steps: int, seed: int) -> dict:
    """tests/bench/roofline.py in `tree`: median wall and thread-CPU ms of a Trainer
    step, the loop without evaluation or logging (less disturbed by other
    processes than a whole run's steps/s), with its FLOPs and matmul fraction."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(ROOT / "tests" / "bench" / "roofline.py"), "--json",
           f"--experiment={experiment}", f"--steps={steps}", *est, f"seed={seed}"]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(cmd[2:])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def paired_cells(old: Path, new: Path, rounds: int, only, one) -> list[dict]:
    """Per cell: `one(tree, experiment, est, seed)` for the old and the new tree,
    alternating old, new, new, old, ...; rows with both sides' lists."""
    rows = []
    for experiment in EXPERIMENTS:
        for label, est in CELLS.items():
            if only and label not in only:
                continue
            olds, news = [], []
            for r in range(rounds):
                order = [(old, olds), (new, news)] if r % 2 == 0 else [(new, news), (old, olds)]
                for tree, out in order:
                    out.append(one(tree, experiment, est, r))
            rows.append(dict(experiment=experiment, estimator=label, old=olds, new=news))
    return rows


def measure_steps(old: Path, new: Path, steps: int, rounds: int, only=None) -> list[dict]:
    """Trainer steps (roofline.py); speed-up = median over rounds of old / new CPU ms."""
    rows = paired_cells(old, new, rounds, only,
                        lambda tree, e, est, seed: one_step_run(tree, e, est, steps, seed))
    med = lambda xs, k: statistics.median(x[k] for x in xs)   # noqa: E731
    for r in rows:
        r["ratio"] = statistics.median(o["cpu_step_ms"] / n["cpu_step_ms"] for o, n in zip(r["old"], r["new"]))
        print(f"{r['experiment']:17s} {r['estimator']:18s} CPU ms/step old {med(r['old'], 'cpu_step_ms'):.2f} "
              f"new {med(r['new'], 'cpu_step_ms'):.2f}  speed-up {r['ratio']:.2f}", flush=True)
    return rows


def steps_markdown(rows: list[dict], steps: int, rounds: int, loads: list) -> str:
    med = lambda xs, k: statistics.median(x[k] for x in xs)   # noqa: E731
    lines = [f"Trainer steps without evaluation or logging (`tests/bench/roofline.py`, one torch "
             f"thread, {steps} timed steps a process after 20 warm-up steps), {rounds} processes per "
             f"side and cell, old and new alternating; load average before / after {loads[0]} / "
             f"{loads[1]}. ms: medians of wall and thread-CPU time per step; speed-up: median over "
             f"rounds of old CPU ms / new CPU ms. MFLOP: matrix-multiply FLOPs of one step "
             f"(torch.utils.flop_counter, forward and backward); matmul fraction: (FLOPs / step "
             f"time) over the rate torch.mm reaches alone at the step's own shapes, in the same "
             f"process.", "",
             "| experiment | estimator | old ms (CPU) | new ms (CPU) | speed-up | old MFLOP | new MFLOP "
             "| matmul GFLOP/s | matmul fraction old → new |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        o, n = r["old"], r["new"]
        lines.append(f"| {r['experiment']} | {r['estimator']} | {med(o, 'step_ms'):.2f} "
                     f"({med(o, 'cpu_step_ms'):.2f}) | {med(n, 'step_ms'):.2f} ({med(n, 'cpu_step_ms'):.2f}) "
                     f"| {r['ratio']:.2f} | {med(o, 'mflop'):.0f} | {med(n, 'mflop'):.0f} "
                     f"| {med(n, 'mm_gflops'):.0f} | {med(o, 'fraction'):.2f} → {med(n, 'fraction'):.2f} |")
    return "\n".join(lines) + "\n"


def measure(old: Path, new: Path, steps: int, rounds: int, only=None) -> list[dict]:
    """Whole bench.run processes; new / old = median of the per-round ratios."""
    rows = paired_cells(old, new, rounds, only,
                        lambda tree, e, est, seed: one_run(tree, e, est, steps, seed))
    for r in rows:
        r["ratio"] = statistics.median(n / o for n, o in zip(r["new"], r["old"]))
        print(f"{r['experiment']:17s} {r['estimator']:18s} old {statistics.median(r['old']):7.1f}  new "
              f"{statistics.median(r['new']):7.1f} steps/s  new/old {r['ratio']:.2f}", flush=True)
    return rows


def markdown(rows: list[dict], steps: int, rounds: int, old: Path, loads: list) -> str:
    def fmt(xs):
        return f"{statistics.median(xs):.1f} ({' '.join(f'{x:.0f}' for x in xs)})"
    lines = [f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}; "
             f"load average before / after: {loads[0]} / {loads[1]}. Each run: `python -m bench.run "
             f"experiment=<experiment> <estimator> train.steps={steps}` with gradient statistics off, "
             f"one torch thread (the harness default); {rounds} rounds per cell, old and new alternating "
             f"(old, new, new, old, ...). steps/s: median of the run's perf/steps_per_s intervals after "
             f"the first; medians over rounds (each round's value in brackets); new / old: median of "
             f"the per-round ratios. Old tree: `{old.name}`. Regenerate: `python -m tests.bench.trees "
             f"--old <worktree of the old commit> --steps {steps} --rounds {rounds}`.", "",
             "| experiment | estimator | old steps/s | new steps/s | new / old |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['experiment']} | {r['estimator']} | {fmt(r['old'])} | {fmt(r['new'])} "
                     f"| {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="source tree of the old commit")
    ap.add_argument("--new", type=Path, default=ROOT, help="source tree of the new commit (this one)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="estimator labels to run (default: all)")
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    ap.add_argument("--via", choices=("run", "step"), default="run",
                    help="run: whole bench.run processes (perf/steps_per_s); step: Trainer steps "
                         "in roofline.py (CPU time, FLOPs, matmul fraction)")
    a = ap.parse_args()
    loads = [tuple(round(x, 2) for x in os.getloadavg())]
    if a.via == "step":
        rows = measure_steps(a.old.resolve(), a.new.resolve(), a.steps, a.rounds, a.only)
        loads.append(tuple(round(x, 2) for x in os.getloadavg()))
        text = steps_markdown(rows, a.steps, a.rounds, loads)
    else:
        rows = measure(a.old.resolve(), a.new.resolve(), a.steps, a.rounds, a.only)
        loads.append(tuple(round(x, 2) for x in os.getloadavg()))
        text = markdown(rows, a.steps, a.rounds, a.old.resolve(), loads)
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
