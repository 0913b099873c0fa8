"""Pretraining of the shared backbone (models.backbone) as a plain causal
language model on a sequence task, without a latent: the base model that
`model.backbone=shared model.base=<run id | path>` loads.

    python -m bench.pretrain task=strategies train.steps=2000 model.d_model=64
    python -m bench.pretrain task=strategies --out base.pt     # also as a file
    python -m bench.run task=strategies model.backbone=shared model.backbone_mode=lora \
        model.base=<the run id printed>

Overrides are those of bench.run (the same conf/ and schema, composed with
Hydra's compose API; no multirun): task.*, model.d_model / n_layers / n_heads /
mlp_ratio (`+model.…` not needed here), train.steps / batch_size / lr / eval_every / log_every,
eval.batch_size, seed, device, threads, mlflow.experiment. Every sequence
is `<bos> <x> x… </x> <y> y… </y> <eos>` (the layout the decoder reads
under film, add and concat) and every next token is scored.

Logged like a run, to experiment `<mlflow.experiment>-pretrain` (not the CVAE
experiment: its tables read every run there): params = the flattened config
plus pretrain.*, tags stage=pretrain, task, seed, git_commit; metrics
train/nll_token, val/nll_token, val/nll_y (-log p(y | x) per sequence, the
no-latent counterpart of a CVAE's reconstruction term), perf/steps_per_s;
artifacts config.yaml and backbone/backbone.pt (models.backbone.ARTIFACT).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from .config import compose, plain
from .tracking import identity as I
from .tracking import liveness
from .tracking import sink as W
from .tracking import store as S


def _sequences(task, batch):
    """(B, Lc + L + 6) long: `<bos> <x> x… </x> <y> y… </y> <eos>`."""
    import torch
    sp, B, dev = task.spec["specials"], batch.size, batch.x.device

    def tok(name):
        return torch.full((B, 1), sp[name], dtype=torch.long, device=dev)
    return torch.cat([tok("<bos>"), tok("<x>"), batch.c, tok("</x>"), tok("<y>"), batch.x,
                      tok("</y>"), tok("<eos>")], 1)


def _nll(backbone, seq, L: int):
    """Mean next-token NLL over all positions, and -log p(y | x) per sequence."""
    import torch.nn.functional as F
    logits = backbone.lm_logits(seq[:, :-1])                                 # (B, T-1, V)
    nll = F.cross_entropy(logits.transpose(1, 2), seq[:, 1:], reduction="none")   # (B, T-1)
    y = slice(nll.shape[1] - L - 2, nll.shape[1] - 2)      # the positions that predict y… (not </y> <eos>)
    return nll.mean(), nll[:, y].sum(1).mean()


def pretrain(cfg, out=None, max_slots: int = 16, log=None, experiment=None) -> tuple[str, dict]:
    """Train and log one base model; returns (MLflow run id, final metrics)."""
    import torch

    from models.backbone import ARTIFACT, Backbone, save_checkpoint
    from models.registry import config_from
    from models.sequence import SequenceConfig

    from .job.build import load_task, model_options, pick_device

    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = load_task(cfg, device)
    if task.family != "sequence":
        raise ValueError(f"task={cfg.task.name}: pretraining needs a sequence task "
                         f"(family {task.family!r} has no language model)")
    # `family` picks a model family for bench.run; pretraining has one (the sequence model)
    mc = config_from(SequenceConfig, "sequence model", model_options(cfg, drop=("family",)))
    spec = task.spec
    L, Lc = spec["length"], spec["context_length"]
    # the prefix layout needs Lc + L + n_slots + 5 positions; room for up to max_slots latent slots
    backbone = Backbone(spec["vocab_size"], Lc + L + 5 + max_slots, mc.d_model, mc.n_heads,
                        mc.n_layers, mc.mlp_ratio).to(device)
    opt = torch.optim.Adam(backbone.parameters(), lr=cfg.train.lr)
    val = task.split("val")
    n_val = min(cfg.eval.batch_size, val.size)
    val_seq = _sequences(task, type(val)(val.x[:n_val], val.c[:n_val], None))

    resolved = OmegaConf.to_container(cfg)
    extra = {"pretrain.max_slots": max_slots, **{f"pretrain.{k}": v for k, v in backbone.spec.items()}}
    uri = S.resolve_tracking_uri()
    S.configure(cfg.mlflow.patience_s, uri)
    c = S.client(uri)
    exp_id = S.ensure_experiment(uri, experiment or f"{cfg.mlflow.experiment}-pretrain")
    name = f"pretrain-{cfg.task.name}-d{mc.d_model}-l{mc.n_layers}-s{cfg.seed}"
    tags = {"stage": "pretrain", "task": cfg.task.name, "seed": cfg.seed, "git_commit": I.git_commit(),
            "config_hash": I.config_hash({**resolved, **extra}), I.RUN_NAME_TAG: name}
    run_id = W.open_run(c, exp_id, tags, resolved, extra)
    beat = liveness.Heartbeat(c, run_id, cfg.mlflow.heartbeat_s)
    sink = W.MetricSink(c, run_id)
    final: dict = {}
    try:
        try:
            gen = task.generator(cfg.seed)
            t0, total, since = time.perf_counter(), torch.zeros((), device=device), 0
            for step in range(cfg.train.steps + 1):
                metrics = {}
                if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                    with torch.no_grad():
                        tok, y = _nll(backbone, val_seq, L)
                    metrics.update({"val/nll_token": tok.item(), "val/nll_y": y.item()})
                if since and (step % cfg.train.log_every == 0 or step == cfg.train.steps):
                    metrics.update({"train/nll_token": float(total) / since,
                                    "perf/steps_per_s": since / (time.perf_counter() - t0)})
                    t0, total, since = time.perf_counter(), torch.zeros((), device=device), 0
                if metrics:
                    sink(step, metrics)
                    final.update(metrics)
                    if log is not None:
                        log(step, metrics)
                if step == cfg.train.steps:
                    break
                loss, _ = _nll(backbone, _sequences(task, task.sample("train", cfg.train.batch_size, gen)), L)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, since = total + loss.detach(), since + 1      # no host read per step
        finally:
            sink.close()
            beat.stop()
        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(backbone, Path(tmp) / Path(ARTIFACT).name)
            S.retrying(c.log_artifact, run_id, str(path), str(Path(ARTIFACT).parent))
            if out is not None:
                save_checkpoint(backbone, out)
    except BaseException as e:
        W.set_tags(c, run_id, {"failure_reason": f"{type(e).__name__}: {e}"[:1000]})
        S.retrying(c.set_terminated, run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    S.retrying(c.set_terminated, run_id, "FINISHED")
    return run_id, final


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="bench.run overrides: task=strategies model.d_model=64 …")
    ap.add_argument("--out", help="also save the checkpoint to this path")
    ap.add_argument("--max-slots", type=int, default=16,
                    help="latent slots the position table leaves room for (prefix layout)")
    ap.add_argument("--experiment", help="MLflow experiment (default <mlflow.experiment>-pretrain)")
    args = ap.parse_args(argv)
    # `model` is an open dict declaring only `family` (bench.config.schema): Hydra wants `+model.k=v`;
    # `++` adds or overrides, so both spellings work here
    overrides = ["++" + o if o.startswith("model.") else o for o in args.overrides]
    cfg = plain(compose(overrides))
    run_id, final = pretrain(cfg, out=args.out, max_slots=args.max_slots, experiment=args.experiment)
    shown = "  ".join(f"{k}={v:.3f}" for k, v in sorted(final.items()) if k.startswith("val/"))
    where = f" and {args.out}" if args.out else ""
    print(f"[bench] pretrain run {run_id} FINISHED: {shown}\n[bench] checkpoint: artifact "
          f"backbone/backbone.pt of run {run_id}{where}; use model.backbone=shared "
          f"model.base={run_id}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from e
