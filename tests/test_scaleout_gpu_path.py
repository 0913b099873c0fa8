"""The GPU path of bench.job.train, exercised on CPU where it can be: precision
(schema and estimator rules, bf16 autocast on the networks with fp32 for the
estimator), torch.compile (same numbers as eager; a failing compiler falls back
with a warning and the same numbers), no host reads per step, device=auto.
Tests marked `cuda` repeat the essentials on a GPU and skip without one.
Run: python -m pytest -q tests/test_scaleout_gpu_path.py [-m cuda]"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from bench.job import accel
from bench.job.train import build, pick_device, train
from bench.config.validate import ConfigError, validate
from tests.test_harness_train import cfg_of

ROOT = Path(__file__).resolve().parent.parent
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def run(*overrides: str) -> list[tuple[int, dict]]:
    logged: list[tuple[int, dict]] = []
    train(cfg_of(*overrides), log=lambda step, m: logged.append((step, dict(m))))
    return logged


def numbers(logged) -> list[tuple[int, dict]]:
    return [(s, {k: v for k, v in m.items() if not k.startswith("perf/")
                 and k != "grad/seconds_per_estimate"}) for s, m in logged]


# -- configuration ----------------------------------------------------------
def test_precision_is_checked_by_the_schema():
    with pytest.raises(ConfigCompositionException) as e:
        cfg_of("train.precision=fp16")
    text = str(e.value) + str(e.value.__cause__)
    assert "train.precision" in text and all(v in text for v in ("fp32", "tf32", "bf16"))


@pytest.mark.parametrize("est", ["rebar", "relax", "vimco"])
def test_bf16_is_refused_where_it_is_unsafe(est):
    with pytest.raises(ConfigError, match=r"train.precision='bf16' is not valid .* valid values: fp32, tf32"):
        validate(cfg_of(f"estimator={est}", "train.precision=bf16"))
    validate(cfg_of(f"estimator={est}", "train.precision=tf32"))


def test_device_auto_is_cuda_when_present():
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# -- bf16 -------------------------------------------------------------------
def test_bf16_runs_the_networks_in_bf16_and_hands_fp32_to_the_estimator():
    cfg = cfg_of("train.precision=bf16")
    task, model, est = build(cfg, torch.device("cpu"))
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    sm = accel.StepModel(model, torch.device("cpu"), "bf16")
    batch = task.sample("train", 8, task.generator(0))
    logits = sm.posterior(batch)
    assert logits.dtype == torch.float32 and seen and set(seen) == {torch.bfloat16}
    z = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()[None]
    assert sm.log_likelihood(batch, z).dtype == torch.float32
    seen.clear()
    model.posterior(batch)                      # the plain model (evaluation) stays fp32
    assert set(seen) == {torch.float32}
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("est", ["gumbel", "reinforce", "exact"])
def test_bf16_training_is_close_to_fp32(est):
    a = numbers(run(f"estimator={est}"))
    b = numbers(run(f"estimator={est}", "train.precision=bf16"))
    assert a != b                                          # bf16 did change something
    la, lb = a[-1][1]["train/loss"], b[-1][1]["train/loss"]
    assert math.isfinite(lb) and abs(la - lb) <= 0.02 * abs(la), (la, lb)


# -- torch.compile ------------------------------------------------------------
@pytest.mark.slow
def test_compile_on_cpu_gives_the_eager_numbers():
    eager = run("estimator=reinforce")
    compiled = run("estimator=reinforce", "train.compile=true")
    assert [m["perf/compiled"] for s, m in compiled if "perf/compiled" in m] == [1.0, 1.0, 1.0]
    for (s, a), (t, b) in zip(numbers(eager), numbers(compiled)):
        assert s == t and a.keys() == b.keys()
        for k in a.keys() - {"grad/snr"}:   # |mean|/std of 4 draws: amplifies 1e-6 to 1e-2
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (s, k)


def test_failing_compiler_falls_back_with_a_warning(monkeypatch):
    def broken(fn, **kw):
        def call(*a):
            raise RuntimeError("inductor: no C compiler")
        return call
    monkeypatch.setattr(accel.torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of model\.\w+ failed .*no C compiler"):
        logged = run("train.compile=true")
    assert all(m["perf/compiled"] == 0.0 for s, m in logged if "perf/compiled" in m)
    assert numbers(logged) == numbers(run())              # eager fallback: the very same numbers


# -- no host synchronisation per step ------------------------------------------
CPU_ONLY = ("estimators/base.py",)     # the NaN check reads on CPU only; none on CUDA


def host_reads(device: str, steps: int) -> Counter:
    """Reads of device values (tests/placement.py: .item, float, .cpu, .numpy,
    .tolist, nonzero, unique, masked_select, boolean masks) by site, during a
    whole Trainer.run whose only logging steps are 0 and the last."""
    from bench.job.train import Trainer
    from tests.placement import Placement
    cfg = cfg_of(f"train.steps={steps}", f"train.log_every={steps}", f"train.eval_every={steps}",
                 "eval.grad_stats=false", f"device={device}")
    tr = Trainer(cfg, log=lambda s, m: None)
    with Placement(tr.model, tr.est, tr.task) as p:
        tr.run()
    return Counter(site for _, site in p.reads)


def assert_no_reads_per_step(device: str) -> None:
    few, many = host_reads(device, 3), host_reads(device, 11)
    per_step = {k for k in many if many[k] != few.get(k, 0)}
    allowed = {k for k in per_step if device == "cpu" and k.startswith(CPU_ONLY)}
    assert per_step == allowed, {k: (few.get(k, 0), many[k]) for k in per_step - allowed}


def test_no_host_reads_per_training_step_on_cpu():
    assert_no_reads_per_step("cpu")


# -- CUDA ---------------------------------------------------------------------------
@pytest.mark.cuda
@cuda
def test_cuda_no_host_reads_per_step():
    assert_no_reads_per_step("cuda")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("opts", [(), ("train.precision=bf16",), ("train.precision=tf32",),
                                  ("train.compile=true",)])
def test_cuda_training_runs_on_the_device(opts):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)     # no compile fallback on a GPU
        logged = run("device=cuda", "task=strategies", *opts)
    final = logged[-1][1]
    assert math.isfinite(final["train/loss"]) and final["perf/peak_mem_mb"] > 0
    if "train.compile=true" in opts:
        assert final["perf/compiled"] == 1.0


# -- the GPU benchmark script, tiny on CPU ------------------------------------------------
def test_gpu_bench_runs_tiny_on_cpu(tmp_path):
    import pandas as pd
    from bench import gpu_bench
    out = tmp_path / "gpu_bench.csv"
    gpu_bench.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "8",
                    "--tasks", "digits", "--families", "default", "--estimators", "gumbel", "rebar",
                    "--settings", "fp32", "bf16", "--out", str(out)])
    t = pd.read_csv(out)
    assert [tuple(r) for r in t[["estimator", "setting"]].values] == \
        [("gumbel", "fp32"), ("gumbel", "bf16"), ("rebar", "fp32")]     # rebar+bf16 refused
    assert "error" not in t.columns and (t["steps_per_s"] > 0).all()
