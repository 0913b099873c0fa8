"""Library against hand-written training steps, paired and interleaved.

    python -m tests.bench.paired [--rounds N] [--repeats R] [--out results/estimator_speed.md]
                                 [--only LABEL ...]
    python -m tests.bench.paired --papers [--rounds N] [--repeats R] [--speed-rounds N]
                                 [--no-evals] [--out results/estimator_speed.md]

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

`--papers`: the literature setting (`experiment=disarm_nonlinear`, the section
"the literature setting" below): a step of `Trainer.run`'s loop against
tests/bench/hand.py's `paper_*` loops for reinforce (loo, S = 2), disarm and
gumbel, then steps/s of every estimator that takes Bernoulli latents, and the
cost of one evaluation; `--out` replaces that section of the file only (and the
plain command keeps it when it rewrites the file). What the Trainer's step
costs beyond the paper loop's ~9-10 ms (thread CPU time, each phase timed
alone, paired, 2-core VM): it was 1.17-1.24x, from a second no-grad encoder
pass for `context` (~0.45 ms; now skipped unless `Estimator.uses_context`), a
KL against the prior table expanded to (B, D, K) (~0.3-0.5 ms; now one row,
broadcast), and the KL's own log-softmax of the posterior logits where the
paper loop reuses its estimator's (~0.5 ms; at K = 2 now log sigmoid of the
logit difference, ~4x cheaper), and the interval meter's on-device sums
(~0.2 ms; it now keeps references and reduces at logging time). On the
papers' model (one logit per Bernoulli, the KL sampled inside f) what is left
is 1.09-1.22x (thread CPU time, the machine loaded): the analytic KL the
Trainer still computes each step for `train/kl` (the paper loop logs none),
and the [0, a] layout every estimator receives: selecting and subtracting the
two logits, stacking b into one-hot pairs and reading 2b - 1 back out, each a
few small ops forward and backward where the paper loop holds a and b
directly; disarm, with the least arithmetic of its own, shows it most (1.2x).
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
from tests.bench import hand, hand_antithetic, hand_recent
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


def _carms(D, K):
    orders = hand_antithetic.carms_orders(K)
    return dict(n=4, orders=orders, ranks=orders.argsort(-1))


def _indecater(D, K):
    return dict(S=1, which=torch.eye(D).view(1, D, 1, 1, D, 1),
                value=torch.eye(K).view(1, 1, K, 1, 1, K))


def _double_cv(D, K):
    alpha = nn.Parameter(torch.tensor(1.0))
    return dict(S=4, alpha=alpha, own=[alpha])


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
    "disarm K>2": Case("disarm", {}, hand_antithetic.disarm_iw, lambda D, K: dict(P=1)),
    "arms S=4": Case("arms", dict(n_samples=4), hand_antithetic.arms, lambda D, K: dict(n=4),
                     settings=[(8, 2)]),
    "carms S=4": Case("carms", dict(n_samples=4), hand_antithetic.carms, _carms),
    "indecater": Case("indecater", {}, hand.indecater, _indecater),
    "rebar": Case("rebar", {}, hand.rebar, _rebar),
    "relax": Case("relax", {}, hand.relax, _relax),
    "unordered_set k=4": Case("unordered_set", dict(n_samples=4), hand_recent.unordered_set,
                              lambda D, K: dict(S=4)),
    "double_cv S=4": Case("double_cv", dict(n_samples=4), hand_recent.double_cv, _double_cv),
    "gst": Case("gst", {}, hand_recent.gst, lambda D, K: dict(S=1, tau=1.0, gap=1.0)),
    "decoupled_st": Case("decoupled_st", dict(tau_forward=0.5, tau_backward=2.0),
                         hand_recent.decoupled_st, lambda D, K: dict(S=1, tau_f=0.5, tau_b=2.0)),
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
    wall, cpu = interleaved((("hand", CASES[label].step, s), ("ours", library_step, lib)),
                            rounds, warmup)
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
    ap.add_argument("--papers", action="store_true",
                    help="the literature setting instead (experiment=disarm_nonlinear: Trainer "
                         "steps against tests/bench/hand.py's paper_* loops, steps/s of every "
                         "Bernoulli estimator, evaluation cost); --out then replaces its "
                         "section of the file and leaves the rest")
    ap.add_argument("--speed-rounds", type=int, default=30,
                    help="--papers: rounds of the steps/s table (0: no table)")
    ap.add_argument("--no-evals", dest="evals", action="store_false",
                    help="--papers: leave out the evaluation timings")
    args = ap.parse_args(argv)
    if args.papers:
        return papers_main(args)
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
        old = args.out.read_text() if args.out.exists() else ""
        if SECTION_BEGIN in old and SECTION_END in old:     # keep the --papers section
            text += "\n" + SECTION_BEGIN + old.split(SECTION_BEGIN, 1)[1].split(SECTION_END, 1)[0] \
                + SECTION_END + "\n"
        args.out.write_text(text)


# -- the literature setting: Trainer steps against a paper's loop ------------------
# experiment=disarm_nonlinear (mnist5k, 200 Bernoulli latents with one logit each,
# 784-200-200-200 and 200-200-200-784 on 2b - 1, LeakyReLU(0.3), batch 50, fused Adam
# 1e-4 + SGD 1e-2 on the prior logits, the single-sample ELBO as f, dynamic binarisation). "ours" is one step of Trainer.run's loop: the task's minibatch,
# the temperature schedule, bench.job.objective, Trainer.update (every optimiser)
# and the interval meter; no evaluation, no logging. "hand" is tests/bench/hand.py's
# paper_* loop on a copy of the Trainer's weights and of its batch generator.

PAPER_OVERRIDES = ["experiment=disarm_nonlinear", "threads=1", "progress=false"]
SECTION_BEGIN = "<!-- begin: literature setting (python -m tests.bench.paired --papers) -->"
SECTION_END = "<!-- end: literature setting -->"


@dataclass
class PaperCase:
    overrides: list                              # estimator overrides of bench.run
    step: Callable = None                        # the paper loop, where there is one
    extras: dict = None                          # its own variables


# every estimator that takes Bernoulli latents at this setting (test_bench_papers
# checks the list against the registry); the ones with a hand loop are timed paired
PAPER_CASES: dict[str, PaperCase] = {
    "reinforce loo S=2": PaperCase(["estimator=reinforce", "estimator.baseline=loo",
                                    "estimator.n_samples=2"], hand.paper_reinforce, dict(S=2)),
    "disarm": PaperCase(["estimator=disarm"], hand.paper_disarm, {}),
    "rebar": PaperCase(["estimator=rebar"]),
    "relax": PaperCase(["estimator=relax"]),
    "vimco S=2": PaperCase(["estimator=vimco", "estimator.n_samples=2"]),
    "gumbel": PaperCase(["estimator=gumbel"], hand.paper_gumbel, dict(S=1, tau=1.0)),
    "st": PaperCase(["estimator=st"]),
    "reinmax": PaperCase(["estimator=reinmax"]),
    "gumbel_rao": PaperCase(["estimator=gumbel_rao"]),
    "indecater": PaperCase(["estimator=indecater"]),
    # the latest round's: Trainer steps timed at the papers' model (2 evaluations of f
    # for the multi-sample ones, as a DisARM pair), no paper loop to pair with
    "arms S=2": PaperCase(["estimator=arms", "estimator.n_samples=2"]),
    "carms S=2": PaperCase(["estimator=carms", "estimator.n_samples=2"]),
    "unordered_set k=2": PaperCase(["estimator=unordered_set", "estimator.n_samples=2"]),
    "double_cv S=2": PaperCase(["estimator=double_cv", "estimator.n_samples=2"]),
    "gst": PaperCase(["estimator=gst"]),
    "decoupled_st": PaperCase(["estimator=decoupled_st"]),
}
PAIRED_PAPER_CASES = [k for k, c in PAPER_CASES.items() if c.step is not None]


def bernoulli_estimators(D: int = 200) -> list[str]:
    """Registered estimators that accept D Bernoulli latents (categorical, K = 2)."""
    out = []
    for name in estimators.names():
        if estimators.get(name).latent != "categorical":
            continue
        try:
            estimators.build(name).check_latent(D, 2)
        except ValueError:
            continue
        out.append(name)
    return out


_CONFIGS: dict = {}


def paper_config(overrides=(), seed: int = 0):
    """The composed, validated bench.run config of the literature setting (a
    fresh copy; each composition is kept, as Hydra takes ~0.3 s per compose)."""
    from bench.config.validate import validate
    from tests.compose import compose_config
    key = (*PAPER_OVERRIDES, *overrides, f"seed={seed}")
    if key not in _CONFIGS:
        cfg = compose_config(list(key))
        validate(cfg)
        _CONFIGS[key] = cfg
    return copy.deepcopy(_CONFIGS[key])


_TASKS: dict = {}


def paper_task(seed: int = 0):
    """mnist5k as the Trainer loads it, once per process (read-only after loading)."""
    if seed not in _TASKS:
        from bench.job.build import load_task
        _TASKS[seed] = load_task(paper_config(seed=seed), torch.device("cpu"))
    return _TASKS[seed]


class TrainerStep:
    """One iteration of Trainer.run's loop (bench/job/train.py) without its
    evaluation, logging and checkpoint checks; `step()` returns the loss."""

    def __init__(self, trainer):
        self.tr, self.n = trainer, 0
        trainer.model.train()
        trainer.est.train()

    def __call__(self) -> torch.Tensor:
        from bench.job.objective import objective
        tr, step = self.tr, self.n
        batch = tr.task.sample("train", tr.cfg.train.batch_size, tr.gen)
        if tr.tau is not None:
            tr.est.tau = tr.tau(step)
        obj = objective(tr.step_model, tr.est, batch, tr.beta(step), tr.lam, tr.mode, tr.sampled)
        tr.update(obj.loss, obj.aux_loss)
        tr.meter.add(step, obj, obj.loss)
        self.n += 1
        return obj.loss.detach()


def trainer_step(ts: TrainerStep) -> torch.Tensor:
    return ts()


def paper_trainer(label: str, seed: int = 0, extra=()):
    """A Trainer of the literature setting with the estimator of PAPER_CASES[label]."""
    from bench.job.train import Trainer
    cfg = paper_config([*PAPER_CASES[label].overrides, *extra], seed=seed)
    return Trainer(cfg, lambda step, metrics: None, task=paper_task(seed))


def paired_parameters(model, net: hand.BinaryVAE) -> list:
    """[(name, the ImageCVAE's parameter, the BinaryVAE's)]: the linear layers of
    encoder and decoder in creation order, then the prior logits."""
    ours = [m for part in (model.encoder, model.decoder) for m in part.modules()
            if isinstance(m, nn.Linear)]
    mine = [m for m in (*net.enc, *net.dec) if isinstance(m, nn.Linear)]
    if len(ours) != len(mine):
        raise ValueError(f"paired_parameters: {len(ours)} linear layers, the literature "
                         f"setting has {len(mine)}")
    out = []
    for i, (a, b) in enumerate(zip(ours, mine)):
        if a.weight.shape != b.weight.shape:
            raise ValueError(f"paired_parameters: layer {i} is {tuple(a.weight.shape)}, the "
                             f"literature setting's {tuple(b.weight.shape)}")
        out += [(f"linear{i}.weight", a.weight, b.weight), (f"linear{i}.bias", a.bias, b.bias)]
    return out + [("prior", model.prior_logits, net.prior)]


def hand_model(model) -> hand.BinaryVAE:
    """hand.BinaryVAE holding a copy of an ImageCVAE's weights (the MLP family at
    the literature setting: linear layers in creation order, prior logits, mean)."""
    net = hand.BinaryVAE(model.input_mean, D=model.latent.D,
                         hidden=model.encoder.widths[0], slope=model.encoder.slope)
    with torch.no_grad():
        for _, ours, mine in paired_parameters(model, net):
            mine.copy_(ours)
    return net


def build_paper_pair(label: str, seed: int = 0):
    """(hand PaperState, TrainerStep): the same weights and the same batch generator state."""
    case = PAPER_CASES[label]
    tr = paper_trainer(label, seed)
    gen = torch.Generator()
    gen.set_state(tr.gen.get_state())
    t = tr.cfg.train
    s = hand.PaperState(hand_model(tr.model), tr.task._raw("train").x, gen,
                        batch=t.batch_size, lr=t.lr, prior_lr=t.prior_lr,
                        fused=t.get("fused_adam", False), **case.extras)
    return s, TrainerStep(tr)


def interleaved(sides, rounds: int, warmup: int) -> tuple[dict, dict]:
    """Wall and thread-CPU seconds per step of each side ((name, fn, arg), ...), the
    sides alternating a, b, b, a, ... after `warmup` steps of each."""
    for _ in range(warmup):
        for _, fn, arg in sides:
            fn(arg)
    gc.collect()
    wall = {name: [] for name, _, _ in sides}
    cpu = {name: [] for name, _, _ in sides}
    for r in range(rounds):
        for name, fn, arg in (sides if r % 2 == 0 else sides[::-1]):
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(arg)
            cpu[name].append(time.thread_time() - c0)
            wall[name].append(time.perf_counter() - t0)
    return wall, cpu


def summarise(wall: dict, cpu: dict) -> dict:
    """`measure`'s statistics of ours against hand from interleaved times."""
    med = statistics.median
    per_round = sorted(o / h for o, h in zip(wall["ours"], wall["hand"]))
    q = len(per_round) // 4
    return dict(hand=med(wall["hand"]), ours=med(wall["ours"]),
                ratio=med(wall["ours"]) / med(wall["hand"]),
                iqr=(per_round[q], per_round[-q - 1]), paired=med(per_round),
                cpu_ratio=med(cpu["ours"]) / med(cpu["hand"]),
                hand_cpu=med(cpu["hand"]), ours_cpu=med(cpu["ours"]))


