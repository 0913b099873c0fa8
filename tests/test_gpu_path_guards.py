"""Guards of the GPU path that a CPU can check before the first lease:
compile refused where the estimator needs a double backward, a NaN on an
accelerator surfacing as the named error without a device-side assert, TF32
off during evaluation, per-job peak memory, resume across device types, and
bench.gpu_bench (exit status when a configuration fails, its extra timings).
Run: python -m pytest -q tests/test_gpu_path_guards.py"""
from __future__ import annotations

import copy
import math

import pytest
import torch

import estimators
from bench.job import accel
from bench.job.build import build
from bench.config.validate import ConfigError, validate
from bench.job.train import NonFiniteError, train
from tests.test_harness_train import cfg_of


# -- train.compile and a double backward -------------------------------------------
@pytest.mark.parametrize("opts", [("estimator=rebar",), ("estimator=relax", "estimator.use_f=true")])
def test_compile_is_refused_where_the_estimator_needs_a_double_backward(opts):
    with pytest.raises(ConfigError, match=r"train.compile=True is not valid \(estimator=re\w+ "
                                          r"differentiates a gradient of f again .*aot_autograd"):
        validate(cfg_of(*opts, "train.compile=true"))
    validate(cfg_of(*opts))                                 # eager: fine


def test_relax_without_f_may_compile():
    """The network-only control variate takes no double backward: compile is allowed."""
    assert estimators.build("relax").double_backward is False
    validate(cfg_of("estimator=relax", "train.compile=true"))     # raises ConfigError if refused


def test_the_refusal_names_what_made_the_estimator_need_it():
    with pytest.raises(ConfigError, match=r"valid values: false with estimator=relax "
                                          r"estimator.use_f=True$"):
        validate(cfg_of("estimator=relax", "estimator.use_f=true", "train.compile=true"))


def test_gpu_bench_skips_compile_where_validation_refuses_it(tmp_path):
    from bench import gpu_bench
    out = tmp_path / "gpu_bench.csv"
    gpu_bench.main(["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "8",
                    "--tasks", "digits", "--estimators", "rebar", "--settings", "fp32+compile",
                    "--out", str(out)])
    assert out.read_text().strip() == ""            # no cell: nothing compiled, nothing failed


def _fake_measure(cfg, device, setting, *a, **k):
    if setting == "bf16":
        raise RuntimeError("planted failure")
    return {"steps_per_s": 1.0, "ms_per_step": 1e3, "kernel_share": None, "sync_share": None,
            "compiled": None,
            "eval_s": None, "ckpt_ms": None}


def test_gpu_bench_exits_non_zero_naming_the_failed_configurations(tmp_path, monkeypatch, capsys):
    import pandas as pd
    from bench import gpu_bench
    monkeypatch.setattr(gpu_bench, "measure", _fake_measure)
    out = tmp_path / "gpu_bench.csv"
    with pytest.raises(SystemExit) as e:
        gpu_bench.main(["--device", "cpu", "--batch", "8", "--tasks", "digits",
                        "--estimators", "gumbel", "--settings", "fp32", "bf16", "--out", str(out)])
    assert e.value.code not in (0, None)
    assert str(e.value.code) == (
        "gpu_bench: 2 configuration(s) failed:\n"
        "  task=digits family=default estimator=gumbel batch=8 setting=bf16: RuntimeError: planted failure\n"
        "  task=digits family=conv estimator=gumbel batch=8 setting=bf16: RuntimeError: planted failure")
    printed = capsys.readouterr().out          # the whole table first, the CSV too
    assert printed.count("steps/s") == 2 and printed.count("planted failure") == 2
    t = pd.read_csv(out)
    assert list(t["family"]) == ["default", "default", "conv", "conv"]
    assert t["error"].notna().tolist() == [False, True, False, True]


