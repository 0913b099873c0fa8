"""DisARM and IndeCateR: unbiased against the enumerated gradient (z-test,
float64, fixed seed, f depending on the logits pathwise and on w), broken
variants caught by the same test, one call of f per estimate, dtypes, errors.

Axis legend: S points, R replicas, B batch, D latent variables, K categories.
"""
import pytest
import torch

import estimators
import estimators.disarm as disarm_mod
import estimators.disarm_categorical as coupled_mod
import estimators.indecater as indecater_mod
from estimators.sampling import sample_one_hot
from tests.problems import Z_MAX, Problem, check_unbiased, max_abs_z

R = 20_000

# (name, options, problem shape): DisARM binary at K = 2, importance-weighted
# stick breaking (DisARM-IW) at K > 2
CORRECT = [
    ("disarm", dict(), dict(B=3, D=3, K=2)),
    ("disarm", dict(n_pairs=2), dict(B=3, D=3, K=2)),
    ("disarm", dict(), dict(B=3, D=2, K=3)),
    ("disarm", dict(n_pairs=2), dict(B=3, D=2, K=4)),
    ("indecater", dict(), dict(B=3, D=2, K=3)),
    ("indecater", dict(n_samples=2), dict(B=3, D=2, K=3)),
    ("indecater", dict(), dict(B=3, D=3, K=2)),
    ("indecater", dict(n_samples=2), dict(B=3, D=3, K=2)),
]


def case_ids(cases):
    return [f"{n}-{o}-K{s['K']}" for n, o, s in cases]


@pytest.mark.parametrize("name,opts,shape", CORRECT, ids=case_ids(CORRECT))
def test_unbiased_against_exact(name, opts, shape):
    check_unbiased(name, opts, shape)


# -- broken variants: the same test catches them ----------------------------

class _Patched:
    """Runs the parent's estimate with one module-level helper replaced."""
    module = None
    helper = ""

    def replacement(self, logits, original):
        raise NotImplementedError

    def estimate(self, logits, f, context):
        original = getattr(self.module, self.helper)
        setattr(self.module, self.helper, self.replacement(logits, original))
        try:
            return super().estimate(logits, f, context)
        finally:
            setattr(self.module, self.helper, original)


class DisarmWithoutWeight(_Patched, disarm_mod.Disarm):
    """Drops the sigmoid(|a|) factor."""
    module, helper = disarm_mod, "pair_weight"

    def replacement(self, logits, original):
        return torch.ones_like


class DisarmSignedWeight(_Patched, disarm_mod.Disarm):
    """sigmoid(a) instead of sigmoid(|a|): wrong wherever a < 0."""
    module, helper = disarm_mod, "pair_weight"

    def replacement(self, logits, original):
        return torch.sigmoid


class DisarmIWAtTwoCategories(disarm_mod.Disarm):
    """The categorical (stick-breaking) path forced at K = 2, where `disarm`
    would take the binary one: it must be unbiased there too."""

    def estimate(self, logits, f, context):
        return self._categorical(logits, f)


def test_disarm_categorical_path_is_unbiased_at_two_categories():
    z = max_abs_z(DisarmIWAtTwoCategories(), dict(B=3, D=3, K=2))
    print(f"\nDisarmIWAtTwoCategories: max |z| = {z:.2f}")
    assert z < Z_MAX


class DisarmIWWithoutWeight(_Patched, disarm_mod.Disarm):
    """Drops the pair's importance weight: the pair treated as independent."""
    module, helper = coupled_mod, "pair_weights"

    def replacement(self, logits, original):
        return lambda a: torch.ones_like(a)


class DisarmIWUnsorted(_Patched, disarm_mod.Disarm):
    """Stick breaking in the logits' own order: where an early binary has
    sigma >= 1/2, some pairs of categories can never be drawn together."""
    module, helper = coupled_mod, "stick_breaking_order"

    def replacement(self, logits, original):
        return lambda lg: torch.arange(lg.shape[-1]).expand(lg.shape)


class IndecaterUnchangedPoints(_Patched, indecater_mod.Indecater):
    """Forgets to set z_d = k: all D*K points are the sample, no score signal."""
    module, helper = indecater_mod, "held_points"

    def replacement(self, logits, original):
        return lambda z: z[:, None, None].expand(-1, z.shape[2], z.shape[3], -1, -1, -1)


class IndecaterWithoutPathwise(indecater_mod.Indecater):
    """Drops f's own gradient (in w and in the logits through f)."""

    def estimate(self, logits, f, context):
        return super().estimate(logits, lambda z: f(z).detach(), context)


BROKEN = [
    (DisarmWithoutWeight, dict(B=3, D=3, K=2)),
    (DisarmSignedWeight, dict(B=3, D=3, K=2)),
    (DisarmIWWithoutWeight, dict(B=3, D=2, K=3)),
    (DisarmIWUnsorted, dict(B=3, D=2, K=3)),
    (IndecaterUnchangedPoints, dict(B=3, D=2, K=3)),
    (IndecaterWithoutPathwise, dict(B=3, D=2, K=3)),
]


