"""Library against hand-written training steps, paired and interleaved.

    python -m tests.bench.paired [--rounds N] [--repeats R] [--out results/estimator_speed.md]
                                 [--only LABEL ...]

One process, one torch thread. For every case (each categorical estimator,
reinforce with each baseline, gumbel soft and hard, reparam and
reinforce_gaussian on a Gaussian latent) and latent setting, a hand loop
(tests/bench/hand.py) and the same step through `estimators.build(...)` each
get their own copy of one network and their own optimisers; after a warm-up
they alternate hand, ours, ours, hand, ... so drift on a shared machine (load,
frequency, caches) hits both alike, and each step is timed alone with
perf_counter (and thread CPU time). The cell's ratio is median(ours) /
median(hand); beside it the median and interquartile range of the per-round
ratios (each round's two steps ran back to back) and the ratio of median
thread CPU times, less disturbed by other processes on a shared machine.

REBAR and RELAX take log q = log_softmax(logits) once, for the Gumbel
perturbation z, the conditional Gumbel z~ and log q(b) (one backward and
double-backward node instead of three); that moved their gradients' last bits,
and the behaviour pin was re-recorded for those two runs when it was made.
"""
from __future__ import annotations

import argparse
import copy
import gc
import itertools
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

import estimators
from tests.bench import hand
from tests.bench.hand import B, LR, Net, State

CAT = [(1, 10), (8, 4)]                 # (D, K): one latent of K = 10, eight of K = 4
GAUSS = [(10, 0), (32, 0)]              # D Gaussian latents, decoder widths as above


def _extras_exact(D, K):
    idx = torch.tensor(list(itertools.product(range(K), repeat=D)))
    return dict(configs=F.one_hot(idx, K).float().unsqueeze(1))     # (N, 1, D, K)


def _baseline_net(D, K):
    net = nn.Sequential(nn.Linear(D * K, 64), nn.Tanh(), nn.Linear(64, 1))
    return dict(net=net, own=list(net.parameters()))


def _rebar(D, K):
    log_tau = torch.tensor(math.log(0.5), requires_grad=True)
    eta = torch.tensor(1.0, requires_grad=True)
    return dict(S=1, log_tau=log_tau, eta=eta, own=[log_tau, eta])


def _relax(D, K):
    log_tau = torch.tensor(math.log(0.5), requires_grad=True)
    net = nn.Sequential(nn.Linear(2 * D * K, 64), nn.ReLU(), nn.Linear(64, 1))
    return dict(S=1, log_tau=log_tau, net=net, own=[log_tau, *net.parameters()])


def _indecater(D, K):
    return dict(S=1, which=torch.eye(D).view(1, D, 1, 1, D, 1),
                value=torch.eye(K).view(1, 1, K, 1, 1, K))


@dataclass
class Case:
    name: str                                   # registry name
    opts: dict
    step: Callable[[State], torch.Tensor]       # the hand loop
    extras: Callable[[int, int], dict]          # the hand loop's own variables, for (D, K)
    settings: list = None

    def __post_init__(self):
        if self.settings is None:
            gaussian = estimators.get(self.name).latent == "gaussian"
            self.settings = GAUSS if gaussian else CAT
            if self.name == "exact":                 # 4^8 = 65536 configurations: not its job
                self.settings = [(D, K) for D, K in CAT if K ** D <= 4096]


