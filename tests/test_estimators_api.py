"""The public contract: names, build, shapes, dtypes, errors, and the isolation
between `loss` (model) and `aux_loss` (estimator parameters)."""
import pytest
import torch

import estimators
from tests.problems import DTYPE, Problem

CATEGORICAL = [n for n in estimators.names() if estimators.get(n).latent == "categorical"]


def categories(est, D: int, K: int) -> int:
    """K, or 2 for an estimator whose class refuses K categories (Bernoulli only)."""
    try:
        est.check_latent(D, K)
        return K
    except ValueError:
        return 2


def test_names_and_traits():
    """Every registered estimator declares its traits, with valid values."""
    assert {"exact", "reinforce", "gumbel", "vimco", "reparam"} <= set(estimators.names())
    for name in estimators.names():
        cls, est = estimators.get(name), estimators.build(name)
        assert isinstance(est, torch.nn.Module) and type(est) is cls
        assert est.name == name
        assert cls.target in ("expectation", "bound")
        assert cls.latent in ("categorical", "gaussian")
        for trait in ("unbiased", "temperature", "bf16_safe", "free_bits", "deterministic"):
            assert isinstance(getattr(cls, trait), bool), (name, trait)
        assert isinstance(est.double_backward, bool), name     # may be a property: read it built
        assert isinstance(est.min_samples, int) and est.min_samples >= 1
        n = est.f_evaluations(3, categories(est, 3, 4))
        assert isinstance(n, int) and n >= 1
        if cls.temperature:                     # a schedule assigns est.tau per step
            assert isinstance(est.tau, float)
    assert not estimators.get("gumbel").unbiased
    assert estimators.get("vimco").min_samples == 2
    assert estimators.get("vimco").target == "bound" and not estimators.get("vimco").free_bits
    assert estimators.build("exact").f_evaluations(3, 4) == 64


@pytest.mark.parametrize("name", CATEGORICAL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimate_fields(name, dtype):
    torch.manual_seed(0)
    est = estimators.build(name).to(dtype)
    K = categories(est, 2, 3)
    problem = Problem.make(B=4, D=2, K=K)
    logits, w, f = problem.replicate(1)
    logits = logits.reshape(4, 2, K).to(dtype).detach().requires_grad_()
    g = lambda z: f(z.to(DTYPE)).to(dtype)  # noqa: E731
    out = est(logits, g, context=torch.randn(4, 5, dtype=dtype))
    assert out.loss.shape == () and out.loss.dtype == dtype
    assert out.value.shape == (4,) and not out.value.requires_grad
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.loss, -out.value.mean(), atol=1e-5)
    assert all(torch.as_tensor(v).numel() == 1 for v in out.metrics.values())
    out.loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_loss_and_aux_loss_reach_disjoint_parameters(name):
    torch.manual_seed(0)
    problem = Problem.make(B=4, D=2, K=3)
    logits, w, f = problem.replicate(1)
    est = estimators.build(name).to(DTYPE)
    out = est(logits.reshape(4, 2, 3), f)
    own = list(est.parameters())
    from_loss = torch.autograd.grad(out.loss, own + [logits, w], allow_unused=True,
                                    materialize_grads=True, retain_graph=True)
    assert all((g == 0).all() for g in from_loss[:len(own)]), "loss trains the estimator"
    assert from_loss[-2].abs().sum() > 0
    from_aux = torch.autograd.grad(out.aux_loss, own + [logits, w], allow_unused=True,
                                   materialize_grads=True)
    assert all((g == 0).all() for g in from_aux[-2:]), "aux_loss reaches the model"
    assert sum(g.abs().sum() for g in from_aux[:len(own)]) > 0


