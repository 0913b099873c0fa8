"""What a run is: its identity (`config_hash`), its labels (the tags every
run carries, one name end to end: the estimator tag is the conf file stem and
`Estimator.name`), the git commit it ran at, and the tag keys that tie a sweep
together.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

# tag keys shared by the job runner, the sweep callback and the results reader
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
LABEL_KEYS = ("estimator", "conditioning", "task", "latent", "kl", "free_bits",
              "free_bits_mode", "seed")
# config keys that do not change what a run computes: left out of config_hash
# (dotted: one key of a section; checkpoints say where and how often state is
# saved, exact's rows_per_call into how many calls of f its sum is split,
# model.label what the tables call the model, eval.tsne_points how many images
# one picture of the final evaluation draws)
HASH_EXCLUDE = ("rerun", "progress", "mlflow", "hydra", "train.checkpoint_every",
                "train.checkpoint_dir", "estimator.rows_per_call", "model.label",
                "eval.tsne_points")
# keys added after runs were stored, with the value that computes what runs did
# before the key existed: at that value a key is left out of config_hash, so
# stored runs keep their identity (and a rerun still finds them FINISHED)
HASH_DEFAULTS = {"kl.form": "analytic", "eval.train_elbo_size": 0, "train.fused_adam": False,
                 "train.estimator_beta1": 0.9}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not tree and prefix:
            out[prefix[:-1]] = "{}"
        return out
    out[prefix[:-1]] = tree
    return out


def hashed(resolved: dict) -> dict:
    """The part of the resolved config that identifies a run: without the keys
    in HASH_EXCLUDE, which change where or how a run is logged or saved but
    not what it computes, without the keys of HASH_DEFAULTS at their defaults,
    and without nulls in the open `model` dict (a null
    there is the default, the same as an absent key: declaring a key so that
    it can be set without `+` must not change the identity of runs that never
    set it)."""
    kept = {k: v for k, v in resolved.items() if k not in HASH_EXCLUDE}
    for dotted in (k for k in HASH_EXCLUDE if "." in k):
        section, key = dotted.split(".", 1)
        if isinstance(kept.get(section), dict) and key in kept[section]:
            kept[section] = {k: v for k, v in kept[section].items() if k != key}
    for dotted, default in HASH_DEFAULTS.items():
        section, key = dotted.split(".", 1)
        if isinstance(kept.get(section), dict) and kept[section].get(key, default) == default:
            kept[section] = {k: v for k, v in kept[section].items() if k != key}
    if isinstance(kept.get("model"), dict):
        kept["model"] = {k: v for k, v in kept["model"].items() if v is not None}
    return kept


def config_hash(resolved: dict) -> str:
    """Identity of a run: sha256 of `hashed(resolved)` (seed included)."""
    text = json.dumps(hashed(resolved), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit() -> str:
    """HEAD of the project checkout, '+dirty' when the tree has changes; cached
    in BENCH_GIT_COMMIT so a sweep asks git once."""
    cached = os.environ.get("BENCH_GIT_COMMIT")
    if cached:
        return cached
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    os.environ["BENCH_GIT_COMMIT"] = commit
    return commit


def labels(resolved: dict) -> dict[str, str]:
    """The tags every run carries, one name end to end: the
    estimator tag is the conf file stem and Estimator.name."""
    kl = resolved.get("kl", {})
    return {"estimator": resolved["estimator"]["name"],
            "conditioning": resolved["conditioning"]["name"],
            "task": resolved["task"]["name"],
            "latent": resolved["latent"]["name"],
            "kl": kl.get("name"),
            "free_bits": kl.get("free_bits"),
            "free_bits_mode": kl.get("free_bits_mode"),
            "seed": resolved.get("seed")}


def sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


def variant(resolved: dict) -> str:
    """The estimator and the options that differ from its class defaults:
    `reinforce(baseline=ema,n_samples=1)`, or just `gumbel`."""
    import estimators
    est = dict(resolved["estimator"])
    name = est.pop("name")
    try:
        defaults = estimators.options(name)
    except ValueError:          # an unknown name, in a run recorded FAILED for it
        return str(name)
    changed = [f"{k}={v}" for k, v in sorted(est.items()) if defaults.get(k, object()) != v]
    return f"{name}({','.join(changed)})" if changed else name


def run_name(resolved: dict) -> str:
    """What the MLflow runs table shows first: the estimator variant, then
    conditioning, task and seed, then the KL settings where they are not the
    defaults (constant, no free bits)."""
    lab = labels(resolved)
    parts = [variant(resolved), str(lab["conditioning"]), str(lab["task"]), f"s{lab['seed']}"]
    if lab["kl"] != "constant":
        parts.append(f"kl={lab['kl']}")
    if float(lab["free_bits"] or 0) > 0:
        parts.append(f"fb={lab['free_bits']}({lab['free_bits_mode']})")
    return " · ".join(parts)