def test_gpu_bench_help_works_without_a_gpu(capsys):
    from bench import gpu_bench
    with pytest.raises(SystemExit) as e:
        gpu_bench.main(["--help"])
    assert e.value.code == 0 and "--families {default,conv}" in capsys.readouterr().out


def test_gpu_bench_times_evaluation_and_a_checkpoint_on_the_conv_family(tmp_path):
    import pandas as pd
    from bench import gpu_bench
    out = tmp_path / "gpu_bench.csv"
    gpu_bench.main(["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "8",
                    "--tasks", "digits", "--families", "conv", "--estimators", "gumbel",
                    "--settings", "fp32", "bf16", "--set", "+model.width=4", "eval.batch_size=16",
                    "eval.iwae_samples=2", "eval.grad_samples=2", "eval.grad_batch_size=4",
                    "--out", str(out)])
    t = pd.read_csv(out)
    assert list(t["family"]) == ["conv", "conv"] and "error" not in t.columns
    assert t["eval_s"][0] > 0 and t["ckpt_ms"][0] > 0          # once per configuration
    assert t[["eval_s", "ckpt_ms"]].iloc[1].isna().all()


# -- a NaN on an accelerator ---------------------------------------------------------
def _no_device_assert(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(torch, "_assert_async", lambda *a, **k: calls.append(a))
    return calls


def test_nan_logits_off_the_host_take_no_device_side_assert(monkeypatch):
    """The accelerator path, taken on a CPU: every tensor claims not to be on it."""
    est = estimators.build("reinforce")
    logits = torch.full((4, 2, 3), float("nan"))
    calls = _no_device_assert(monkeypatch)
    monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda self: False))
    out = est(logits, lambda z: z.flatten(2).sum(-1))
    monkeypatch.undo()
    assert calls == [] and not torch.isfinite(out.loss)     # the loss carries the NaN on


def test_nan_on_an_accelerator_ends_the_run_with_non_finite_error(monkeypatch):
    from estimators import base
    calls = _no_device_assert(monkeypatch)
    monkeypatch.setattr(base, "_is_host", lambda t: False)
    with pytest.raises(NonFiniteError, match="non-finite train/loss at step 2"):
        train(cfg_of("debug.nan_at_step=2"), log=lambda s, m: None)
    assert calls == []
    monkeypatch.undo()
    train(cfg_of("train.steps=2"), log=lambda s, m: None)     # the process goes on


# -- TF32 and evaluation -------------------------------------------------------------
def _tf32_state() -> tuple:
    return accel._tf32_settings()[1:]


@pytest.fixture
def tf32_restored():
    saved = accel._tf32_settings()
    yield
    accel._restore_tf32(saved)


def test_evaluation_of_a_tf32_run_is_plain_fp32(monkeypatch, tf32_restored):
    import models
    from bench.job.evaluate import Evaluator
    cfg = cfg_of("train.precision=tf32", "eval.grad_stats=false")
    task, model, est = build(cfg, torch.device("cpu"))
    ev = Evaluator(cfg, task, model, est, 0.0, "batch")
    accel.step_view(model, torch.device("cuda"), "tf32")    # what a CUDA tf32 run switches on
    on = _tf32_state()
    accel.set_tf32(False)
    off = _tf32_state()
    accel.set_tf32(True)
    assert on != off
    seen = []
    evaluate = models.evaluate

    def spy(*a, **k):
        seen.append(_tf32_state())
        return evaluate(*a, **k)
    monkeypatch.setattr(models, "evaluate", spy)
    ev(0, 1.0)
    assert seen == [off]                    # evaluation: TF32 off
    assert _tf32_state() == on              # training goes on in TF32