def measure_paper(label: str, rounds: int, warmup: int = 20, seed: int = 0) -> dict:
    """Trainer step against the paper loop at the literature setting, paired."""
    s, ts = build_paper_pair(label, seed)
    sides = (("hand", PAPER_CASES[label].step, s), ("ours", trainer_step, ts))
    return summarise(*interleaved(sides, rounds, warmup))


def steps_per_second(labels, rounds: int, warmup: int = 5, reference: str = "gumbel") -> dict:
    """Trainer steps of every estimator in `labels`, round robin (one step each
    per round, the order reversed every other round): per estimator the median
    step time (wall, thread CPU) and the median and IQR over rounds of its step
    time divided by `reference`'s in the same round."""
    steps = {label: TrainerStep(paper_trainer(label)) for label in labels}
    sides = [(label, trainer_step, ts) for label, ts in steps.items()]
    wall, cpu = interleaved(sides, rounds, warmup)
    med = statistics.median
    out = {}
    for label in labels:
        rel = sorted(w / r for w, r in zip(wall[label], wall[reference])) \
            if reference in wall else [float("nan")]
        q = len(rel) // 4
        out[label] = dict(wall=med(wall[label]), cpu=med(cpu[label]), rel=med(rel),
                          rel_iqr=(rel[q], rel[-q - 1]), trainer=steps[label].tr,
                          f_per_step=steps[label].tr.f_per_step)
    return out


