"""Speed suite for the estimators (pytest -m benchmark).

1. Estimator step time over K x D x S on a fixed linear f.
2. A full training step on 8x8 digits (batch 128, MLP width 128, one CPU
   thread) through `estimators` against a hand-written minimal PyTorch loop of
   the same estimator on the same network: the cost of the abstraction.
3. 100 gradient estimates for the statistics: vectorised against 100 passes.

Compare groups with `pytest -m benchmark --benchmark-group-by=group`.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import estimators
from estimators.stats import gradient_stats, logit_gradient_stats

pytestmark = pytest.mark.benchmark
B = 128




# -- 1. estimator step over K, D, S ----------------------------------------------

def _step_opts(name, S):
    return {"reinforce": dict(baseline="loo" if S > 1 else "none", n_samples=S),
            "gumbel": dict(n_samples=S), "rebar": dict(n_samples=S),
            "relax": dict(n_samples=S), "vimco": dict(n_samples=max(S, 2))}[name]


@pytest.mark.parametrize("S", [1, 4, 16])
@pytest.mark.parametrize("D", [1, 8, 32])
@pytest.mark.parametrize("K", [2, 10, 100])
@pytest.mark.parametrize("name", ["reinforce", "gumbel", "rebar", "relax", "vimco"])
def test_estimator_step(benchmark, name, K, D, S):
    benchmark.group = f"step K={K} D={D} S={S}"
    torch.manual_seed(0)
    enc = nn.Linear(16, D * K)
    table = torch.randn(D * K, 16, requires_grad=True)
    x = torch.randn(B, 16)
    est = estimators.build(name, **_step_opts(name, S))

    def step():
        logits = enc(x).view(B, D, K)
        out = est(logits, lambda z: -((z.flatten(2) @ table - x) ** 2).sum(-1))
        loss = out.loss + (out.aux_loss if out.aux_loss is not None else 0)
        loss.backward()

    benchmark(step)


# -- 2. digits training step: library against a minimal hand-written loop ----------

def digits():
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0))[:B]   # (B, 64)


class MLPVAE(nn.Module):
    def __init__(self, D, K, width=128):
        super().__init__()
        self.D, self.K = D, K
        self.enc = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, D * K))
        self.dec = nn.Sequential(nn.Linear(D * K, width), nn.ReLU(), nn.Linear(width, 64))

    def logits(self, x):
        return self.enc(x).view(-1, self.D, self.K)                   # (B, D, K)

    def f(self, x, logits):
        """f(z) = log p(x|z) + log p(z) - log q(z|x), uniform prior."""
        logq_table = logits.log_softmax(-1)

        def f(z):                                                       # (S, B, D, K) -> (S, B)
            rec = -F.binary_cross_entropy_with_logits(
                self.dec(z.flatten(2)), x.expand(z.shape[0], *x.shape), reduction="none").sum(-1)
            return rec - (z * logq_table).sum((-1, -2)) - self.D * torch.log(torch.tensor(float(self.K)))
        return f


def minimal_step(name, model, x, opt, state):
    """The same estimators written inline, the way a paper's code would."""
    logits = model.logits(x)
    f = model.f(x, logits)
    logp = logits.log_softmax(-1)
    if name == "exact":
        import itertools
        idx = torch.tensor(list(itertools.product(range(model.K), repeat=model.D)))
        z = F.one_hot(idx, model.K).float().unsqueeze(1).expand(-1, B, -1, -1)
        w = (z * logp).sum((-1, -2)).exp()
        loss = -(w * f(z)).sum(0).mean()
    elif name == "gumbel":
        y = F.gumbel_softmax(logits.expand(1, *logits.shape), tau=1.0)
        loss = -f(y).mean()
    elif name in ("reinforce", "vimco"):
        S = 4
        z = F.one_hot(torch.distributions.Categorical(logits=logits).sample((S,)), model.K).float()
        fz = f(z)
        logq = (z * logp).sum((-1, -2))
        if name == "reinforce":
            b = (fz.sum(0, keepdim=True) - fz) / (S - 1)
            loss = -(fz + (fz - b).detach() * logq).mean()
        else:
            L = torch.logsumexp(fz, 0) - torch.log(torch.tensor(float(S)))
            om = (fz.sum(0, keepdim=True) - fz) / (S - 1)
            sw = torch.where(torch.eye(S, dtype=torch.bool).unsqueeze(-1), om.unsqueeze(1), fz.unsqueeze(0))
            Lm = torch.logsumexp(sw, 1) - torch.log(torch.tensor(float(S)))
            loss = -(L + ((L - Lm).detach() * logq).sum(0)).mean()
    else:  # rebar / relax: one relaxed f evaluation pair, variance objective on the logits
        u = torch.rand_like(logits).clamp(1e-12, 1 - 1e-7)
        z = logp - torch.log(-torch.log(u))
        b = F.one_hot(z.argmax(-1), model.K).float()
        v = torch.rand_like(logits).clamp(1e-12, 1 - 1e-7)
        vb = (b * v.log()).sum(-1, keepdim=True)
        zt = b * -torch.log(-vb) + (1 - b) * -torch.log(-v.log() / logp.exp() - vb)
        tau = state["log_tau"].exp()
        sz, szt = (z / tau).softmax(-1), (zt / tau).softmax(-1)
        if name == "rebar":
            fb, fz, fzt = f(torch.stack([b, sz, szt])).unbind(0)
            cz, czt = state["eta"] * fz, state["eta"] * fzt
        else:
            fb = f(b.unsqueeze(0))[0]
            inp = torch.stack([sz, szt]).flatten(2)
            cz, czt = state["net"](torch.cat([inp, logits.detach().flatten(1).expand(2, -1, -1)], -1)).squeeze(-1).unbind(0)
        logq = (b * logp).sum((-1, -2))
        surr = fb + (fb - czt) * (logq - logq.detach()) + cz - czt
        (g,) = torch.autograd.grad(surr.sum(), logits, create_graph=True)
        own = state["params"]
        state["opt"].zero_grad()
        gv = torch.autograd.grad((g ** 2).sum() / B, own, retain_graph=True)
        loss = -surr.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for p, gp in zip(own, gv):
            p.grad = gp
        state["opt"].step()
        return
    opt.zero_grad()
    loss.backward()
    opt.step()


