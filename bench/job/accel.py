"""The model as the training step sees it: numeric precision and torch.compile.

    step_model = StepModel(model, device, precision="bf16", compile=True)
    obj = objective(step_model, est, batch, beta)     # training steps only
    step_model.compiled                                # True while compiled code runs

Contract:
- `posterior`, `prior`, `log_likelihood` and `context` are the model's, run
  under the chosen precision, and always return float32: every estimator's own
  arithmetic (log-softmax, Gumbel noise, sampling, the surrogate, baselines,
  control variates) is float32 whatever the precision.
- fp32: float32 everywhere (TF32 switched off on CUDA, matmuls and cuDNN).
  tf32: CUDA matmuls and convolutions in TensorFloat-32; on CPU it is fp32.
  bf16: the four pieces under torch.autocast(bfloat16) on the run's device
  (CUDA or CPU); reductions that autocast keeps in fp32 stay fp32.
  The TF32 switches are process-global and set by every run, both ways: the
  basic launcher runs one job after another in the same process.
- compile: `posterior`, `prior` and `log_likelihood` are wrapped by
  torch.compile (lazily: compilation happens at the first training step, and
  again when a shape changes). If compiling or running compiled code raises,
  the piece is called eagerly instead (same math, same precision) and a
  RuntimeWarning names the piece and the error; `compiled` turns False and
  train logs perf/compiled = 0. Inductor's `fallback_random` is set so random
  ops inside compiled code draw from the same generator as eager code.
  The fallback covers the forward pieces only. An estimator that declares
  `double_backward` (REBAR; RELAX with use_f) differentiates a gradient of
  f again, which aot_autograd cannot: that error comes from autograd's
  backward pass, after the pieces returned, so bench.config.validate refuses
  train.compile for it instead (ConfigError naming the estimator).
- Evaluation (bench.job.evaluate) keeps the plain model in fp32, uncompiled,
  inside `plain_fp32()`, which switches TF32 off and restores the switches
  after: val/* and grad/* are comparable across precision and compile settings.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Optional

import torch

PIECES = ("posterior", "prior", "log_likelihood", "context")
COMPILED = ("posterior", "prior", "log_likelihood")   # context: detached features, cheap


def set_tf32(on: bool) -> None:
    mode = "tf32" if on else "ieee"
    try:                                    # torch >= 2.9: the only API that does not warn
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
    except AttributeError:                  # older torch
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def _tf32_settings() -> tuple:
    try:
        return ("fp32_precision", torch.backends.cuda.matmul.fp32_precision,
                torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision)
    except AttributeError:
        return ("allow_tf32", torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def _restore_tf32(saved: tuple) -> None:
    if saved[0] == "fp32_precision":
        torch.backends.cuda.matmul.fp32_precision = saved[1]
        torch.backends.cudnn.conv.fp32_precision = saved[2]
        torch.backends.cudnn.rnn.fp32_precision = saved[3]
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:]


@contextmanager
def plain_fp32() -> Iterator[None]:
    """TF32 off inside, the switches as they were after (evaluation of a tf32 run)."""
    saved = _tf32_settings()
    set_tf32(False)
    try:
        yield
    finally:
        _restore_tf32(saved)


def _as_float(out: Any) -> Any:
    return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


class _Piece:
    """One model method at the chosen precision, compiled or not."""

    def __init__(self, name: str, fn: Callable, autocast: Optional[Callable], compile: bool):
        self.name, self.autocast = name, autocast

        def run(*args):
            with (autocast() if autocast else nullcontext()):
                return _as_float(fn(*args))
        self.eager = run
        self.fast: Optional[Callable] = torch.compile(run) if compile else None

    def __call__(self, *args):
        if self.fast is not None:
            try:
                return self.fast(*args)
            except Exception as e:  # noqa: BLE001 -- any compiler failure: eager below decides
                out = self.eager(*args)     # a genuine error in the model raises here
                self.fast = None
                warnings.warn(f"train.compile: torch.compile of model.{self.name} failed "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); "
                              "running it eagerly (same precision, same math) for the rest of the run",
                              RuntimeWarning, stacklevel=2)
                return out
        return self.eager(*args)


class StepModel:
    """A view of `model` for the training step (module docstring); anything
    else (`latent`, `parameters`, ...) is the model's own."""

    def __init__(self, model, device: torch.device, precision: str = "fp32", compile: bool = False):
        if precision not in ("fp32", "tf32", "bf16"):
            raise ValueError(f"train.precision={precision!r} is not valid; valid values: bf16, fp32, tf32")
        self.model, self.precision, self.want_compile = model, precision, bool(compile)
        set_tf32(precision == "tf32" and device.type == "cuda")
        if precision == "tf32" and device.type != "cuda":
            warnings.warn("train.precision=tf32 has no effect on CPU: the run is fp32",
                          RuntimeWarning, stacklevel=2)
        autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) \
            if precision == "bf16" else None
        if compile:
            import torch._inductor.config as inductor
            inductor.fallback_random = True     # same random numbers as eager
        self.pieces = {n: _Piece(n, getattr(model, n), autocast, compile and n in COMPILED)
                       for n in PIECES}

    @property
    def compiled(self) -> bool:
        return self.want_compile and all(self.pieces[n].fast is not None for n in COMPILED)

    def posterior(self, batch):
        return self.pieces["posterior"](batch)

    def prior(self, batch):
        return self.pieces["prior"](batch)

    def log_likelihood(self, batch, z):
        return self.pieces["log_likelihood"](batch, z)

    def context(self, batch):
        return self.pieces["context"](batch)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def step_view(model, device: torch.device, precision: str = "fp32", compile: bool = False):
    """What the training step calls: the model itself for plain fp32 eager runs
    (no wrapper on the hot path), else a StepModel."""
    if precision == "fp32" and not compile:
        set_tf32(False)
        return model
    return StepModel(model, device, precision, compile)