def eval_seconds(tr, step: int = 5000) -> dict:
    """One Evaluator call (what Trainer.flush runs every train.eval_every steps):
    wall and thread-CPU seconds of the whole call and of its two parts
    (models.evaluate's val/* with the IWAE bound; grad/* statistics), and of one
    logging-only flush (meter read-back, the log call: here a no-op; a job's
    MetricSink queues it for a background thread)."""
    from tqdm import tqdm
    ev = tr.evaluator

    def timed(fn):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        return time.perf_counter() - t0, time.thread_time() - c0

    out = {"total": timed(lambda: ev(step, tr.beta(step - 1)))}
    with torch.random.fork_rng():
        out["val"] = timed(ev.metrics)
        out["grad"] = timed(lambda: ev.grad_stats(tr.beta(step - 1))) \
            if tr.cfg.eval.grad_stats else (0.0, 0.0)
    ts = TrainerStep(tr)
    for _ in range(2):
        ts()
    tr.bar = tqdm(disable=True)      # what run() opens; flush writes its postfix
    log_step = tr.cfg.train.log_every
    assert log_step % tr.cfg.train.eval_every and log_step != tr.steps, "a log-only step"
    out["log"] = timed(lambda: tr.flush(log_step))
    return out


# decoder rows (f evaluations x grad_samples x grad_batch_size) above which one
# evaluation is timed with fewer grad/* estimates and its grad part scaled up:
# grad_stats vmaps all eval.grad_samples estimates in one chunk, and indecater's
# 400 f evaluations per example make that 819,200 rows, over 21 GB (killed by
# the kernel on a 23 GB machine)
EVAL_ROWS = 2 ** 16