class _FirstOrderOnly(torch.autograd.Function):
    """sin(z) summed per sample, whose backward refuses to be differentiated,
    as torch.compile's aot_autograd does (it raises when the backward runs
    with grad mode on, i.e. under create_graph)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.sin().flatten(2).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward through f")
        (z,) = ctx.saved_tensors
        return grad.reshape(*grad.shape, *[1] * (z.dim() - 2)) * z.cos()


@pytest.mark.parametrize("name,opts", [(n, {}) for n in CATEGORICAL] + [("relax", {"use_f": True})])
def test_double_backward_trait_is_truthful(name, opts):
    """An estimator takes a double backward through f exactly when it says so
    (bench.config.validate refuses train.compile by this trait)."""
    torch.manual_seed(0)
    est = estimators.build(name, **opts)
    K = categories(est, 2, 3)
    logits = torch.randn(4, 2, K, requires_grad=True)

    def step():
        out = est(logits, _FirstOrderOnly.apply)
        (out.loss if out.aux_loss is None else out.loss + out.aux_loss).backward()
    if est.double_backward:
        with pytest.raises(RuntimeError, match="double backward through f"):
            step()
    else:
        step()


def test_one_optimiser_over_model_and_estimator_is_safe():
    """(loss + aux_loss).backward() gives the model the same gradient as loss alone."""
    problem = Problem.make(B=4, D=2, K=3)
    est = estimators.build("relax").to(DTYPE)
    grads = []
    for with_aux in (False, True):
        torch.manual_seed(7)
        logits, w, f = problem.replicate(1)
        out = est(logits.reshape(4, 2, 3), f)
        (out.loss + (out.aux_loss if with_aux else 0)).backward()
        grads.append(torch.cat([logits.grad.reshape(-1), w.grad.reshape(-1)]))
    assert torch.equal(grads[0], grads[1])


def test_learned_baseline_trains_only_itself():
    problem = Problem.make(B=4, D=2, K=3)
    logits, w, f = problem.replicate(1)
    est = estimators.build("reinforce", baseline="learned").to(DTYPE)
    out = est(logits.reshape(4, 2, 3), f)
    g = torch.autograd.grad(out.aux_loss, [logits, w] + list(est.parameters()),
                            allow_unused=True, materialize_grads=True)
    assert (g[0] == 0).all() and (g[1] == 0).all() and g[2].abs().sum() > 0


def test_hard_gumbel_is_one_hot_in_the_forward_pass():
    seen = []
    logits = torch.randn(5, 3, 4, requires_grad=True)
    est = estimators.build("gumbel", hard=True, tau=0.3)
    est(logits, lambda z: seen.append(z) or z.sum((-1, -2)))
    z = seen[0]
    assert torch.equal(z.sum(-1), torch.ones_like(z.sum(-1)))
    assert set(z.unique().tolist()) <= {0.0, 1.0}


def test_gumbel_small_temperature_is_finite():
    logits = torch.tensor([[[30.0, -30.0, 0.0]]], requires_grad=True)
    out = estimators.build("gumbel", tau=1e-4)(logits, lambda z: (z * torch.arange(3.)).sum((-1, -2)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logits.grad).all()


def test_same_seed_same_numbers():
    vals = []
    for _ in range(2):
        torch.manual_seed(3)
        logits = torch.randn(4, 2, 3, requires_grad=True)
        out = estimators.build("rebar")(logits, lambda z: (z ** 2).sum((-1, -2)))
        out.loss.backward()
        vals.append(logits.grad.clone())
    assert torch.equal(vals[0], vals[1])


def test_exact_in_several_calls_sums_the_same():
    """rows_per_call splits the K^D configurations over calls of f (7 rows of 3
    examples: 2 configurations a call, the last call short); the estimate and
    its gradient are those of one call."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64)
    calls = []

    def f(z):                                   # (N, B, D, K) -> (N, B), nonlinear in z
        calls.append(z.shape[0])
        return torch.tanh((z * w).sum((-1, -2))) ** 2

    out = []
    for rows in (None, 7):
        est = estimators.build("exact", rows_per_call=rows)
        value = est(logits, f).loss
        out.append((value, torch.autograd.grad(value, logits)[0]))
    assert calls == [81] + [2] * 40 + [1]
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-12)
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-12)


# -- bad inputs -----------------------------------------------------------------

def _f(z):
    return z.sum((-1, -2))


@pytest.mark.parametrize("call,match", [
    (lambda: estimators.build("nope"), r"unknown estimator 'nope'.*valid names.*reinforce"),
    (lambda: estimators.build("gumbel", temperature=1), r"unknown option.*temperature.*valid options.*tau"),
    (lambda: estimators.build("vimco", n_samples=1), r"n_samples=1.*>= 2"),
    (lambda: estimators.build("reinforce", baseline="loo", n_samples=1), r"loo.*n_samples >= 2"),
    (lambda: estimators.build("reinforce", baseline="mean"), r"baseline='mean'.*\['ema', 'learned', 'loo', 'none'\]"),
    (lambda: estimators.build("gumbel", tau=0.0), r"tau=0.0.*> 0"),
    (lambda: estimators.build("reinforce", ema_decay=1.0), r"ema_decay"),
    (lambda: estimators.build("exact")(torch.zeros(1, 13, 2), _f), r"2\^13 = 8192.*max_configs=4096"),
    (lambda: estimators.build("exact", rows_per_call=0), r"rows_per_call=0 .*integer >= 1, or null"),
    (lambda: estimators.build("gumbel")(torch.zeros(3, 4), _f), r"logits must have shape \(B, D, K\), got \(3, 4\)"),
    (lambda: estimators.build("gumbel")(torch.zeros(3, 4, 1), _f), r"K >= 2"),
    (lambda: estimators.build("reinforce")(torch.full((2, 1, 3), float("nan")), _f), r"NaN"),
    (lambda: estimators.build("reinforce")(torch.zeros(2, 1, 3), lambda z: z.sum()), r"f must map z .* to shape \(S, B\)"),
    (lambda: estimators.build("reparam")(torch.zeros(2, 3, 3), lambda z: z.sum(-1)), r"params must have shape \(B, D, 2\)"),
    (lambda: estimators.build("reinforce")(torch.zeros(2, 1, 3), _f, context=torch.zeros(3, 4)), r"context must have shape"),
])
def test_bad_inputs_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", estimators.names())
def test_cuda_device_follows_logits(name):
    est = estimators.build(name).cuda()
    shape = (4, 3, 2) if est.latent == "gaussian" else (4, 3, categories(est, 3, 5))
    p = torch.randn(*shape, device="cuda", requires_grad=True)
    f = (lambda z: z.sum(-1)) if est.latent == "gaussian" else _f
    out = est(p, f)
    out.loss.backward()
    assert out.value.device.type == "cuda" and p.grad.device.type == "cuda"
