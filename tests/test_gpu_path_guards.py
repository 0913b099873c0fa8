"""Guards of the GPU path that a CPU can check before the first lease:
compile refused where the estimator needs a double backward, a NaN on an
accelerator surfacing as the named error without a device-side assert, TF32
off during evaluation, per-job peak memory, resume across device types.
Run: python -m pytest -q tests/test_gpu_path_guards.py"""
from __future__ import annotations

import pytest

from bench.config.validate import ConfigError, validate
from tests.test_harness_train import cfg_of


# -- train.compile and a double backward -------------------------------------------
@pytest.mark.parametrize("opts", [("estimator=rebar",), ("estimator=relax", "estimator.use_f=true")])
def test_compile_is_refused_where_the_estimator_needs_a_double_backward(opts):
    with pytest.raises(ConfigError, match=r"train.compile=True is not valid \(estimator=re\w+ "
                                          r"differentiates a gradient of f again .*aot_autograd"):
        validate(cfg_of(*opts, "train.compile=true"))
    validate(cfg_of(*opts))                                 # eager: fine


def test_relax_without_f_may_compile():
    validate(cfg_of("estimator=relax", "train.compile=true"))


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