CASES: dict[str, Case] = {
    "exact": Case("exact", {}, hand.exact, _extras_exact),
    "reinforce none": Case("reinforce", dict(baseline="none", n_samples=1), hand.reinforce,
                           lambda D, K: dict(S=1, baseline="none")),
    "reinforce ema": Case("reinforce", dict(baseline="ema", n_samples=1), hand.reinforce,
                          lambda D, K: dict(S=1, baseline="ema", ema=torch.zeros(()), steps=0,
                                            decay=0.99)),
    "reinforce learned": Case("reinforce", dict(baseline="learned", n_samples=1), hand.reinforce,
                              lambda D, K: dict(S=1, baseline="learned", **_baseline_net(D, K))),
    "reinforce loo S=4": Case("reinforce", dict(baseline="loo", n_samples=4), hand.reinforce,
                              lambda D, K: dict(S=4, baseline="loo")),
    "vimco S=4": Case("vimco", dict(n_samples=4), hand.vimco,
                      lambda D, K: dict(S=4, eye=torch.eye(4, dtype=torch.bool).unsqueeze(-1))),
    "gumbel": Case("gumbel", {}, hand.gumbel, lambda D, K: dict(S=1, tau=1.0, hard=False)),
    "gumbel hard": Case("gumbel", dict(hard=True), hand.gumbel,
                        lambda D, K: dict(S=1, tau=1.0, hard=True)),
    "st": Case("st", {}, hand.st, lambda D, K: dict(S=1, tau=1.0)),
    "reinmax": Case("reinmax", {}, hand.reinmax, lambda D, K: dict(S=1, tau=1.0)),
    "gumbel_rao M=10": Case("gumbel_rao", {}, hand.gumbel_rao,
                            lambda D, K: dict(S=1, tau=1.0, M=10)),
    "disarm": Case("disarm", {}, hand.disarm, lambda D, K: dict(P=1), settings=[(8, 2)]),
    "indecater": Case("indecater", {}, hand.indecater, _indecater),
    "rebar": Case("rebar", {}, hand.rebar, _rebar),
    "relax": Case("relax", {}, hand.relax, _relax),
    "reparam": Case("reparam", {}, hand.reparam, lambda D, K: dict(S=1)),
    "reinforce_gaussian loo S=4": Case("reinforce_gaussian", dict(baseline="loo", n_samples=4),
                                       hand.reinforce_gaussian, lambda D, K: dict(S=4)),
}


class Library:
    """The same step through the library: build, call, (loss + aux).backward()."""

    def __init__(self, model: Net, x: torch.Tensor, est: estimators.Estimator):
        self.model, self.x, self.est = model, x, est
        self.opt = torch.optim.Adam(model.parameters(), lr=LR)
        if any(is_lazy(p) for p in est.parameters()):
            # input widths are known at the first call: materialise before the optimiser sees them
            with torch.no_grad():
                logits = model.logits(x)
                est(logits, model.f(x, logits))
        own = list(est.parameters())
        self.est_opt = torch.optim.Adam(own, lr=LR) if own else None


def library_step(lib: Library) -> torch.Tensor:
    logits = lib.model.logits(lib.x)
    out = lib.est(logits, lib.model.f(lib.x, logits))
    loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
    lib.opt.zero_grad()
    if lib.est_opt is not None:
        lib.est_opt.zero_grad()
    loss.backward()
    lib.opt.step()
    if lib.est_opt is not None:
        lib.est_opt.step()
    return out.loss.detach()


def build_pair(label: str, D: int, K: int, seed: int = 0, batch: int = B):
    """(hand State, Library) on two copies of one network, their estimator
    parameters equal too (the library's lazy layers copied into the hand's)."""
    case = CASES[label]
    gaussian = estimators.get(case.name).latent == "gaussian"
    torch.manual_seed(seed)
    model = Net(D, K, gaussian=gaussian)
    x = hand.digits(batch)
    lib = Library(copy.deepcopy(model), x, estimators.build(case.name, **case.opts))
    extras = case.extras(D, K)
    if "net" in extras and getattr(lib.est, "net", None) is not None:
        extras["net"].load_state_dict(lib.est.net.state_dict())
    return State(model, x, **extras), lib