def library_step(est, est_opt, model, x, opt):
    logits = model.logits(x)
    out = est(logits, model.f(x, logits))
    opt.zero_grad()
    est_opt.zero_grad()
    (out.loss + (out.aux_loss if out.aux_loss is not None else 0)).backward()
    opt.step()
    est_opt.step()


LIB_OPTS = {"exact": {}, "gumbel": {}, "reinforce": dict(baseline="loo", n_samples=4),
            "vimco": dict(n_samples=4), "rebar": {}, "relax": {}}


@pytest.mark.parametrize("latent", [(1, 10), (8, 4)], ids=["D1K10", "D8K4"])
@pytest.mark.parametrize("impl", ["library", "minimal"])
@pytest.mark.parametrize("name", list(LIB_OPTS))
def test_digits_training_step(benchmark, name, impl, latent):
    D, K = latent
    if name == "exact" and K ** D > 4096:
        pytest.skip("K^D = 65536: exact enumeration is not the tool here")
    benchmark.group = f"digits step {name} D={D} K={K}"
    torch.manual_seed(0)
    x = digits()
    model = MLPVAE(D, K)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if impl == "library":
        est = estimators.build(name, **LIB_OPTS[name])
        library_step(est, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0), model, x, opt)
        params = list(est.parameters()) or [torch.zeros(1, requires_grad=True)]
        est_opt = torch.optim.Adam(params, lr=1e-3)
        benchmark(library_step, est, est_opt, model, x, opt)
    else:
        state = {"log_tau": torch.tensor(0.5).log().requires_grad_(), "eta": torch.tensor(1.0, requires_grad=True),
                 "net": nn.Sequential(nn.Linear(2 * D * K, 64), nn.ReLU(), nn.Linear(64, 1))}
        state["params"] = [state["log_tau"]] + ([state["eta"]] if name == "rebar" else list(state["net"].parameters()))
        state["opt"] = torch.optim.Adam(state["params"], lr=1e-3)
        benchmark(minimal_step, name, model, x, opt, state)


# -- 3. gradient statistics: one vectorised pass against N passes ------------------------

@pytest.mark.parametrize("path", ["logits", "vmap", "loop"])
@pytest.mark.parametrize("name", ["reinforce", "gumbel", "rebar"])
def test_gradient_stats_100(benchmark, name, path):
    """f = log p(x|z) only (the harness's setup: KL analytic, outside f)."""
    benchmark.group = f"grad stats n=100 {name}"
    torch.manual_seed(0)
    x = digits()
    model = MLPVAE(8, 4)
    est = estimators.build(name, **LIB_OPTS[name])

    def f(z):
        return -F.binary_cross_entropy_with_logits(
            model.dec(z.flatten(2)), x.expand(z.shape[0], *x.shape), reduction="none").sum(-1)

    if path == "logits":
        enc = [p for n, p in model.named_parameters() if n.startswith("enc.")]
        stats = benchmark.pedantic(lambda: logit_gradient_stats(est, model.logits(x), f, enc, n=100),
                                   rounds=3, iterations=1)
        assert stats.n == 100
        return
    stats = benchmark.pedantic(gradient_stats, args=(model, lambda: est(model.logits(x), f).loss),
                               kwargs=dict(params=["enc."], n=100, batched=path == "vmap"),
                               rounds=3, iterations=1)
    assert stats.batched is (path == "vmap" and name != "rebar")
