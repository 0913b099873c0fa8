"""Hand-written training steps, one per estimator, the way a paper's code would
write them inline: the yardstick for `estimators` (tests/bench/paired.py).

Every step is one full training step on the same network (MLP encoder and
decoder on a batch of 128 binarised 8x8 digits, Adam) and returns the
surrogate loss. The steps draw their noise exactly as the library does
(`torch.rand` of the same shapes, in the same order, clamped the same way), so
with one seed they compute the same numbers up to float rounding
(tests/test_estimators_hand_equivalence.py); otherwise they use the obvious
idioms (F.one_hot, F.softmax, one log-softmax reused) and no input checks.

Axis legend: S samples, B batch, D latent variables, K categories, M draws.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

B, WIDTH, LR = 128, 128, 1e-3
TINY, EPS = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).eps


@functools.lru_cache(maxsize=4)
def digits(n: int = B) -> Tensor:
    """The first n binarised digits (n, 64); shared, so never written to."""
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0))[:n]


class Net(nn.Module):
    """Encoder to logits (B, D, K), or to Gaussian params (B, D, 2) [mean,
    log std]; f(z) = log p(x|z) + log p(z) - log q(z|x) with a uniform, resp.
    standard normal, prior: the single-sample ELBO the estimators ascend."""

    def __init__(self, D: int, K: int, gaussian: bool = False):
        super().__init__()
        self.D, self.K, self.gaussian = D, (2 if gaussian else K), gaussian
        self.enc = nn.Sequential(nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, D * self.K))
        self.dec = nn.Sequential(nn.Linear(D if gaussian else D * K, WIDTH), nn.ReLU(),
                                 nn.Linear(WIDTH, 64))
        self.log_prior = 0.0 if gaussian else -D * math.log(K)

    def logits(self, x: Tensor) -> Tensor:
        return self.enc(x).view(x.shape[0], self.D, self.K)

    def f(self, x: Tensor, logits: Tensor):
        if self.gaussian:
            return self._f_gaussian(x, logits)
        logq = logits.log_softmax(-1)                                   # (B, D, K)

        def f(z):                                                       # (S, B, D, K) -> (S, B)
            return self.rec(x, z.flatten(2)) - (z * logq).sum((-1, -2)) + self.log_prior
        return f

    def _f_gaussian(self, x: Tensor, params: Tensor):
        mu, log_std = params.unbind(-1)                                 # (B, D)

        def f(z):                                                       # (S, B, D) -> (S, B)
            return self.rec(x, z) + normal_logpdf(z, 0.0, 0.0) - normal_logpdf(z, mu, log_std)
        return f

    def rec(self, x: Tensor, h: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(
            self.dec(h), x.expand(h.shape[0], *x.shape), reduction="none").sum(-1)


def normal_logpdf(z, mu, log_std) -> Tensor:
    sd = math.exp(log_std) if isinstance(log_std, float) else log_std.exp()
    return (-0.5 * ((z - mu) / sd) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class State:
    """A hand loop's variables: model, batch, optimiser, estimator extras."""

    def __init__(self, model: Net, x: Tensor, **extra):
        self.model, self.x = model, x
        self.opt = torch.optim.Adam(model.parameters(), lr=LR)
        self.__dict__.update(extra)
        own = extra.get("own")
        self.own_opt = torch.optim.Adam(own, lr=LR) if own else None


def finish(s: State, loss: Tensor, aux: Tensor | None = None) -> Tensor:
    s.opt.zero_grad()
    if aux is None:
        loss.backward()
    else:
        s.own_opt.zero_grad()
        (loss + aux).backward()
        s.own_opt.step()
    s.opt.step()
    return loss.detach()


# -- noise: the library's draws, so one seed gives both the same samples -------

def uniform(shape) -> Tensor:
    return torch.rand(shape).clamp(TINY, 1 - EPS)


def perturb(logp: Tensor, S: int) -> Tensor:
    return logp + -torch.log(-torch.log(uniform((S, *logp.shape))))   # (S, B, D, K)


def one_hot(z: Tensor) -> Tensor:
    return F.one_hot(z.argmax(-1), z.shape[-1]).float()


def sample(logp: Tensor, S: int) -> Tensor:
    return one_hot(perturb(logp.detach(), S))                           # (S, B, D, K)


def conditional(logp: Tensor, b: Tensor) -> Tensor:
    """Gumbels given their argmax b (Tucker et al. 2017, app. C), through logp."""
    log_v = uniform(b.shape).log()
    log_vb = (b * log_v).sum(-1, keepdim=True)
    return b * -torch.log(-log_vb) + (1 - b) * -torch.log(-log_v / logp.exp() - log_vb)