def eval_timing(label: str, trainer) -> dict:
    """`eval_seconds` of `trainer`, or, where its evaluation would not fit in
    memory (EVAL_ROWS), of a trainer with fewer grad/* estimates, the grad part
    and the total scaled to eval.grad_samples; "scaled" holds the factor."""
    e = trainer.cfg.eval
    per = trainer.f_per_step * e.grad_batch_size
    if per * e.grad_samples <= EVAL_ROWS or not e.grad_stats:
        return {**eval_seconds(trainer), "scaled": 1.0}
    n = max(2, EVAL_ROWS // per)
    out = eval_seconds(paper_trainer(label, extra=[f"eval.grad_samples={n}"]))
    k = e.grad_samples / n
    grad = out["grad"]
    out["total"] = tuple(t + (k - 1) * g for t, g in zip(out["total"], grad))
    out["grad"] = tuple(k * g for g in grad)
    return {**out, "scaled": k, "rows": per * e.grad_samples, "measured_samples": n}


def load_note() -> str:
    import os
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def papers_section(paired_rows, speed, evals, rounds, repeats, speed_rounds,
                   loads, command, minutes: float = float("nan")) -> str:
    t = paper_config().train
    lines = [SECTION_BEGIN, "",
             "## The literature setting: Trainer steps against a paper's loop",
             "",
             f"`experiment=disarm_nonlinear`: mnist5k (3,500 training images, dynamic "
             f"binarisation), 200 Bernoulli latents (one logit each), encoder "
             f"784-200-200-200, decoder 200-200-200-784 on 2b - 1, LeakyReLU(0.3), no "
             f"normalisation, Glorot init, centred input, batch {t.batch_size}, fused Adam "
             f"{t.lr:g} on both networks (the hand loop too) + SGD {t.prior_lr:g} on the prior "
             f"logits, f the single-sample ELBO (KL sampled), beta = 1. "
             f"Machine: {machine_note()}; the same machine was running other jobs: "
             f"{'; '.join(loads)} (`os.getloadavg`, before / between / after). "
             f"Regenerate: `{command}` ({minutes:.0f} minutes for this one).",
             "",
             "What is timed. ours: one iteration of `Trainer.run`'s loop "
             "(`tests.bench.paired.TrainerStep`: `task.sample` of a training minibatch, "
             "the temperature schedule, `bench.job.objective`, `Trainer.update` with every "
             "optimiser, the interval meter), evaluation and logging left out. hand: "
             "`tests/bench/hand.py`'s `paper_*` loop, the same layers and the same "
             "estimator maths written inline in plain torch, Adam + SGD, started from a copy "
             "of the Trainer's weights and batch generator; it computes the same loss "
             "(checked by `tests/bench/test_bench_papers.py`).",
             "",
             f"Paired: {rounds} rounds per cell after 20 warm-up steps of each side, steps "
             f"alternating hand, ours, ours, hand, ...; {repeats} pass(es), medians over "
             f"passes (each pass's ours / hand in brackets). Columns as in the table above; "
             f"CPU ms are medians of thread CPU time.",
             "",
             "| estimator | hand ms | ours ms | hand CPU ms | ours CPU ms | ours / hand | "
             "per-round (IQR) | CPU |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for label, m in paired_rows:
        passes = " ".join(f"{r:.2f}" for r in m.get("runs", []))
        lines.append(f"| {label} | {1e3 * m['hand']:.2f} | {1e3 * m['ours']:.2f} | "
                     f"{1e3 * m['hand_cpu']:.2f} | {1e3 * m['ours_cpu']:.2f} | "
                     f"{m['ratio']:.3f} ({passes}) | {m['paired']:.3f} "
                     f"({m['iqr'][0]:.2f}-{m['iqr'][1]:.2f}) | {m['cpu_ratio']:.3f} |")
    over = [label for label, m in paired_rows if m["ratio"] > 1.1 or m["cpu_ratio"] > 1.1]
    lines += ["", f"Above 1.1: {', '.join(over)}; why: the docstring of tests/bench/paired.py "
                  f"(`--papers`)." if over else "No cell above 1.1.", ""]
    lines += [f"Steps per second through the Trainer, evaluation off, one torch thread: "
              f"every estimator that takes Bernoulli latents at this setting, {speed_rounds} "
              f"rounds of one step each (round robin, order reversed every other round, 5 "
              f"warm-up steps each). steps/s = 1 / median step time (wall; CPU: thread CPU "
              f"time, less disturbed by the load); cost vs gumbel: median and IQR over rounds "
              f"of the step time over gumbel's in the same round. f/step: evaluations of f per "
              f"example per step (`Estimator.f_evaluations`). Evaluation: one `Evaluator` call "
              f"at step 5000 (what `Trainer.flush` runs every `train.eval_every` = 5000 steps: "
              f"val/* with the 100-sample bound on the 1,000 test images, grad/* from "
              f"{paper_config().eval.grad_samples} estimates on a minibatch of "
              f"{paper_config().eval.grad_batch_size}), as CPU seconds; its share = eval / (eval "
              f"+ 5000 steps), on CPU times; a 20,000-step run evaluates 5 times (steps 0, 5000, "
              f"..., 20000), so its share is 5 eval / (5 eval + 20000 steps).",
              "",
              "| estimator | f/step | steps/s | steps/s (CPU) | cost vs gumbel (IQR) | "
              "eval s (CPU) | val / grad s (CPU) | eval share per 5000 steps | "
              "eval share of a 20,000-step run |",
              "|---|---:|---:|---:|---|---:|---|---:|---:|"]
    for label, m in speed.items():
        e = evals.get(label)
        if e is None:
            tail = "| | | | |"
        else:
            ev = e["total"][1]
            step = m["cpu"]
            share, run_share = ev / (ev + 5000 * step), 5 * ev / (5 * ev + 20000 * step)
            mark = "" if e["scaled"] == 1 else " *"
            tail = (f"| {ev:.2f}{mark} | {e['val'][1]:.2f} / {e['grad'][1]:.2f}{mark} | "
                    f"{100 * share:.1f}% | {100 * run_share:.1f}% |")
        lines.append(f"| {label} | {m['f_per_step']} | {1 / m['wall']:.1f} | {1 / m['cpu']:.1f} | "
                     f"{m['rel']:.2f} ({m['rel_iqr'][0]:.2f}-{m['rel_iqr'][1]:.2f}) {tail}")
    for label, e in evals.items():
        if e["scaled"] != 1:
            lines += ["", f"\\* {label}: grad/* vmaps all {paper_config().eval.grad_samples} "
                          f"estimates in one chunk (`bench/job/evaluate.py`, `chunk=n`), here "
                          f"{e['rows']:,} decoder rows; that needs over 21 GB (the kernel killed "
                          f"the measurement on this 23 GB machine, and would kill a run at its "
                          f"first evaluation, step 0). Timed with eval.grad_samples="
                          f"{e['measured_samples']} and the grad part scaled by {e['scaled']:g}."]
    logs = [e["log"][1] for e in evals.values()]
    if logs:
        lines += ["", f"Logging (a log-only `Trainer.flush`, every `train.log_every` = 500 steps: "
                      f"the meter's read-back and the log call) costs "
                      f"{1e3 * statistics.median(logs):.2f} ms of CPU, "
                      f"{1e3 * 10 * statistics.median(logs):.1f} ms per 5000 steps: nothing next "
                      f"to evaluation. In a job the log call queues the point for the "
                      f"MetricSink's background thread, whose sqlite writes (not timed here) "
                      f"take the other core or share this one."]
    lines += ["", SECTION_END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put `section` into the markdown file at `path`: in place of the previous
    one between SECTION_BEGIN and SECTION_END, else at the end."""
    text = path.read_text() if path.exists() else ""
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def papers_main(args) -> None:
    """`--papers`: the literature setting's tables (module section above)."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    loads = [load_note()]
    labels = args.only or PAIRED_PAPER_CASES
    runs: dict[str, list[dict]] = {label: [] for label in labels if label in PAIRED_PAPER_CASES}
    for rep in range(args.repeats):
        for label in runs:
            m = measure_paper(label, args.rounds, args.warmup)
            runs[label].append(m)
            print(f"[{rep + 1}/{args.repeats}] {label:20s} hand {1e3 * m['hand']:7.2f} ms  "
                  f"ours {1e3 * m['ours']:7.2f} ms  ratio {m['ratio']:.3f}  "
                  f"per-round {m['paired']:.3f}  CPU {m['cpu_ratio']:.3f}", flush=True)
    paired_rows = []
    for label, rs in runs.items():
        m = median_of(rs)
        m["hand_cpu"] = statistics.median(r["hand_cpu"] for r in rs)
        m["ours_cpu"] = statistics.median(r["ours_cpu"] for r in rs)
        paired_rows.append((label, m))
    loads.append(load_note())
    speed_labels = [label for label in PAPER_CASES if not args.only or label in args.only]
    speed = steps_per_second(speed_labels, args.speed_rounds) if args.speed_rounds else {}
    for label, m in speed.items():
        print(f"{label:20s} {1 / m['wall']:6.1f} steps/s  CPU {1 / m['cpu']:6.1f}  "
              f"vs gumbel {m['rel']:.2f}", flush=True)
    evals = {}
    if args.evals:
        for label, m in speed.items():
            evals[label] = eval_timing(label, m["trainer"])
            print(f"{label:20s} eval {evals[label]['total'][0]:.2f} s wall, "
                  f"{evals[label]['total'][1]:.2f} s CPU", flush=True)
    loads.append(load_note())
    command = (f"python -m tests.bench.paired --papers --rounds {args.rounds} --repeats "
               f"{args.repeats} --speed-rounds {args.speed_rounds}"
               + ("" if args.evals else " --no-evals")
               + (f" --out {args.out}" if args.out else ""))
    text = papers_section(paired_rows, speed, evals, args.rounds, args.repeats,
                          args.speed_rounds, loads, command, (time.perf_counter() - t0) / 60)
    print(text)
    if args.out is not None:
        write_section(args.out, text)


if __name__ == "__main__":
    main()