# -- perf/peak_mem_mb and perf/steps_per_s ------------------------------------------------
def test_peak_memory_is_the_jobs_not_the_process(monkeypatch):
    import resource
    big = torch.ones(2**28 // 4 * 3)            # 768 MiB touched, then freed: an earlier job
    del big
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # the process's
    logged = []
    train(cfg_of("train.steps=2"), log=lambda s, m: logged.append(m))
    peak = logged[-1]["perf/peak_mem_mb"]
    assert 0 < peak < before - 500, (peak, before)


def test_cuda_peak_stats_are_reset_once_per_job(monkeypatch):
    from bench.job import meter, train as T
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(d))
    meter.reset_peak_mem(torch.device("cuda"))
    assert calls == [torch.device("cuda")]
    seen = []
    monkeypatch.setattr(T, "reset_peak_mem", lambda d: seen.append(d))
    T.Trainer(cfg_of(), log=lambda s, m: None)
    T.Trainer(cfg_of(), log=lambda s, m: None)
    assert seen == [torch.device("cpu")] * 2


def test_the_compiling_first_step_is_not_in_the_rate(monkeypatch):
    import time
    slept = []

    def slow_compile(fn, **kw):            # the first compiled call takes a second
        def call(*a):
            if not slept:
                slept.append(1)
                time.sleep(1.0)
            return fn(*a)
        return call
    monkeypatch.setattr(accel.torch, "compile", slow_compile)
    logged = []
    train(cfg_of("train.compile=true"), log=lambda s, m: logged.append((s, m)))
    rates = [m["perf/steps_per_s"] for s, m in logged if "train/loss" in m]
    assert slept and len(rates) == 3
    assert rates[0] > 3, rates              # with the sleep inside: 2 steps / > 1 s


# -- resume on another device type ------------------------------------------------------
def _cuda_checkpoint(tmp_path):
    """A CPU run stopped at step 6, its file edited to read as written on CUDA
    (a CUDA generator's state is 16 bytes, a CPU one's 5056)."""
    from omegaconf import OmegaConf
    from bench.job import checkpoint as CK
    cfg = cfg_of("train.steps=10", "train.checkpoint_every=6")
    ck = CK.Checkpointing(tmp_path / "run.pt", "run-a", "hash-a", OmegaConf.to_container(cfg), 6)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=lambda s, m: (_ for _ in ()).throw(KeyboardInterrupt) if s == 8 else None,
              checkpoint=ck)
    state = CK.read(ck.path, ck.config_hash, ck.config)
    assert state["step"] == 6 and state.get("device", "cpu") == "cpu"
    state["device"] = "cuda"
    state["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)
    return cfg, ck, state


TIMED = ("perf/", "grad/seconds_per_estimate")


def resume(cfg, ck, state) -> list:
    from bench.job.train import Trainer
    logged = []
    trainer = Trainer(cfg, lambda s, m: logged.append((s, {k: v for k, v in m.items()
                                                           if not k.startswith(TIMED)})),
                      checkpoint=ck)
    with pytest.warns(RuntimeWarning, match=r"written on cuda, this run is on cpu: the data "
                                            r"generator and CUDA RNG states do not carry over"):
        trainer.restore(state)
    trainer.run()
    return logged


def test_a_cuda_checkpoint_resumes_on_cpu_deterministically(tmp_path):
    cfg, ck, state = _cuda_checkpoint(tmp_path)
    # a copy each: the optimisers train the loaded state's tensors in place
    a = resume(cfg, ck, copy.deepcopy(state))
    assert [s for s, _ in a] == [6, 8, 10] and all(map(math.isfinite, a[-1][1].values()))
    assert resume(cfg, ck, state) == a      # re-seeded from (seed, step): the same continuation


def test_a_cpu_checkpoint_seeds_cuda_on_resume(monkeypatch):
    from bench.job import checkpoint as CK
    seeded, set_ = [], []
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded.append)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d=None: set_.append(s))
    CK.set_rng_state({"cpu": torch.get_rng_state()}, torch.device("cuda"), 5)   # no KeyError
    assert seeded == [5] and set_ == []
    assert CK.device_of({"rng": {"cpu": 0}}) == "cpu" and CK.device_of({"rng": {"cuda": 0}}) == "cuda"
