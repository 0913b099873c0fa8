"""Checks on a composed config that the schema's types cannot express: ranges,
registry lookups and rules between keys. `validate(cfg)` runs before anything
is built or logged and raises `ConfigError`, whose message names the key, the
value and the valid values:

    estimator.n_samples=1 is not valid for estimator=vimco; valid values: integers >= 2

Group names (`estimator=...`, `task=...`) were already checked by Hydra when
it composed the config (a file `conf/<group>/<name>.yaml` exists on its search
path); here they are checked against the registries, one name end to end.
Everything an estimator refuses (options, latent sizes) comes from the
estimator itself: `estimators.build` and `Estimator.check_latent` raise, and
this module only names the config key. No float option may be infinite or
NaN, and a training step must fit in memory (bench.config.memory).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

from .schema import FreeBitsMode


class ConfigError(ValueError):
    def __init__(self, key: str, value: Any, valid: str, why: str = "", message: str = ""):
        self.key = key
        why = f" ({why})" if why else ""
        super().__init__(message or f"{key}={value!r} is not valid{why}; valid values: {valid}")

    @classmethod
    def from_component(cls, key: str, value: Any, error: ValueError) -> "ConfigError":
        """A component's own ValueError (which names its option and the valid
        values), under the config key it came from."""
        return cls(key, value, "", message=f"{key}={value!r} is not valid ({error})")


def _choice(key: str, value: Any, valid: Iterable[str]) -> None:
    valid = sorted(valid)
    if value not in valid:
        raise ConfigError(key, value, ", ".join(valid))


def _range(key: str, value: Any, lo: float, hi: float | None = None, *, integer: bool = False,
           lo_open: bool = False, hi_open: bool = False) -> None:
    kind = "integers" if integer else "numbers"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (
            hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        lo_s = f"> {lo}" if lo_open else f">= {lo}"
        hi_s = "" if hi is None else (f" and < {hi}" if hi_open else f" and <= {hi}")
        raise ConfigError(key, value, f"{kind} {lo_s}{hi_s}")


def _set_opts(opts: dict, defaults: dict) -> str:
    """' estimator.k=v' for the options that differ from the defaults: what,
    besides the name, made the estimator what it is."""
    return "".join(f" estimator.{k}={v}" for k, v in sorted(opts.items()) if defaults.get(k) != v)


def _floats(node, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, value) of every float in a plain config, lists included."""
    items = node.items() if hasattr(node, "items") else enumerate(node)
    for k, v in items:
        key = f"{prefix}{k}" if prefix else str(k)
        if isinstance(v, float):
            yield key, v
        elif hasattr(v, "items") or isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig":
            yield from _floats(v, f"{key}.")