# -- the steps ------------------------------------------------------------------

def exact(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    z = s.configs.expand(-1, logits.shape[0], -1, -1)                   # (N, B, D, K)
    w = (z * logits.log_softmax(-1)).sum((-1, -2)).exp()                # (N, B)
    return finish(s, -(w * s.model.f(s.x, logits)(z)).sum(0).mean())


def reinforce(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    logp = logits.log_softmax(-1)
    z = sample(logp, s.S)
    fz = s.model.f(s.x, logits)(z)                                      # (S, B)
    logq = (z * logp).sum((-1, -2))
    aux = None
    if s.baseline == "none":
        b = 0.0
    elif s.baseline == "ema":
        b = s.ema / (1 - s.decay ** max(s.steps, 1))
        s.ema = s.decay * s.ema + (1 - s.decay) * fz.detach().mean()
        s.steps += 1
    elif s.baseline == "learned":
        b = s.net(logits.detach().flatten(1)).squeeze(-1)               # (B,)
        aux = ((fz.detach() - b) ** 2).mean()
    else:
        b = (fz.sum(0, keepdim=True) - fz).detach() / (s.S - 1)
    surr = fz + (fz - b).detach() * (logq - logq.detach())
    return finish(s, -surr.mean(), aux)


def vimco(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    S, logp = s.S, logits.log_softmax(-1)
    z = sample(logp, S)
    fz = s.model.f(s.x, logits)(z)                                      # (S, B)
    logq = (z * logp).sum((-1, -2))
    L = torch.logsumexp(fz, 0) - math.log(S)                            # (B,)
    others = ((fz.sum(0, keepdim=True) - fz) / (S - 1)).detach()
    swapped = torch.where(s.eye, others.unsqueeze(1), fz.detach().unsqueeze(0))  # (S, S, B)
    L_minus = torch.logsumexp(swapped, 1) - math.log(S)
    surr = L + ((L.detach() - L_minus) * (logq - logq.detach())).sum(0)
    return finish(s, -surr.mean())


def gumbel(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    z = perturb(logits.log_softmax(-1), s.S)
    y = F.softmax(z / s.tau, -1)
    if s.hard:
        y = one_hot(z.detach()) + y - y.detach()
    return finish(s, -s.model.f(s.x, logits)(y).mean())


def st(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    b = sample(logits.log_softmax(-1), s.S)
    p = F.softmax(logits / s.tau, -1)
    return finish(s, -s.model.f(s.x, logits)(b + p - p.detach()).mean())


def reinmax(s: State) -> Tensor:
    """The authors' code (Liu et al. 2023, `reinmax`)."""
    logits = s.model.logits(s.x)
    b = sample(logits.log_softmax(-1), s.S)
    pi0 = logits.softmax(-1)
    pi1 = (b + (logits / s.tau).softmax(-1)) / 2
    pi1 = ((pi1.log() - logits).detach() + logits).softmax(-1)
    pi2 = 2 * pi1 - 0.5 * pi0
    return finish(s, -s.model.f(s.x, logits)(b + pi2 - pi2.detach()).mean())


def gumbel_rao(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    logp = logits.log_softmax(-1)
    lp = logp.detach()
    b = sample(lp, s.S)                                                 # (S, B, D, K)
    noise = conditional(lp, b.expand(s.M, *b.shape)) - lp               # (M, S, B, D, K)
    soft = F.softmax((logp + noise) / s.tau, -1).mean(0)
    return finish(s, -s.model.f(s.x, logits)(b + soft - soft.detach()).mean())


def disarm(s: State) -> Tensor:
    logits = s.model.logits(s.x)                                        # (B, D, 2)
    a = logits[..., 1] - logits[..., 0]
    p = torch.sigmoid(a.detach())
    u = uniform((s.P, *a.shape))                                        # (P, B, D)
    b, bt = (u < p).float(), (1 - u < p).float()
    bb = torch.cat([b, bt])
    f_all = s.model.f(s.x, logits)(torch.stack([1 - bb, bb], -1))       # (2P, B)
    f_b, f_bt = f_all.detach().split(s.P)
    g_a = 0.5 * (f_b - f_bt).unsqueeze(-1) * (1 - 2 * bt) * (b != bt) * torch.sigmoid(a.detach().abs())
    surr = f_all.mean(0) + (g_a.mean(0) * (a - a.detach())).sum(-1)
    return finish(s, -surr.mean())


def indecater(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    S, (B, D, K) = s.S, logits.shape
    z = sample(logits.log_softmax(-1), S)                               # (S, B, D, K)
    pts = z.view(S, 1, 1, B, D, K) * (1 - s.which) + s.which * s.value  # (S, D, K, B, D, K)
    f_dk = s.model.f(s.x, logits)(pts.view(-1, B, D, K)).view(S, D, K, B).permute(0, 3, 1, 2)
    q = logits.softmax(-1)
    f_z = (f_dk[:, :, 0] * z[:, :, 0]).sum(-1)                          # (S, B)
    score = ((q - q.detach()) * f_dk.detach()).sum((-1, -2))
    smoothed = (q.detach() * f_dk).sum(-1).mean(-1)
    surr = f_z.detach() + smoothed - smoothed.detach() + score
    return finish(s, -surr.mean())


def _rebar_front(s: State, logits: Tensor):
    logp = logits.log_softmax(-1)
    z = perturb(logp, s.S)
    b = one_hot(z.detach())
    zt = conditional(logp, b)
    tau = s.log_tau.exp()
    return logp, b, F.softmax(z / tau, -1), F.softmax(zt / tau, -1)


def _cv_finish(s: State, logits, logp, b, f_b, c_z, c_zt) -> Tensor:
    logq = (b * logp).sum((-1, -2))
    surr = f_b + (f_b - c_zt) * (logq - logq.detach()) + (c_z - c_zt) - (c_z - c_zt).detach()
    (g,) = torch.autograd.grad(surr.sum() / s.S, logits, create_graph=True)   # (B, D, K)
    own_grads = torch.autograd.grad((g ** 2).sum() / g.shape[0], s.own, retain_graph=True)
    loss = -surr.mean()
    s.opt.zero_grad()
    loss.backward()
    s.opt.step()
    for p, gp in zip(s.own, own_grads):
        p.grad = gp
    s.own_opt.step()
    return loss.detach()


def rebar(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    logp, b, s_z, s_zt = _rebar_front(s, logits)
    f_b, f_z, f_zt = s.model.f(s.x, logits)(torch.cat([b, s_z, s_zt])).split(s.S)
    return _cv_finish(s, logits, logp, b, f_b, s.eta * f_z, s.eta * f_zt)


def relax(s: State) -> Tensor:
    logits = s.model.logits(s.x)
    logp, b, s_z, s_zt = _rebar_front(s, logits)
    y = torch.cat([s_z, s_zt]).flatten(2)                               # (2S, B, D*K)
    c = s.net(torch.cat([y, logits.detach().flatten(1).expand(y.shape[0], -1, -1)], -1))
    c_z, c_zt = c.squeeze(-1).split(s.S)
    return _cv_finish(s, logits, logp, b, s.model.f(s.x, logits)(b), c_z, c_zt)


def reparam(s: State) -> Tensor:
    params = s.model.logits(s.x)                                        # (B, D, 2)
    mu, log_std = params.unbind(-1)
    z = mu + log_std.exp() * torch.randn(s.S, *mu.shape)                # (S, B, D)
    return finish(s, -s.model.f(s.x, params)(z).mean())


def reinforce_gaussian(s: State) -> Tensor:
    params = s.model.logits(s.x)
    mu, log_std = params.unbind(-1)
    z = (mu + log_std.exp() * torch.randn(s.S, *mu.shape)).detach()
    fz = s.model.f(s.x, params)(z)
    logq = normal_logpdf(z, mu, log_std)
    b = (fz.sum(0, keepdim=True) - fz).detach() / (s.S - 1)
    surr = fz + (fz - b).detach() * (logq - logq.detach())
    return finish(s, -surr.mean())


# -- the DisARM nonlinear binary VAE, written plainly ---------------------------
# conf/experiment/disarm_nonlinear.yaml, as DisARM's code has it (Dong, Mnih & Tucker
# 2020, google-research/disarm/binary: networks.py and the single-layer launcher):
# mnist5k's grey levels binarised afresh per minibatch, batch 50, one logit a per
# Bernoulli latent, encoder 784-200-200-D on x minus the training mean, decoder
# D-200-200-784 on 2b - 1, LeakyReLU(0.3), no normalisation, D learned prior logits;
# Adam at 1e-4 on both networks, SGD at 1e-2 on the prior logits. f is the
# single-sample ELBO log p(x|b) + log p(b) - log q(b|x) (the KL sampled), and the loss
# is minus each estimator's surrogate of E_q f: what bench.job.objective computes at
# kl.form=sampled, here as a paper's training script would write it. The draws are
# the harness's (task.sample's randint and rand on the run's batch generator, then the
# estimator's: Gumbel noise on the logits [0, a], DisARM's one uniform per variable),
# so with one seed and one set of weights both compute the same loss
# (tests/bench/test_bench_papers.py).

PAPER_BATCH, PAPER_LR, PAPER_PRIOR_LR = 50, 1e-4, 1e-2


class BinaryVAE(nn.Module):
    def __init__(self, mean: Tensor, D: int = 200, hidden: int = 200, slope: float = 0.3):
        super().__init__()
        P = mean.shape[0]
        self.D = D
        self.enc = nn.Sequential(nn.Linear(P, hidden), nn.LeakyReLU(slope),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(slope),
                                 nn.Linear(hidden, D))
        self.dec = nn.Sequential(nn.Linear(D, hidden), nn.LeakyReLU(slope),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(slope),
                                 nn.Linear(hidden, P))
        self.prior = nn.Parameter(torch.zeros(D))
        self.register_buffer("mean", mean.clone())


class PaperState:
    """A paper loop's variables: model, grey levels (N, P), batch generator,
    Adam on the networks and SGD on the prior logits, estimator extras."""

    def __init__(self, net: BinaryVAE, grey: Tensor, gen: torch.Generator,
                 batch: int = PAPER_BATCH, lr: float = PAPER_LR, prior_lr: float = PAPER_PRIOR_LR,
                 fused: bool = False, **extra):
        self.net, self.grey, self.gen, self.batch = net, grey, gen, batch
        self.opt = torch.optim.Adam([*net.enc.parameters(), *net.dec.parameters()], lr=lr,
                                    **({"fused": True} if fused else {}))
        self.prior_opt = torch.optim.SGD([net.prior], lr=prior_lr)
        self.__dict__.update(extra)


def paper_front(s: PaperState):
    """Minibatch, the encoder's logits a (B, D) and f: b (S, B, D) -> (S, B)."""
    idx = torch.randint(s.grey.shape[0], (s.batch,), generator=s.gen)
    g = s.grey[idx]
    x = (torch.rand(g.shape, generator=s.gen) < g).float()             # dynamic binarisation
    a = s.net.enc(x - s.net.mean)                                       # (B, D)
    prior = s.net.prior

    def f(b):                                                           # single-sample ELBO
        ll = -F.binary_cross_entropy_with_logits(
            s.net.dec(2 * b - 1), x.expand(b.shape[0], *x.shape), reduction="none").sum(-1)
        log_pq = (b * (prior - a)).sum(-1) + (F.softplus(a) - F.softplus(prior)).sum(-1)
        return ll + log_pq
    return a, f


def bernoulli_logq(a: Tensor) -> Tensor:
    """log-probabilities (B, D, 2) of b = 0, 1: the harness samples a Bernoulli by
    Gumbel-max over these, so the loops draw the same b from the same noise."""
    return torch.stack([-F.softplus(a), -F.softplus(-a)], -1)


def paper_finish(s: PaperState, loss: Tensor) -> Tensor:
    s.opt.zero_grad()
    s.prior_opt.zero_grad()
    loss.backward()
    s.opt.step()
    s.prior_opt.step()
    return loss.detach()


def paper_reinforce(s: PaperState) -> Tensor:
    """REINFORCE with the leave-one-out baseline over s.S samples."""
    a, f = paper_front(s)
    b = sample(bernoulli_logq(a), s.S)[..., 1]                          # (S, B, D)
    fz = f(b)                                                           # (S, B)
    lq = (b * a - F.softplus(a)).sum(-1)
    base = (fz.sum(0, keepdim=True) - fz).detach() / (s.S - 1)
    surr = fz + (fz - base).detach() * (lq - lq.detach())
    return paper_finish(s, -surr.mean())


def paper_disarm(s: PaperState) -> Tensor:
    a, f = paper_front(s)
    p = torch.sigmoid(a.detach())
    u = uniform((1, *a.shape))                                          # one pair
    b, bt = (u < p).float(), (1 - u < p).float()
    f_all = f(torch.cat([b, bt]))                                       # (2, B)
    f_b, f_bt = f_all.detach().split(1)
    g_a = (0.5 * (f_b - f_bt).unsqueeze(-1) * (1 - 2 * bt) * (b != bt)
           * torch.sigmoid(a.detach().abs()))                           # (1, B, D)
    surr = f_all.mean(0) + (g_a.mean(0) * (a - a.detach())).sum(-1)
    return paper_finish(s, -surr.mean())


def paper_gumbel(s: PaperState) -> Tensor:
    a, f = paper_front(s)
    y = F.softmax(perturb(bernoulli_logq(a), s.S) / s.tau, -1)[..., 1]   # (S, B, D) relaxed b
    return paper_finish(s, -f(y).mean())