def measure(label: str, D: int, K: int, rounds: int, warmup: int = 20) -> dict:
    s, lib = build_pair(label, D, K)
    step = CASES[label].step
    for _ in range(warmup):
        step(s)
        library_step(lib)
    gc.collect()
    wall = {"hand": [], "ours": []}
    cpu = {"hand": [], "ours": []}
    sides = (("hand", step, s), ("ours", library_step, lib))
    for r in range(rounds):
        for side, fn, arg in (sides if r % 2 == 0 else sides[::-1]):
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(arg)
            cpu[side].append(time.thread_time() - c0)
            wall[side].append(time.perf_counter() - t0)
    med = statistics.median
    per_round = sorted(o / h for o, h in zip(wall["ours"], wall["hand"]))
    q = len(per_round) // 4
    return dict(hand=med(wall["hand"]), ours=med(wall["ours"]),
                ratio=med(wall["ours"]) / med(wall["hand"]),
                iqr=(per_round[q], per_round[-q - 1]), paired=med(per_round),
                cpu_ratio=med(cpu["ours"]) / med(cpu["hand"]))


def setting_name(D: int, K: int) -> str:
    return f"{D} Gaussian" if K == 0 else f"{D} x K={K}"


def machine_note() -> str:
    import os
    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch thread, "
            f"Python {platform.python_version()}")


def table(rows: list[tuple[str, str, dict]], rounds: int, repeats: int = 1) -> str:
    lines = [f"Machine: {machine_note()}. Batch {B}, MLP width {hand.WIDTH}, Adam; "
             f"{rounds} rounds per cell, steps alternating hand, ours, ours, hand, ...; "
             f"{repeats} pass(es) over all cells, medians over passes "
             f"(`python -m tests.bench.paired --rounds {rounds} --repeats {repeats}`).",
             "",
             "ours / hand = median(ours) / median(hand) of perf_counter step times (each "
             "pass's value in brackets); per-round: the median and interquartile range of "
             "each round's ratio (its two steps ran back to back); CPU: the first ratio on "
             "thread CPU time, which leaves out time the process waited for a core.",
             "",
             "| estimator | latent | hand ms | ours ms | ours / hand | per-round (IQR) | CPU |",
             "|---|---|---:|---:|---:|---|---:|"]
    for label, setting, m in rows:
        passes = " ".join(f"{r:.2f}" for r in m.get("runs", []))
        lines.append(f"| {label} | {setting} | {1e3 * m['hand']:.3f} | {1e3 * m['ours']:.3f} | "
                     f"{m['ratio']:.3f} ({passes}) | {m['paired']:.3f} "
                     f"({m['iqr'][0]:.2f}-{m['iqr'][1]:.2f}) | {m['cpu_ratio']:.3f} |")
    over = [f"{label} ({setting})" for label, setting, m in rows if m["ratio"] > 1.1]
    if over:
        lines += ["", f"Above 1.1: {', '.join(over)}; why: the docstring of tests/bench/paired.py."]
    return "\n".join(lines) + "\n"


def median_of(runs: list[dict]) -> dict:
    """Each statistic's median over repeats of one cell."""
    med = statistics.median
    out = {k: med(r[k] for r in runs) for k in ("hand", "ours", "ratio", "paired", "cpu_ratio")}
    out["iqr"] = tuple(med(r["iqr"][i] for r in runs) for i in (0, 1))
    out["runs"] = [r["ratio"] for r in runs]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1,
                    help="passes over all cells (medians reported): load bursts hit one pass")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--only", nargs="*", default=None, help="case labels to run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cells = [(label, D, K) for label, case in CASES.items() for D, K in case.settings
             if not args.only or label in args.only]
    runs: dict[tuple, list[dict]] = {c: [] for c in cells}
    for rep in range(args.repeats):
        for label, D, K in cells:
            m = measure(label, D, K, args.rounds, args.warmup)
            runs[(label, D, K)].append(m)
            print(f"[{rep + 1}/{args.repeats}] {label:28s} {setting_name(D, K):12s} "
                  f"hand {1e3 * m['hand']:7.3f} ms  ours {1e3 * m['ours']:7.3f} ms  "
                  f"ratio {m['ratio']:.3f}", flush=True)
    rows = [(label, setting_name(D, K), median_of(runs[(label, D, K)])) for label, D, K in cells]
    text = table(rows, args.rounds, args.repeats)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