@pytest.mark.parametrize("broken,shape", BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_broken_variants_fail_the_same_test(broken, shape):
    logits = Problem.make(**shape).logits
    if broken is DisarmSignedWeight:                  # it needs some a < 0 to be wrong
        assert (logits[..., 1] - logits[..., 0]).min() < 0
    if broken is DisarmIWUnsorted:                    # it needs some q_0 >= 1/2 (K = 3)
        assert logits.softmax(-1)[..., 0].max() >= 0.5
    z = max_abs_z(broken(), shape)
    print(f"\n{broken.__name__}: max |z| = {z:.2f}")
    assert z > Z_MAX


class IndecaterRedrawnOthers(_Patched, indecater_mod.Indecater):
    """Holds z_-d at a fresh draw per variable d instead of the shared sample."""
    module, helper = indecater_mod, "held_points"

    def replacement(self, logits, original):
        def redrawn(z):
            S, B, D, K = z.shape
            fresh = sample_one_hot(logits, S * D).view(S, D, B, D, K)
            per_d = [original(fresh[:, d])[:, d] for d in range(D)]   # (S, K, B, D, K) each
            return torch.stack(per_d, 1)                               # (S, D, K, B, D, K)
        return redrawn


def test_redrawing_the_held_variables_is_not_a_bias():
    """Why the broken IndeCateR variants above are not 'other variables
    redrawn': each variable's term only needs z_-d ~ q_-d, so a fresh draw per
    d is still unbiased (and passes), it only loses the shared sample."""
    z = max_abs_z(IndecaterRedrawnOthers(), dict(B=3, D=2, K=3))
    print(f"\nIndecaterRedrawnOthers: max |z| = {z:.2f}")
    assert z < Z_MAX


# -- one call of f, with the expected points ---------------------------------

@pytest.mark.parametrize("name,opts,D,K,points", [
    ("disarm", dict(n_pairs=3), 4, 2, 6),
    ("disarm", dict(n_pairs=2), 3, 4, 4),
    ("indecater", dict(n_samples=2), 3, 4, 24),
    ("indecater", dict(), 5, 2, 10),
])
def test_f_called_once_with_all_points(name, opts, D, K, points):
    calls = []

    def f(z):                                                 # (S, B, D, K) -> (S, B)
        calls.append(z.detach().clone())
        return (z * torch.arange(K, dtype=z.dtype)).sum((-1, -2))

    est = estimators.build(name, **opts)
    assert est.f_evaluations(D, K) == points
    est(torch.randn(5, D, K, requires_grad=True), f)
    assert len(calls) == 1 and calls[0].shape == (points, 5, D, K)
    z = calls[0]
    assert torch.equal(z.sum(-1), torch.ones_like(z.sum(-1)))
    assert set(z.unique().tolist()) <= {0.0, 1.0}


def test_indecater_points_vary_one_variable_of_the_sample():
    calls = []
    est = estimators.build("indecater", n_samples=2)
    est(torch.randn(4, 3, 5), lambda z: calls.append(z) or z.sum((-1, -2)))
    idx = calls[0].view(2, 3, 5, 4, 3, 5).argmax(-1)          # (S, D, K, B, D) categories
    # the sample's value of variable e, read where another variable is varied
    sample = torch.stack([idx[:, (e + 1) % 3, 0, :, e] for e in range(3)], -1)  # (S, B, D)
    for d in range(3):
        for e in range(3):
            want = (torch.arange(5).view(1, 5, 1).expand(2, 5, 4) if e == d
                    else sample[:, None, :, e].expand(2, 5, 4))
            assert torch.equal(idx[:, d, :, :, e], want)


# -- dtypes, devices, fields ---------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,K", [("disarm", 2), ("disarm", 3), ("indecater", 3), ("indecater", 2)])
def test_dtype_and_device_follow_logits(name, K, dtype, device):
    torch.manual_seed(0)
    logits = torch.randn(4, 3, K, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(3, K, dtype=dtype, device=device, requires_grad=True)
    seen = []

    def f(z):
        seen.append((z.dtype, z.device))
        return ((z * w).sum((-1, -2)) - 1) ** 2 + (z * logits.log_softmax(-1)).sum((-1, -2))

    out = estimators.build(name)(logits, f)
    assert seen == [(dtype, logits.device)]
    assert out.loss.shape == () and out.loss.dtype == dtype and out.loss.device == logits.device
    assert out.value.shape == (4,) and not out.value.requires_grad
    assert torch.allclose(out.loss, -out.value.mean())
    out.loss.backward()
    for g in (logits.grad, w.grad):
        assert g.dtype == dtype and g.device == logits.device and torch.isfinite(g).all()


# -- bad inputs -------------------------------------------------------------------

def _f(z):
    return z.sum((-1, -2))


@pytest.mark.parametrize("call,match", [
    (lambda: estimators.build("disarm", n_pairs=0), r"n_pairs=0 .*integer >= 1"),
    (lambda: estimators.build("disarm", n_pairs=1.5), r"n_pairs=1.5 .*integer >= 1"),
    (lambda: estimators.build("indecater", n_samples=0), r"n_samples=0 .*integer >= 1"),
    (lambda: estimators.build("indecater", n_samples=1.5), r"n_samples=1.5 .*integer >= 1"),
])
def test_bad_inputs_say_what_is_wrong(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_disarm_accepts_bernoulli_and_categorical_latents():
    for K in (2, 3, 8):
        estimators.build("disarm").check_latent(7, K)