def validate(cfg) -> None:
    """Raise ConfigError for the first invalid key of a plain config
    (`bench.config.plain`: enums already strings)."""
    import estimators
    import models

    # -- no option is infinite or NaN (a range check alone lets +inf through) --
    for key, v in _floats({k: v for k, v in cfg.items() if k != "hydra"}):
        if not math.isfinite(v):
            raise ConfigError(key, v, "finite numbers")

    # -- names ------------------------------------------------------------
    est_name = cfg.estimator.get("name")
    _choice("estimator", est_name, estimators.names())
    _choice("conditioning", cfg.conditioning.get("name"), models.conditioning.names())
    _choice("task", cfg.task.get("name"), models.tasks.names())

    # -- estimator: its own checks, named by config key ---------------------
    opts = {k: v for k, v in cfg.estimator.items() if k != "name"}
    valid_opts = estimators.options(est_name)
    for k in opts:
        if k not in valid_opts:
            raise ConfigError(f"estimator.{k}", opts[k], f"options of {est_name}: {sorted(valid_opts)}",
                              "unknown option")
    cls = estimators.get(est_name)
    # below the class's minimum no other option can help: named before the
    # estimator's own checks, which may blame an option they meet first
    n = opts.get("n_samples")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < cls.min_samples):
        raise ConfigError("estimator.n_samples", n, f"integers >= {cls.min_samples}",
                          f"{est_name} needs at least {cls.min_samples} sample(s) per estimate")
    latent = cfg.latent.name
    kind = models.latents.get(latent).estimator_kind     # bernoulli: categorical logits [0, a]
    if cls.latent != kind:
        fits = [n for n in estimators.names() if estimators.get(n).latent == kind]
        takes = " or ".join(f"latent={n}" for n in models.latents.names()
                            if models.latents.get(n).estimator_kind == cls.latent)
        raise ConfigError("estimator", est_name, ", ".join(fits),
                          f"it needs {takes}, the config has latent={latent}")
    try:
        est = estimators.build(est_name, **opts)
    except ValueError as e:
        k = next((k for k in opts if f"{k}=" in str(e)), None)
        raise ConfigError.from_component(*((f"estimator.{k}", opts[k]) if k else ("estimator", est_name)),
                                         e) from e

    # -- latent -----------------------------------------------------------
    D, K = cfg.latent.D, cfg.latent.K       # None: the task's default (models.default_latent)
    if D is not None:
        _range("latent.D", D, 1, integer=True)
    if latent == "bernoulli":
        K = 2                               # latent.K is unused (a task's default K too)
    if kind == "categorical" and K is not None:
        _range("latent.K", K, 2, integer=True)
        if D is not None:
            try:
                est.check_latent(D, K)
            except ValueError as e:
                raise ConfigError.from_component("estimator", est_name, e) from e

    # -- objective --------------------------------------------------------
    kl = cfg.kl
    _range("kl.beta", kl.beta, 0)
    _range("kl.free_bits", kl.free_bits, 0)
    _range("kl.warmup", kl.warmup, 0, 1, lo_open=True)
    _range("kl.cycles", kl.cycles, 1, integer=True)
    _range("kl.ratio", kl.ratio, 0, 1, lo_open=True)
    mode = kl.free_bits_mode
    if mode == FreeBitsMode.none.value and kl.free_bits > 0:
        raise ConfigError("kl.free_bits_mode", mode, "batch, per_dim, total",
                          f"kl.free_bits={kl.free_bits} needs a clamping mode")
    if not cls.free_bits and kl.free_bits > 0:
        raise ConfigError("kl.free_bits", kl.free_bits, f"0 with estimator={est_name}",
                          f"{est_name}'s {cls.target} has no separate KL term to clamp")
    if kl.form == "sampled" and kl.free_bits > 0:
        raise ConfigError("kl.free_bits", kl.free_bits, "0 with kl.form=sampled",
                          "a sampled KL inside f has no per-variable term to clamp; use kl.form=analytic")
    _range("latent_dropout", cfg.latent_dropout, 0, 1, hi_open=True)
    if cfg.temperature.final is not None:
        _range("temperature.final", cfg.temperature.final, 0, lo_open=True)

    # -- training and evaluation -------------------------------------------
    t = cfg.train
    _range("train.steps", t.steps, 1, integer=True)
    if t.f_evals is not None:
        _range("train.f_evals", t.f_evals, 1, integer=True)
    if t.prior_lr is not None:
        _range("train.prior_lr", t.prior_lr, 0, lo_open=True)
    _range("train.batch_size", t.batch_size, 1, integer=True)
    from .memory import check as check_memory      # a step that cannot fit in memory
    check_memory(cfg, est, kind, D, K)
    _range("train.lr", t.lr, 0, lo_open=True)
    _range("train.estimator_lr", t.estimator_lr, 0, lo_open=True)
    _range("train.estimator_beta1", t.estimator_beta1, 0, 1, hi_open=True)
    _range("train.eval_every", t.eval_every, 1, integer=True)
    _range("train.log_every", t.log_every, 1, integer=True)
    if t.checkpoint_every is not None:
        _range("train.checkpoint_every", t.checkpoint_every, 1, integer=True)
    if not isinstance(t.checkpoint_dir, str) or not t.checkpoint_dir.strip():
        raise ConfigError("train.checkpoint_dir", t.checkpoint_dir, "a folder path")
    if t.precision == "bf16" and not cls.bf16_safe:
        raise ConfigError("train.precision", "bf16", "fp32, tf32",
                          f"estimator={est_name} differences f at nearby samples, "
                          "where bfloat16 rounding does not cancel")
    # refused rather than caught: the double backward raises inside autograd's
    # backward pass, after the compiled forward pieces returned, where no eager
    # fallback of bench.job.accel can redo the step (its inputs' graph is spent)
    if t.compile and est.double_backward:
        raise ConfigError("train.compile", True,
                          f"false with estimator={est_name}{_set_opts(opts, valid_opts)}",
                          f"estimator={est_name} differentiates a gradient of f again "
                          "(its control variate's variance objective: a double backward "
                          "through the model), which torch.compile's aot_autograd does not support")
    e = cfg.eval
    _range("eval.batch_size", e.batch_size, 1, integer=True)
    _range("eval.iwae_samples", e.iwae_samples, 1, integer=True)
    _range("eval.train_elbo_size", e.train_elbo_size, 0, integer=True)
    _range("eval.grad_samples", e.grad_samples, 2, integer=True)
    _range("eval.grad_batch_size", e.grad_batch_size, 1, integer=True)
    _range("eval.tsne_points", e.tsne_points, 5, integer=True)   # t-SNE needs a few more points than its 2 dimensions
    if cfg.threads is not None:
        _range("threads", cfg.threads, 1, integer=True)
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "auto, cpu", "CUDA is not available on this machine")
    _range("mlflow.patience_s", cfg.mlflow.patience_s, 0)
    m = cfg.mlflow
    _range("mlflow.heartbeat_s", m.heartbeat_s, 0, lo_open=True)
    # a single late beat (a busy store, a GC pause) must not make a live run lost
    _range("mlflow.lost_after_s", m.lost_after_s, 2 * m.heartbeat_s, lo_open=True)
    if cfg.debug.nan_at_step is not None:
        _range("debug.nan_at_step", cfg.debug.nan_at_step, 0, integer=True)
