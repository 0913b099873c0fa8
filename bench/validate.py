"""Checks on a composed config that the schema's types cannot express: ranges,
registry lookups and rules between keys. `validate(cfg)` runs before anything
is built or logged and raises `ConfigError`, whose message names the key, the
value and the valid values:

    estimator.n_samples=1 is not valid for estimator=vimco; valid values: integers >= 2

Valid names are the stems of the files in `conf/<group>/` (one name end to
end) and, for estimators, `estimators.names()` as well.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

CONF = Path(__file__).resolve().parent.parent / "conf"
# bf16 runs the networks in bfloat16 (8-bit mantissa: ~0.4 % relative rounding
# in every activation, so f(z) carries rounding noise). These estimators
# difference f at nearby points, where that noise does not cancel and competes
# with what their variance reduction removes: rebar/relax (f(b) minus the
# control variate at the relaxed sample), vimco (leave-one-out log-mean-exp over
# S samples). A judgement, not a measurement: lift it after comparing grad/* in
# fp32 and bf16 on a GPU. README, "Cluster".
BF16_UNSAFE = ("rebar", "relax", "vimco")


class ConfigError(ValueError):
    def __init__(self, key: str, value: Any, valid: str, why: str = ""):
        self.key = key
        why = f" ({why})" if why else ""
        super().__init__(f"{key}={value!r} is not valid{why}; valid values: {valid}")


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


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


def _enum(v: Any) -> Any:
    return getattr(v, "value", v)


def validate(cfg) -> None:
    """Raise ConfigError for the first invalid key of a composed config."""
    import estimators

    # -- names ------------------------------------------------------------
    est_name = cfg.estimator.get("name")
    _choice("estimator", est_name, set(choices("estimator")) & set(estimators.names()))
    _choice("conditioning", cfg.conditioning.get("name"), choices("conditioning"))
    _choice("task", cfg.task.get("name"), choices("task"))

    # -- estimator options ------------------------------------------------
    opts = {k: v for k, v in cfg.estimator.items() if k != "name"}
    valid_opts = estimators.options(est_name)
    for k in opts:
        if k not in valid_opts:
            raise ConfigError(f"estimator.{k}", opts[k], f"options of {est_name}: {sorted(valid_opts)}",
                              "unknown option")
    proto = estimators.build(est_name)          # class attributes, default options
    if "n_samples" in opts:
        _range("estimator.n_samples", opts["n_samples"], proto.min_samples, integer=True)
    if "tau" in opts:
        _range("estimator.tau", opts["tau"], 0, lo_open=True)
    latent = _enum(cfg.latent.name)
    if proto.latent != latent:
        fits = [n for n in estimators.names() if estimators.build(n).latent == latent]
        raise ConfigError("estimator", est_name, ", ".join(fits),
                          f"it needs latent={proto.latent}, the config has latent={latent}")
    try:
        estimators.build(est_name, **opts)      # the estimator's own option checks
    except ValueError as e:
        raise ConfigError("estimator", dict(opts), f"options accepted by {est_name}", str(e)) from e

    # -- latent -----------------------------------------------------------
    D, K = cfg.latent.D, cfg.latent.K       # None: the task's default (models.default_latent)
    if D is not None:
        _range("latent.D", D, 1, integer=True)
    if latent == "categorical" and K is not None:
        _range("latent.K", K, 2, integer=True)
        if est_name == "exact" and D is not None:
            n, cap = cfg.latent.K ** cfg.latent.D, opts.get("max_configs", 4096)
            if n > cap:
                raise ConfigError("estimator", "exact", "a sampling estimator, or smaller latent.K/latent.D",
                                  f"K^D = {n} configurations exceed estimator.max_configs={cap}")

    # -- objective --------------------------------------------------------
    kl = cfg.kl
    _range("kl.beta", kl.beta, 0)
    _range("kl.free_bits", kl.free_bits, 0)
    _range("kl.warmup", kl.warmup, 0, 1, lo_open=True)
    _range("kl.cycles", kl.cycles, 1, integer=True)
    _range("kl.ratio", kl.ratio, 0, 1, lo_open=True)
    mode = _enum(kl.free_bits_mode)
    if mode == "none" and kl.free_bits > 0:
        raise ConfigError("kl.free_bits_mode", mode, "batch, per_dim, total",
                          f"kl.free_bits={kl.free_bits} needs a clamping mode")
    if est_name == "vimco" and kl.free_bits > 0:
        raise ConfigError("kl.free_bits", kl.free_bits, "0 with estimator=vimco",
                          "vimco's bound has no separate KL term to clamp")
    _range("latent_dropout", cfg.latent_dropout, 0, 1, hi_open=True)
    if cfg.temperature.final is not None:
        _range("temperature.final", cfg.temperature.final, 0, lo_open=True)

    # -- training and evaluation -------------------------------------------
    t = cfg.train
    _range("train.steps", t.steps, 1, integer=True)
    _range("train.batch_size", t.batch_size, 1, integer=True)
    _range("train.lr", t.lr, 0, lo_open=True)
    _range("train.estimator_lr", t.estimator_lr, 0, lo_open=True)
    _range("train.eval_every", t.eval_every, 1, integer=True)
    _range("train.log_every", t.log_every, 1, integer=True)
    if _enum(t.precision) == "bf16" and est_name in BF16_UNSAFE:
        raise ConfigError("train.precision", "bf16", "fp32, tf32",
                          f"estimator={est_name} differences f at nearby samples, "
                          "where bfloat16 rounding does not cancel")
    e = cfg.eval
    _range("eval.batch_size", e.batch_size, 1, integer=True)
    _range("eval.iwae_samples", e.iwae_samples, 1, integer=True)
    _range("eval.grad_samples", e.grad_samples, 2, integer=True)
    _range("eval.grad_batch_size", e.grad_batch_size, 1, integer=True)
    if cfg.threads is not None:
        _range("threads", cfg.threads, 1, integer=True)
    if _enum(cfg.device) == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "auto, cpu", "CUDA is not available on this machine")
    _range("mlflow.patience_s", cfg.mlflow.patience_s, 0)
    if cfg.debug.nan_at_step is not None:
        _range("debug.nan_at_step", cfg.debug.nan_at_step, 0, integer=True)
